/* Structure checks for PNG, GIF, BMP and TGA: walk the container before decoding so a cut-off
 * or damaged file is named as such (stb_image would hand back a partial picture for some of
 * them), and read the dimensions so the size limit applies before any pixel buffer exists. */
#include "decode_internal.h"

#include <stdio.h>
#include <string.h>

/* ---------------------------------------------------------------- PNG (ISO/IEC 15948) */

/* CRC-32 (polynomial 0xEDB88320), slicing by 4, with tables the caller builds per call:
 * no global state. t[0] is the classic byte table; t[k] advances k more zero bytes. */
typedef struct {
    uint32_t t[4][256];
} crc_tables;

static void crc_tables_init(crc_tables *c)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t v = i;
        for (int k = 0; k < 8; k++)
            v = v & 1 ? 0xedb88320u ^ (v >> 1) : v >> 1;
        c->t[0][i] = v;
    }
    for (int k = 1; k < 4; k++)
        for (int i = 0; i < 256; i++)
            c->t[k][i] = (c->t[k - 1][i] >> 8) ^ c->t[0][c->t[k - 1][i] & 0xff];
}

static uint32_t crc32_of(const crc_tables *c, const uint8_t *p, size_t n)
{
    uint32_t v = 0xffffffffu;
    for (; n >= 4; n -= 4, p += 4) {
        v ^= (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
        v = c->t[3][v & 0xff] ^ c->t[2][(v >> 8) & 0xff] ^ c->t[1][(v >> 16) & 0xff] ^ c->t[0][v >> 24];
    }
    for (; n; n--, p++)
        v = c->t[0][(v ^ *p) & 0xff] ^ (v >> 8);
    return v ^ 0xffffffffu;
}

static int png_type_valid(const uint8_t *t)
{
    for (int i = 0; i < 4; i++)
        if (!((t[i] >= 'A' && t[i] <= 'Z') || (t[i] >= 'a' && t[i] <= 'z')))
            return 0;
    return 1;
}

static int png_depth_valid(int color, int depth)
{
    switch (color) {
    case 0: return depth == 1 || depth == 2 || depth == 4 || depth == 8 || depth == 16;
    case 3: return depth == 1 || depth == 2 || depth == 4 || depth == 8;
    case 2: case 4: case 6: return depth == 8 || depth == 16;
    default: return 0;
    }
}

static ln_reason png_ihdr(const uint8_t *c, uint32_t len, ln_probe *probe, ln_decode_info *info)
{
    if (len != 13)
        return ln_reject(info, LN_REASON_CORRUPT, "PNG header chunk (IHDR) has length %u instead of 13", len);
    uint32_t w = ln_rd32be(c), h = ln_rd32be(c + 4);
    int depth = c[8], color = c[9];
    if (w == 0 || h == 0 || w > 0x7fffffffu || h > 0x7fffffffu)
        return ln_reject(info, LN_REASON_CORRUPT, "PNG header gives an invalid size %ux%u", w, h);
    if (!png_depth_valid(color, depth))
        return ln_reject(info, LN_REASON_CORRUPT, "PNG header has an invalid colour type %d / bit depth %d", color,
                         depth);
    if (c[10] != 0 || c[11] != 0 || c[12] > 1)
        return ln_reject(info, LN_REASON_CORRUPT, "PNG header has an unknown compression, filter or interlace method");
    static const int channels_of[7] = {1, 0, 3, 3, 2, 0, 4};
    info->width = (int)w;
    info->height = (int)h;
    info->channels = channels_of[color];
    info->bit_depth = depth == 16 ? 16 : 8; /* 1, 2, 4-bit samples are expanded to 8 */
    info->frames = 1;
    probe->png_color_type = color;
    probe->has_alpha = color == 4 || color == 6;
    return ln_check_dims(info, probe, (int)w, (int)h);
}

ln_reason ln_check_png(const uint8_t *d, size_t n, ln_probe *probe, ln_decode_info *info)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (n < 8 || memcmp(d, sig, 8)) {
        if (n >= 8 && memcmp(d, sig, 4) == 0)
            return ln_reject(info, LN_REASON_CORRUPT,
                             "PNG signature is damaged (line endings converted by a text-mode transfer?)");
        return ln_reject(info, LN_REASON_TRUNCATED, "PNG data ends inside the signature");
    }
    crc_tables crc;
    crc_tables_init(&crc);
    size_t pos = 8;
    int seen_ihdr = 0, seen_idat = 0, seen_plte = 0, fctl_before_idat = 0;
    uint32_t anim_frames = 0;
    for (;;) {
        if (n - pos < 12) {
            if (pos == n)
                return ln_reject(info, LN_REASON_TRUNCATED,
                                 "PNG data ends before the IEND chunk; the file was cut short");
            return ln_reject(info, LN_REASON_TRUNCATED, "PNG data ends inside a chunk header; the file was cut short");
        }
        uint32_t len = ln_rd32be(d + pos);
        const uint8_t *type = d + pos + 4;
        char name[5] = {0};
        memcpy(name, type, 4);
        if (!png_type_valid(type))
            return ln_reject(info, LN_REASON_CORRUPT, "PNG chunk at byte %zu has an invalid type (damaged data)", pos);
        if (len > 0x7fffffffu)
            return ln_reject(info, LN_REASON_CORRUPT, "PNG chunk %s has an invalid length", name);
        if (len > n - pos - 12)
            return ln_reject(info, LN_REASON_TRUNCATED, "PNG data ends inside the %s chunk; the file was cut short",
                             name);
        const uint8_t *c = d + pos + 8;
        if (crc32_of(&crc, type, (size_t)len + 4) != ln_rd32be(c + len))
            return ln_reject(info, LN_REASON_CORRUPT, "PNG chunk %s fails its CRC check (the file is damaged)", name);
        pos += (size_t)len + 12;

        if (!seen_ihdr) {
            if (memcmp(type, "IHDR", 4))
                return ln_reject(info, LN_REASON_CORRUPT, "PNG does not start with its header chunk (IHDR)");
            ln_reason r = png_ihdr(c, len, probe, info);
            if (r != LN_REASON_OK)
                return r;
            seen_ihdr = 1;
            continue;
        }
        if (!memcmp(type, "IEND", 4))
            break;
        if (!memcmp(type, "IDAT", 4)) {
            seen_idat = 1;
        } else if (!memcmp(type, "PLTE", 4)) {
            seen_plte = 1;
        } else if (!memcmp(type, "tRNS", 4)) {
            probe->has_alpha = 1;
            if (probe->png_color_type == 3)
                info->channels = 4;
        } else if (!memcmp(type, "acTL", 4) && len >= 8) {
            anim_frames = ln_rd32be(c);
        } else if (!memcmp(type, "fcTL", 4) && !seen_idat) {
            fctl_before_idat = 1;
        } else if (!memcmp(type, "eXIf", 4) && !probe->exif) {
            probe->exif = c;
            probe->exif_len = len;
        } else if (!memcmp(type, "IHDR", 4)) {
            return ln_reject(info, LN_REASON_CORRUPT, "PNG has a second header chunk (IHDR)");
        } else if (!memcmp(type, "CgBI", 4)) {
            return ln_reject(info, LN_REASON_UNSUPPORTED,
                             "Apple-optimised PNG (CgBI, from an iOS app bundle) is not supported");
        } else if (!(type[0] & 0x20)) {
            /* An unknown critical chunk (upper-case first letter): decoders must refuse. */
            return ln_reject(info, LN_REASON_CORRUPT, "PNG has an unknown critical chunk %s", name);
        }
    }
    if (!seen_idat)
        return ln_reject(info, LN_REASON_CORRUPT, "PNG has no image data (IDAT chunk)");
    if (probe->png_color_type == 3 && !seen_plte)
        return ln_reject(info, LN_REASON_CORRUPT, "palette PNG has no palette (PLTE chunk)");
    if (anim_frames > 1 || (anim_frames == 1 && !fctl_before_idat)) {
        info->notes |= LN_NOTE_ANIMATED;
        /* Like Pillow, a default image outside the animation counts as frame 0. */
        uint32_t f = anim_frames + (fctl_before_idat ? 0 : 1);
        info->frames = f > 0x7fffffff ? 0x7fffffff : (int)f;
    }
    if (pos < n)
        info->notes |= LN_NOTE_TRAILING_DATA;
    return LN_REASON_OK;
}

/* ---------------------------------------------------------------- GIF (GIF89a spec) */

/* Skips a chain of data sub-blocks; returns the position after the terminator, or 0 when
 * the data ends first. */
static size_t gif_skip_blocks(const uint8_t *d, size_t n, size_t pos)
{
    while (pos < n) {
        size_t len = d[pos];
        pos++;
        if (len == 0)
            return pos;
        if (len > n - pos)
            return 0;
        pos += len;
    }
    return 0;
}

ln_reason ln_check_gif(const uint8_t *d, size_t n, ln_probe *probe, ln_decode_info *info)
{
    static const char cut[] = "GIF data ends before its first frame is complete; the file was cut short";
    if (n < 13)
        return ln_reject(info, LN_REASON_TRUNCATED, "GIF data ends inside its header");
    int w = ln_rd16le(d + 6), h = ln_rd16le(d + 8), flags = d[10];
    info->width = w;
    info->height = h;
    info->channels = 3;
    info->bit_depth = 8;
    if (w == 0 || h == 0)
        return ln_reject(info, LN_REASON_CORRUPT, "GIF header gives an empty canvas %dx%d", w, h);
    ln_reason r = ln_check_dims(info, probe, w, h);
    if (r != LN_REASON_OK)
        return r;
    size_t pos = 13;
    if (flags & 0x80)
        pos += (size_t)3 << ((flags & 7) + 1);
    int frames = 0;
    for (;;) {
        if (pos >= n) {
            if (frames == 0)
                return ln_reject(info, LN_REASON_TRUNCATED, "%s", cut);
            break; /* later frames cut off: the first one is whole, which is all we use */
        }
        uint8_t b = d[pos++];
        if (b == 0x3b) { /* trailer */
            if (pos < n)
                info->notes |= LN_NOTE_TRAILING_DATA;
            break;
        }
        if (b == 0x21) { /* extension: label then sub-blocks */
            if (pos >= n || !(pos = gif_skip_blocks(d, n, pos + 1))) {
                if (frames == 0)
                    return ln_reject(info, LN_REASON_TRUNCATED, "%s", cut);
                break;
            }
            continue;
        }
        if (b == 0x2c) { /* image descriptor, optional local table, LZW data */
            if (n - pos < 9) {
                if (frames == 0)
                    return ln_reject(info, LN_REASON_TRUNCATED, "%s", cut);
                break;
            }
            int fw = ln_rd16le(d + pos + 4), fh = ln_rd16le(d + pos + 6), lflags = d[pos + 8];
            pos += 9;
            if (frames == 0 && (fw == 0 || fh == 0))
                return ln_reject(info, LN_REASON_CORRUPT, "GIF first frame is empty (%dx%d)", fw, fh);
            if (lflags & 0x80)
                pos += (size_t)3 << ((lflags & 7) + 1);
            int lzw_bits = pos < n ? d[pos] : 0;
            if (pos >= n || !(pos = gif_skip_blocks(d, n, pos + 1))) {
                if (frames == 0)
                    return ln_reject(info, LN_REASON_TRUNCATED, "%s", cut);
                break;
            }
            if (frames == 0 && lzw_bits > 12)
                return ln_reject(info, LN_REASON_CORRUPT, "GIF first frame has an invalid LZW code size %d", lzw_bits);
            frames++;
            continue;
        }
        if (frames == 0)
            return ln_reject(info, LN_REASON_CORRUPT, "GIF has an unknown block type 0x%02x before its first frame", b);
        break; /* junk after a complete frame: decoders stop there too */
    }
    info->frames = frames;
    if (frames > 1)
        info->notes |= LN_NOTE_ANIMATED;
    probe->has_alpha = 1;
    return LN_REASON_OK;
}

/* ---------------------------------------------------------------- BMP */

ln_reason ln_check_bmp(const uint8_t *d, size_t n, ln_probe *probe, ln_decode_info *info)
{
    uint32_t hsz = ln_rd32le(d + 14);
    if (n < 14 + (size_t)hsz || n < 26)
        return ln_reject(info, LN_REASON_TRUNCATED, "BMP data ends inside its header");
    uint32_t offset = ln_rd32le(d + 10), compression = 0;
    int64_t w, h;
    int bpp;
    info->bit_depth = 8;
    info->frames = 1;
    info->channels = 3;
    /* Refuse the variants we do not decode before reading fields they may not have. */
    if (hsz != 12 && hsz != 40 && hsz != 56 && hsz != 108 && hsz != 124)
        return ln_reject(info, LN_REASON_UNSUPPORTED,
                         "BMP with a %u-byte header (OS/2 2.x or a rare variant) is not supported", hsz);
    if (hsz == 12) { /* OS/2 1.x core header */
        w = ln_rd16le(d + 18);
        h = ln_rd16le(d + 20);
        bpp = ln_rd16le(d + 24);
    } else {
        w = (int32_t)ln_rd32le(d + 18);
        h = (int32_t)ln_rd32le(d + 22);
        bpp = ln_rd16le(d + 28);
        compression = ln_rd32le(d + 30);
    }
    if (h < 0)
        h = -h; /* top-down rows */
    if (w <= 0 || h <= 0 || w > 0x7fffffff || h > 0x7fffffff)
        return ln_reject(info, LN_REASON_CORRUPT, "BMP header gives an invalid size %lldx%lld", (long long)w,
                         (long long)h);
    info->width = (int)w;
    info->height = (int)h;
    if (compression == 1 || compression == 2)
        return ln_reject(info, LN_REASON_UNSUPPORTED, "run-length-compressed BMP (RLE%d) is not supported",
                         compression == 1 ? 8 : 4);
    if (compression != 0 && compression != 3)
        return ln_reject(info, LN_REASON_UNSUPPORTED, "BMP with compression type %u (embedded JPEG/PNG or other) is not supported",
                         compression);
    if (bpp != 1 && bpp != 4 && bpp != 8 && bpp != 16 && bpp != 24 && bpp != 32)
        return ln_reject(info, LN_REASON_CORRUPT, "BMP has an invalid bit count %d", bpp);
    /* Like Pillow, only 32-bit BITFIELDS files with an alpha mask carry alpha; a plain
     * 32-bit BMP's fourth byte is padding. */
    if (bpp == 32 && compression == 3 && hsz >= 56 && ln_rd32le(d + 66) != 0) {
        probe->has_alpha = 1;
        info->channels = 4;
    }
    ln_reason r = ln_check_dims(info, probe, (int)w, (int)h);
    if (r != LN_REASON_OK)
        return r;
    uint64_t row = (((uint64_t)w * (uint64_t)bpp + 31) / 32) * 4;
    uint64_t need = (uint64_t)offset + row * (uint64_t)h;
    if (offset < 14 + hsz || offset > n)
        return ln_reject(info, LN_REASON_CORRUPT, "BMP pixel data offset %u lies outside the file", offset);
    if (need > n)
        return ln_reject(info, LN_REASON_TRUNCATED, "BMP pixel data ends early (%zu of %llu bytes); the file was cut short",
                         n, (unsigned long long)need);
    return LN_REASON_OK;
}

/* ---------------------------------------------------------------- TGA (Truevision TGA 2.0) */

int ln_tga_header_plausible(const uint8_t *d, size_t n)
{
    if (n < 18)
        return 0;
    int cmap = d[1], type = d[2], cmap_depth = d[7], depth = d[16];
    int w = ln_rd16le(d + 12), h = ln_rd16le(d + 14);
    if (cmap > 1 || w == 0 || h == 0 || (d[17] & 0xc0))
        return 0;
    switch (type & ~8) {
    case 1: /* colour-mapped */
        return cmap == 1 && depth == 8 && (cmap_depth == 15 || cmap_depth == 16 || cmap_depth == 24 || cmap_depth == 32);
    case 2: /* true colour */
        return depth == 15 || depth == 16 || depth == 24 || depth == 32;
    case 3: /* grey */
        return depth == 8 || depth == 16;
    default:
        return 0;
    }
}

ln_reason ln_check_tga(const uint8_t *d, size_t n, ln_probe *probe, ln_decode_info *info)
{
    int type = d[2], depth = d[16], w = ln_rd16le(d + 12), h = ln_rd16le(d + 14);
    info->width = w;
    info->height = h;
    info->bit_depth = 8;
    info->frames = 1;
    info->channels = (type & ~8) == 3 ? (depth == 16 ? 2 : 1) : (depth == 32 ? 4 : 3);
    if ((type & ~8) == 1 && d[7] == 32)
        info->channels = 4;
    probe->has_alpha = info->channels == 2 || info->channels == 4;
    ln_reason r = ln_check_dims(info, probe, w, h);
    if (r != LN_REASON_OK)
        return r;
    size_t cmap_bytes = d[1] ? (size_t)ln_rd16le(d + 5) * (size_t)((d[7] + 7) / 8) : 0;
    size_t pos = 18 + (size_t)d[0] + cmap_bytes;
    size_t bytes_pp = (size_t)(depth + 7) / 8, pixels = (size_t)w * (size_t)h;
    if (pos > n)
        return ln_reject(info, LN_REASON_TRUNCATED, "TGA data ends inside its header or colour map");
    if (!(type & 8)) {
        if (pixels * bytes_pp > n - pos)
            return ln_reject(info, LN_REASON_TRUNCATED, "TGA pixel data ends early; the file was cut short");
        return LN_REASON_OK;
    }
    /* Run-length packets: a header byte, then one pixel (run) or count pixels (raw). */
    size_t done = 0;
    while (done < pixels) {
        if (pos >= n)
            return ln_reject(info, LN_REASON_TRUNCATED, "TGA run-length data ends early; the file was cut short");
        uint8_t hdr = d[pos++];
        size_t count = (size_t)(hdr & 0x7f) + 1;
        size_t bytes = hdr & 0x80 ? bytes_pp : count * bytes_pp;
        if (bytes > n - pos)
            return ln_reject(info, LN_REASON_TRUNCATED, "TGA run-length data ends early; the file was cut short");
        pos += bytes;
        done += count;
    }
    return LN_REASON_OK;
}
