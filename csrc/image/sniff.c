/* Format sniffing from content. The extension is never trusted for the format; it only
 * serves the wrong_extension note and TGA, which has no magic number. */
#include "decode_internal.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *ext;
    ln_format format;
} ext_entry;

static const ext_entry ext_table[] = {
    {"jpg", LN_FORMAT_JPEG},  {"jpeg", LN_FORMAT_JPEG}, {"jpe", LN_FORMAT_JPEG},  {"jfif", LN_FORMAT_JPEG},
    {"pjpeg", LN_FORMAT_JPEG}, {"pjp", LN_FORMAT_JPEG}, {"png", LN_FORMAT_PNG},   {"apng", LN_FORMAT_PNG},
    {"gif", LN_FORMAT_GIF},   {"bmp", LN_FORMAT_BMP},   {"dib", LN_FORMAT_BMP},   {"tga", LN_FORMAT_TGA},
    {"icb", LN_FORMAT_TGA},   {"vda", LN_FORMAT_TGA},   {"vst", LN_FORMAT_TGA},   {"tpic", LN_FORMAT_TGA},
    {"webp", LN_FORMAT_WEBP}, {"tif", LN_FORMAT_OTHER}, {"tiff", LN_FORMAT_OTHER}, {"heic", LN_FORMAT_OTHER},
    {"heif", LN_FORMAT_OTHER}, {"avif", LN_FORMAT_OTHER}, {"psd", LN_FORMAT_OTHER}, {"jxl", LN_FORMAT_OTHER},
    {"jp2", LN_FORMAT_OTHER}, {"j2k", LN_FORMAT_OTHER}, {"svg", LN_FORMAT_OTHER}, {"ico", LN_FORMAT_OTHER},
    {"dng", LN_FORMAT_OTHER}, {"cr2", LN_FORMAT_OTHER}, {"cr3", LN_FORMAT_OTHER}, {"nef", LN_FORMAT_OTHER},
    {"arw", LN_FORMAT_OTHER}, {"qoi", LN_FORMAT_OTHER}, {"exr", LN_FORMAT_OTHER}, {"hdr", LN_FORMAT_OTHER},
};

ln_format ln_format_from_ext(const char *ext)
{
    if (!ext || !*ext)
        return LN_FORMAT_UNKNOWN;
    for (size_t i = 0; i < sizeof ext_table / sizeof ext_table[0]; i++)
        if (!strcmp(ext, ext_table[i].ext))
            return ext_table[i].format;
    return LN_FORMAT_UNKNOWN;
}

/* Recognised formats we refuse. `image` says whether it is a picture format (the message
 * then suggests converting) or some other kind of file. */
typedef struct {
    size_t offset;
    const char *magic;
    size_t len;
    const char *name;
    int image;
} magic_entry;

#define M(off, s, name, image) {off, s, sizeof(s) - 1, name, image}
static const magic_entry other_table[] = {
    M(0, "II*\0", "TIFF image (or a camera raw file built on TIFF)", 1),
    M(0, "MM\0*", "TIFF image (or a camera raw file built on TIFF)", 1),
    M(0, "II+\0", "BigTIFF image", 1),
    M(0, "MM\0+", "BigTIFF image", 1),
    M(0, "IIRO", "Olympus ORF camera raw file", 1),
    M(0, "IIU\0", "Panasonic RW2 camera raw file", 1),
    M(0, "FUJIFILMCCD-RAW", "Fujifilm RAF camera raw file", 1),
    M(0, "8BPS", "Photoshop PSD document", 1),
    M(0, "gimp xcf", "GIMP XCF document", 1),
    M(0, "CSFCHUNK", "Clip Studio Paint document", 1),
    M(0, "\0\0\0\x0cjP  \r\n\x87\n", "JPEG 2000 image", 1),
    M(0, "\xff\x4f\xff\x51", "JPEG 2000 codestream", 1),
    M(0, "\0\0\0\x0cJXL \r\n\x87\n", "JPEG XL image", 1),
    M(0, "\xff\x0a", "JPEG XL image", 1),
    M(0, "qoif", "QOI image", 1),
    M(0, "DDS ", "DirectDraw Surface texture", 1),
    M(0, "#?RADIANCE", "Radiance HDR image", 1),
    M(0, "#?RGBE", "Radiance HDR image", 1),
    M(0, "\x76\x2f\x31\x01", "OpenEXR image", 1),
    M(0, "%PDF", "PDF document", 0),
    M(0, "%!PS", "PostScript document", 0),
    M(0, "PK\x03\x04", "ZIP archive (or a document/project file stored as ZIP)", 0),
    M(0, "PK\x05\x06", "ZIP archive (empty)", 0),
    M(0, "\x1f\x8b", "GZIP-compressed file", 0),
    M(0, "BZh", "BZIP2-compressed file", 0),
    M(0, "\xfd" "7zXZ\0", "XZ-compressed file", 0),
    M(0, "7z\xbc\xaf\x27\x1c", "7-Zip archive", 0),
    M(0, "Rar!\x1a\x07", "RAR archive", 0),
    M(0, "\x28\xb5\x2f\xfd", "Zstandard-compressed file", 0),
    M(0, "\x1a\x45\xdf\xa3", "Matroska/WebM video", 0),
    M(0, "OggS", "Ogg audio/video file", 0),
    M(0, "ID3", "MP3 audio file", 0),
    M(0, "fLaC", "FLAC audio file", 0),
    M(0, "\x7f" "ELF", "ELF executable", 0),
    M(0, "SQLite format 3", "SQLite database", 0),
    M(257, "ustar", "TAR archive", 0),
};
#undef M

static int has_at(const uint8_t *d, size_t n, size_t off, const char *s, size_t len)
{
    return n >= off + len && memcmp(d + off, s, len) == 0;
}

/* ISO base media (ftyp box): HEIC/AVIF pictures, or video. */
static const char *iso_media_name(const uint8_t *d, size_t n, int *image)
{
    static const char *const heif[] = {"heic", "heix", "hevc", "hevx", "heim", "heis", "mif1", "msf1"};
    uint32_t box = ln_rd32be(d);
    size_t end = box >= 16 && box <= n ? box : (n < 64 ? n : 64);
    *image = 1;
    /* Look at the major brand and every compatible brand: AVIF files often say mif1 first. */
    for (size_t off = 8; off + 4 <= end; off += 4) {
        if (off == 12)
            continue; /* minor version, not a brand */
        if (!memcmp(d + off, "avif", 4) || !memcmp(d + off, "avis", 4))
            return "AVIF image";
    }
    for (size_t off = 8; off + 4 <= end; off += 4) {
        if (off == 12)
            continue;
        for (size_t i = 0; i < sizeof heif / sizeof heif[0]; i++)
            if (!memcmp(d + off, heif[i], 4))
                return "HEIC/HEIF image (the iPhone photo format)";
    }
    if (!memcmp(d + 8, "crx ", 4))
        return "Canon CR3 camera raw file";
    if (!memcmp(d + 8, "jxl ", 4))
        return "JPEG XL image";
    *image = 0;
    return "MP4/QuickTime (ISO media) video";
}

static int all_zero(const uint8_t *d, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (d[i])
            return 0;
    return 1;
}

/* Length of a valid UTF-8 sequence at p (1..4), 0 when invalid, -1 when cut off by `end`. */
static int utf8_len(const uint8_t *p, const uint8_t *end)
{
    int len = p[0] >= 0xf0 ? 4 : p[0] >= 0xe0 ? 3 : 2;
    if (p[0] < 0xc2 || p[0] > 0xf4)
        return 0;
    for (int i = 1; i < len; i++) {
        if (p + i >= end)
            return -1;
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    }
    return len;
}

/* Text heuristics over the first 8 KiB: no NUL or stray control bytes, and mostly valid
 * UTF-8 (a few Latin-1 bytes are tolerated). */
static int looks_like_text(const uint8_t *d, size_t n)
{
    size_t w = n < 8192 ? n : 8192, bad = 0, printable = 0;
    const uint8_t *p = d, *end = d + w;
    if (w >= 2 && ((d[0] == 0xff && d[1] == 0xfe) || (d[0] == 0xfe && d[1] == 0xff)))
        return 1; /* UTF-16 byte-order mark */
    if (w >= 3 && d[0] == 0xef && d[1] == 0xbb && d[2] == 0xbf)
        p += 3;
    while (p < end) {
        uint8_t c = *p;
        if (c < 0x20 && c != '\t' && c != '\n' && c != '\r' && c != '\f' && c != '\v' && c != 0x1b)
            return 0;
        if (c < 0x80) {
            printable += c >= 0x20;
            p++;
            continue;
        }
        int len = utf8_len(p, end);
        if (len < 0)
            break; /* sequence cut by the window */
        if (len == 0) {
            bad++;
            p++;
        } else {
            printable++;
            p += len;
        }
    }
    return printable > 0 && bad * 20 <= w;
}

static int icase_prefix(const uint8_t *p, size_t n, const char *s)
{
    size_t i = 0;
    for (; s[i]; i++) {
        if (i >= n)
            return 0;
        uint8_t c = p[i];
        if (c >= 'A' && c <= 'Z')
            c = (uint8_t)(c - 'A' + 'a');
        if (c != (uint8_t)s[i])
            return 0;
    }
    return 1;
}

static int icase_contains(const uint8_t *p, size_t n, const char *s)
{
    size_t len = strlen(s);
    for (size_t i = 0; i + len <= n; i++)
        if (icase_prefix(p + i, n - i, s))
            return 1;
    return 0;
}

static ln_reason classify_text(const uint8_t *d, size_t n, const ln_probe *probe, ln_decode_info *info)
{
    size_t w = n < 8192 ? n : 8192, i = 0;
    if (w >= 3 && d[0] == 0xef && d[1] == 0xbb && d[2] == 0xbf)
        i = 3;
    while (i < w && (d[i] == ' ' || d[i] == '\t' || d[i] == '\r' || d[i] == '\n'))
        i++;
    const uint8_t *p = d + i;
    size_t m = w - i;
    int named_html = !strcmp(probe->ext, "html") || !strcmp(probe->ext, "htm");
    info->format = LN_FORMAT_TEXT;
    if (w >= 2 && (d[0] == 0xff || d[0] == 0xfe))
        return ln_reject(info, LN_REASON_NOT_IMAGE, "file is UTF-16 text, not an image");
    if (m && p[0] == '<') {
        if (icase_contains(p, m, "<svg")) {
            info->format = LN_FORMAT_OTHER;
            return ln_reject(info, LN_REASON_UNSUPPORTED,
                             "file is an SVG vector drawing, not a pixel image; export it to PNG first");
        }
        if (icase_prefix(p, m, "<!doctype html") || icase_contains(p, m, "<html") || icase_contains(p, m, "<head") ||
            icase_contains(p, m, "<body"))
            return ln_reject(info, LN_REASON_NOT_IMAGE,
                             named_html ? "file is HTML text (a web page), not an image"
                                        : "file is HTML text, not an image (a web page saved with an image name?)");
        return ln_reject(info, LN_REASON_NOT_IMAGE,
                         "file is XML text, not an image (an error response saved by a downloader?)");
    }
    if (m && (p[0] == '{' || p[0] == '['))
        return ln_reject(info, LN_REASON_NOT_IMAGE,
                         "file is JSON text, not an image (an API response saved with an image name?)");
    if (icase_prefix(p, m, "version https://git-lfs"))
        return ln_reject(info, LN_REASON_NOT_IMAGE,
                         "file is a Git LFS pointer, not the image itself (run `git lfs pull`)");
    if (icase_prefix(p, m, "data:image/"))
        return ln_reject(info, LN_REASON_NOT_IMAGE,
                         "file is a data: URI (base64 text), not the image bytes; decode it first");
    if (icase_prefix(p, m, "ivborw0kggo") || icase_prefix(p, m, "/9j/"))
        return ln_reject(info, LN_REASON_NOT_IMAGE, "file is a base64-encoded image (text); decode it first");
    return ln_reject(info, LN_REASON_NOT_IMAGE, "file is plain text, not an image");
}

static int bmp_plausible(const uint8_t *d, size_t n)
{
    if (n < 18 || d[0] != 'B' || d[1] != 'M')
        return 0;
    uint32_t hsz = ln_rd32le(d + 14);
    return hsz == 12 || hsz == 16 || hsz == 40 || hsz == 52 || hsz == 56 || hsz == 64 || hsz == 108 || hsz == 124;
}

static int tga_footer(const uint8_t *d, size_t n)
{
    return n >= 18 + 26 && memcmp(d + n - 18, "TRUEVISION-XFILE.\0", 18) == 0;
}

ln_reason ln_sniff(const uint8_t *d, size_t n, ln_probe *probe, ln_decode_info *info)
{
    ln_format claimed = ln_format_from_ext(probe->ext);
    const char *named = claimed != LN_FORMAT_UNKNOWN && claimed != LN_FORMAT_OTHER ? probe->ext : NULL;

    info->format = LN_FORMAT_UNKNOWN;
    if (n >= 2 && d[0] == 0xff && d[1] == 0xd8 && (n == 2 || d[2] == 0xff)) {
        info->format = LN_FORMAT_JPEG;
    } else if (n >= 4 && !memcmp(d, "\x89PNG", 4)) {
        info->format = LN_FORMAT_PNG;
    } else if (n >= 6 && (!memcmp(d, "GIF87a", 6) || !memcmp(d, "GIF89a", 6))) {
        info->format = LN_FORMAT_GIF;
    } else if (n >= 12 && !memcmp(d, "RIFF", 4) && !memcmp(d + 8, "WEBP", 4)) {
        info->format = LN_FORMAT_WEBP;
    } else if (bmp_plausible(d, n)) {
        info->format = LN_FORMAT_BMP;
    }
    /* TGA before the other magics: a plain TGA header can look like an ICO/CUR one. */
    if (info->format == LN_FORMAT_UNKNOWN && claimed == LN_FORMAT_TGA && ln_tga_header_plausible(d, n))
        info->format = LN_FORMAT_TGA;
    if (info->format != LN_FORMAT_UNKNOWN)
        return LN_REASON_OK;

    const char *other = NULL;
    int image = 0;
    if (n >= 12 && !memcmp(d + 4, "ftyp", 4)) {
        other = iso_media_name(d, n, &image);
    } else if (n >= 12 && !memcmp(d, "RIFF", 4)) {
        image = 0;
        other = !memcmp(d + 8, "AVI ", 4) ? "AVI video" : !memcmp(d + 8, "WAVE", 4) ? "WAV audio file" : "RIFF container";
    } else if (n >= 6 && (!memcmp(d, "\0\0\1\0", 4) || !memcmp(d, "\0\0\2\0", 4)) && ln_rd16le(d + 4) > 0) {
        other = d[2] == 1 ? "Windows icon (ICO)" : "Windows cursor (CUR)";
        image = 1;
    } else if (n >= 3 && d[0] == 'P' && d[1] >= '1' && d[1] <= '7' &&
               (d[2] == ' ' || d[2] == '\n' || d[2] == '\r' || d[2] == '\t')) {
        other = "Netpbm (PBM/PGM/PPM) image";
        image = 1;
    } else {
        for (size_t i = 0; i < sizeof other_table / sizeof other_table[0]; i++) {
            const magic_entry *e = &other_table[i];
            if (has_at(d, n, e->offset, e->magic, e->len)) {
                other = e->name;
                image = e->image;
                break;
            }
        }
    }
    if (other) {
        char suffix[40] = "";
        if (named)
            snprintf(suffix, sizeof suffix, " (named .%s)", named);
        info->format = LN_FORMAT_OTHER;
        if (image)
            return ln_reject(info, LN_REASON_UNSUPPORTED,
                             "file is a %s%s, a format lora-native does not decode; convert it to PNG or JPEG",
                             other, suffix);
        return ln_reject(info, LN_REASON_UNSUPPORTED, "file is a %s%s, not an image", other, suffix);
    }

    if (tga_footer(d, n) && ln_tga_header_plausible(d, n)) {
        info->format = LN_FORMAT_TGA;
        return LN_REASON_OK;
    }
    if (all_zero(d, n))
        return ln_reject(info, LN_REASON_NOT_IMAGE,
                         "file is all zero bytes (%zu of them): an interrupted download or copy?", n);
    if (looks_like_text(d, n))
        return classify_text(d, n, probe, info);

    char hex[3 * 8 + 1] = "";
    size_t k = n < 8 ? n : 8, pos = 0;
    for (size_t i = 0; i < k; i++)
        pos += (size_t)snprintf(hex + pos, sizeof hex - pos, "%s%02x", i ? " " : "", d[i]);
    if (claimed == LN_FORMAT_TGA)
        return ln_reject(info, LN_REASON_NOT_IMAGE, "unknown data (first bytes %s); not a valid TGA header", hex);
    return ln_reject(info, LN_REASON_NOT_IMAGE, "unknown data (first bytes %s), not an image format lora-native knows",
                     hex);
}
