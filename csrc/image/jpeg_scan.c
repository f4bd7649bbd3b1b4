/* JPEG structure check: walk the marker segments by their lengths up to the first SOS, then
 * scan the entropy-coded data (FF00 stuffing, RSTn, tables and further scans between
 * progressive scans) to the EOI marker. A file without EOI is cut off, whatever a
 * lenient decoder would make of it (ITU-T T.81, Annex B). */
#include "decode_internal.h"

#include <stdio.h>
#include <string.h>

/* More scans than any encoder writes; bounds the work a crafted file can ask of libjpeg. */
#define LN_JPEG_MAX_SCANS 1000

static const char *marker_name(int m, char buf[8])
{
    if (m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc) {
        snprintf(buf, 8, "SOF%d", m - 0xc0);
        return buf;
    }
    if (m >= 0xe0 && m <= 0xef) {
        snprintf(buf, 8, "APP%d", m - 0xe0);
        return buf;
    }
    switch (m) {
    case 0xc4: return "DHT";
    case 0xcc: return "DAC";
    case 0xda: return "SOS";
    case 0xdb: return "DQT";
    case 0xdc: return "DNL";
    case 0xdd: return "DRI";
    case 0xfe: return "COM";
    default:
        snprintf(buf, 8, "FF%02X", (unsigned)m);
        return buf;
    }
}

static int is_sof(int m)
{
    return m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc;
}

static ln_reason check_sof(int m, const uint8_t *s, size_t len, ln_probe *probe, ln_decode_info *info)
{
    if (len < 6)
        return ln_reject(info, LN_REASON_CORRUPT, "JPEG frame header (SOF%d) is too short", m - 0xc0);
    int precision = s[0], height = ln_rd16be(s + 1), width = ln_rd16be(s + 3), ncomp = s[5];
    if (len < 6 + 3 * (size_t)ncomp)
        return ln_reject(info, LN_REASON_CORRUPT, "JPEG frame header (SOF%d) is too short for %d components",
                         m - 0xc0, ncomp);
    info->width = width;
    info->height = height;
    info->channels = ncomp;
    info->bit_depth = precision;
    info->frames = 1;
    if (m == 0xc3 || m == 0xc7 || m == 0xcb || m == 0xcf)
        return ln_reject(info, LN_REASON_UNSUPPORTED, "lossless JPEG (SOF%d) is not supported", m - 0xc0);
    if ((m >= 0xc5 && m <= 0xc7) || (m >= 0xcd && m <= 0xcf))
        return ln_reject(info, LN_REASON_UNSUPPORTED, "hierarchical JPEG (SOF%d) is not supported", m - 0xc0);
    if (precision != 8)
        return ln_reject(info, LN_REASON_UNSUPPORTED, "%d-bit JPEG is not supported (only 8-bit samples)", precision);
    if (ncomp != 1 && ncomp != 3 && ncomp != 4)
        return ln_reject(info, LN_REASON_UNSUPPORTED, "JPEG with %d colour components is not supported", ncomp);
    if (width == 0)
        return ln_reject(info, LN_REASON_CORRUPT, "JPEG frame header says the image is 0 pixels wide");
    if (height == 0)
        return ln_reject(info, LN_REASON_UNSUPPORTED,
                         "JPEG whose height is given later in a DNL marker is not supported");
    probe->jpeg_sof = m;
    probe->jpeg_components = ncomp;
    probe->jpeg_arithmetic = m >= 0xc9;
    return ln_check_dims(info, probe, width, height);
}

/* A DHT segment is a run of tables: class/id byte, 16 code counts, then that many symbols.
 * More than 256 symbols in one table is invalid, and Debian's stb_image 2.27 overruns its
 * tables on it, so the check lives here, in front of both decoders. Defined tables are
 * recorded in *defined (bit class*4 + id). */
static int dht_valid(const uint8_t *s, size_t len, unsigned *defined)
{
    size_t pos = 0;
    while (pos < len) {
        if (len - pos < 17 || (s[pos] >> 4) > 1 || (s[pos] & 15) > 3)
            return 0;
        size_t symbols = 0;
        for (int i = 1; i <= 16; i++)
            symbols += s[pos + i];
        if (symbols > 256 || symbols > len - pos - 17)
            return 0;
        *defined |= 1u << ((s[pos] >> 4) * 4 + (s[pos] & 15));
        pos += 17 + symbols;
    }
    return 1;
}

/* Whether a scan (SOS segment) codes with a Huffman table no DHT defined. libjpeg then uses
 * the standard tables (Motion-JPEG frames rely on it); stb_image reads uninitialised ones. */
static int scan_needs_default_tables(const uint8_t *s, size_t len, unsigned defined, int progressive)
{
    if (len < 1 || len < 1 + 2 * (size_t)s[0] + 3)
        return 0; /* malformed: the decoders reject it themselves */
    int ns = s[0], ss = s[1 + 2 * ns], ah = s[3 + 2 * ns] >> 4;
    int needs_dc = !progressive || (ss == 0 && ah == 0), needs_ac = !progressive || ss > 0;
    for (int i = 0; i < ns; i++) {
        int td = s[2 + 2 * i] >> 4, ta = s[2 + 2 * i] & 15;
        if ((needs_dc && (td > 3 || !(defined & (1u << td)))) || (needs_ac && (ta > 3 || !(defined & (1u << (4 + ta))))))
            return 1;
    }
    return 0;
}

/* Reads the marker at *pos (after any 0xFF fill bytes). Returns the marker code, or -1 when
 * the data ends first. */
static int next_marker(const uint8_t *d, size_t n, size_t *pos)
{
    size_t p = *pos;
    while (p < n && d[p] == 0xff)
        p++;
    if (p >= n)
        return -1;
    *pos = p + 1;
    return d[p];
}

ln_reason ln_check_jpeg(const uint8_t *d, size_t n, ln_probe *probe, ln_decode_info *info)
{
    static const char cut[] = "JPEG data ends before the end-of-image marker; the picture would be cut off";
    char name[8];
    size_t pos = 2;
    int have_sof = 0, scans = 0;
    unsigned tables = 0;

    /* Header segments, up to the first scan. */
    for (;;) {
        /* Junk between segments: libjpeg skips it with a warning, so do we. */
        while (pos < n && d[pos] != 0xff)
            pos++;
        int m = next_marker(d, n, &pos);
        if (m < 0)
            return ln_reject(info, LN_REASON_TRUNCATED, "JPEG data ends before the image data starts");
        if (m == 0x00 || m == 0x01 || (m >= 0xd0 && m <= 0xd7))
            continue; /* stray stuffing or restart marker: no segment follows */
        if (m == 0xd8)
            return ln_reject(info, LN_REASON_CORRUPT, "JPEG has a second start-of-image marker before its image data");
        if (m == 0xd9)
            return ln_reject(info, LN_REASON_CORRUPT, "JPEG ends (EOI) before any image data");
        if (pos + 2 > n)
            return ln_reject(info, LN_REASON_TRUNCATED, "JPEG data ends inside the %s segment", marker_name(m, name));
        size_t len = ln_rd16be(d + pos);
        if (len < 2)
            return ln_reject(info, LN_REASON_CORRUPT, "JPEG %s segment has an invalid length %zu",
                             marker_name(m, name), len);
        if (len > n - pos)
            return ln_reject(info, LN_REASON_TRUNCATED, "JPEG data ends inside the %s segment", marker_name(m, name));
        const uint8_t *seg = d + pos + 2;
        size_t seglen = len - 2;
        pos += len;
        if (is_sof(m)) {
            if (have_sof)
                return ln_reject(info, LN_REASON_CORRUPT, "JPEG has two frame headers (SOF markers)");
            ln_reason r = check_sof(m, seg, seglen, probe, info);
            if (r != LN_REASON_OK)
                return r;
            have_sof = 1;
        } else if (m == 0xe1 && !probe->exif && seglen >= 6 && !memcmp(seg, "Exif\0\0", 6)) {
            /* Pillow reads the first Exif APP1 segment; so do we. */
            probe->exif = seg + 6;
            probe->exif_len = seglen - 6;
        } else if (m == 0xc4 && !dht_valid(seg, seglen, &tables)) {
            return ln_reject(info, LN_REASON_CORRUPT, "JPEG Huffman table (DHT) is invalid");
        } else if (m == 0xda) {
            if (!have_sof)
                return ln_reject(info, LN_REASON_CORRUPT, "JPEG scan (SOS) comes before the frame header (SOF)");
            scans = 1;
            probe->jpeg_default_tables |=
                scan_needs_default_tables(seg, seglen, tables, probe->jpeg_sof == 0xc2 || probe->jpeg_sof == 0xca);
            break;
        }
    }

    /* Entropy-coded data: 0xFF is always followed by 00 (stuffing), a restart marker, or
     * a real marker; progressive files put tables and further SOS segments between scans. */
    for (;;) {
        const uint8_t *ff = pos < n ? memchr(d + pos, 0xff, n - pos) : NULL;
        if (!ff)
            return ln_reject(info, LN_REASON_TRUNCATED, "%s", cut);
        pos = (size_t)(ff - d);
        int m = next_marker(d, n, &pos);
        if (m < 0)
            return ln_reject(info, LN_REASON_TRUNCATED, "%s", cut);
        if (m == 0x00 || m == 0x01 || (m >= 0xd0 && m <= 0xd7))
            continue;
        if (m == 0xd9)
            break;
        if (m == 0xd8)
            return ln_reject(info, LN_REASON_CORRUPT,
                             "JPEG has a start-of-image marker inside its image data (two files glued together?)");
        if (is_sof(m))
            return ln_reject(info, LN_REASON_CORRUPT, "JPEG has a second frame header (SOF) after its image data");
        if (pos + 2 > n)
            return ln_reject(info, LN_REASON_TRUNCATED, "%s", cut);
        size_t len = ln_rd16be(d + pos);
        if (len < 2)
            return ln_reject(info, LN_REASON_CORRUPT, "JPEG %s segment has an invalid length %zu",
                             marker_name(m, name), len);
        if (len > n - pos)
            return ln_reject(info, LN_REASON_TRUNCATED, "%s", cut);
        if (m == 0xc4 && !dht_valid(d + pos + 2, len - 2, &tables))
            return ln_reject(info, LN_REASON_CORRUPT, "JPEG Huffman table (DHT) is invalid");
        if (m == 0xda)
            probe->jpeg_default_tables |= scan_needs_default_tables(
                d + pos + 2, len - 2, tables, probe->jpeg_sof == 0xc2 || probe->jpeg_sof == 0xca);
        pos += len;
        if (m == 0xda && ++scans > LN_JPEG_MAX_SCANS)
            return ln_reject(info, LN_REASON_CORRUPT, "JPEG has more than %d scans (a crafted file?)",
                             LN_JPEG_MAX_SCANS);
    }
    if (pos < n)
        info->notes |= LN_NOTE_TRAILING_DATA;
    return LN_REASON_OK;
}
