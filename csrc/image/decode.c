/* Top-level decode flow: read the file, sniff, check the structure and the size limit,
 * decode, orient. A broken file ends as a reason record; only out-of-memory and bad
 * arguments are errors. */
#define _POSIX_C_SOURCE 200809L
#include "decode_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* No image we accept needs more; a bigger file is refused before it is read. */
#define LN_MAX_FILE_BYTES ((uint64_t)2 << 30)

static const char *const reason_names[LN_REASON_COUNT] = {
    "ok", "empty_file", "unreadable", "not_an_image", "unsupported_format", "truncated", "corrupt", "too_large",
};
static const char *const format_names[LN_FORMAT_COUNT] = {
    "unknown", "jpeg", "png", "gif", "bmp", "tga", "webp", "text", "other",
};
static const char *const note_names[LN_NOTE_COUNT_BITS] = {
    "wrong_extension", "animated", "cmyk", "16bit", "alpha", "exif_orientation", "trailing_data", "decoder_warning",
};

const char *ln_reason_name(ln_reason reason)
{
    return (unsigned)reason < LN_REASON_COUNT ? reason_names[reason] : "unknown";
}

const char *ln_format_name(ln_format format)
{
    return (unsigned)format < LN_FORMAT_COUNT ? format_names[format] : "unknown";
}

const char *ln_note_name(uint32_t note_bit)
{
    for (int i = 0; i < LN_NOTE_COUNT_BITS; i++)
        if (note_bit == (1u << i))
            return note_names[i];
    return "unknown";
}

void ln_decode_opts_init(ln_decode_opts *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->max_pixels = LN_DEFAULT_MAX_PIXELS;
    opts->jpeg_decoder = LN_JPEG_LIBJPEG;
    opts->apply_orientation = 1;
}

ln_reason ln_reject(ln_decode_info *info, ln_reason reason, const char *fmt, ...)
{
    va_list ap;
    info->reason = reason;
    va_start(ap, fmt);
    vsnprintf(info->message, sizeof info->message, fmt, ap);
    va_end(ap);
    return reason;
}

ln_reason ln_check_dims(ln_decode_info *info, const ln_probe *probe, int width, int height)
{
    uint64_t pixels = (uint64_t)(width > 0 ? width : 0) * (uint64_t)(height > 0 ? height : 0);
    if (pixels <= probe->max_pixels)
        return LN_REASON_OK;
    return ln_reject(info, LN_REASON_TOO_LARGE,
                     "image is %dx%d (%.1f megapixels), over the limit of %.1f megapixels (max_pixels=%llu): "
                     "a decompression bomb or a huge scan?",
                     width, height, (double)pixels / 1e6, (double)probe->max_pixels / 1e6,
                     (unsigned long long)probe->max_pixels);
}

/* Lower-case extension without the dot, from ".PNG", "png" or "photo.png"; "" when none. */
static void normalise_ext(const char *ext, char buf[16])
{
    buf[0] = '\0';
    if (!ext)
        return;
    const char *slash = strrchr(ext, '/'), *dot = strrchr(ext, '.');
    if (slash && (!dot || dot < slash))
        return; /* a path whose last component has no extension */
    const char *s = dot ? dot + 1 : ext;
    size_t len = strlen(s);
    if (len == 0 || len > 15)
        return;
    for (size_t i = 0; i <= len; i++)
        buf[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] - 'A' + 'a' : s[i]);
}

static ln_reason check_structure(const uint8_t *d, size_t n, ln_probe *probe, ln_decode_info *info)
{
    switch (info->format) {
    case LN_FORMAT_JPEG: return ln_check_jpeg(d, n, probe, info);
    case LN_FORMAT_PNG: return ln_check_png(d, n, probe, info);
    case LN_FORMAT_GIF: return ln_check_gif(d, n, probe, info);
    case LN_FORMAT_BMP: return ln_check_bmp(d, n, probe, info);
    case LN_FORMAT_TGA: return ln_check_tga(d, n, probe, info);
    case LN_FORMAT_WEBP: return ln_check_webp(d, n, probe, info);
    default: return ln_reject(info, LN_REASON_NOT_IMAGE, "unknown data");
    }
}

/* Debian's stb_image 2.27 is not safe on damaged JPEG entropy data (fuzzing hit undefined
 * shifts in its bit reader; later stb releases fixed out-of-bounds reads in its Huffman
 * decoder), so the stb path only sees files libjpeg decodes without a warning, checked at 1/8
 * scale, which still reads every Huffman code. Damaged files keep libjpeg's full decode. */
static int decode_jpeg_stb(const uint8_t *d, size_t n, const ln_decode_opts *opts, const ln_probe *probe,
                           ln_image *out, ln_decode_info *info, ln_error *err)
{
    if (probe->jpeg_arithmetic) {
        ln_reject(info, LN_REASON_UNSUPPORTED, "arithmetic-coded JPEG is not supported by the stb_image decoder");
        return LN_OK;
    }
    if (probe->jpeg_default_tables) {
        ln_reject(info, LN_REASON_UNSUPPORTED,
                  "JPEG without its own Huffman tables (a Motion-JPEG frame) is not supported by the stb_image "
                  "decoder; use the libjpeg decoder");
        return LN_OK;
    }
    ln_decode_opts check = *opts;
    check.jpeg_draft_min_side = 1;
    int rc = ln_decode_jpeg_libjpeg(d, n, &check, probe, out, info, err);
    if (rc != LN_OK || info->reason != LN_REASON_OK)
        return rc;
    ln_image_free(out);
    if (info->notes & LN_NOTE_DECODER_WARNING) {
        check.jpeg_draft_min_side = 0;
        return ln_decode_jpeg_libjpeg(d, n, &check, probe, out, info, err);
    }
    return ln_decode_stb(d, n, probe, out, info, err);
}

int ln_decode_memory(const uint8_t *data, size_t len, const ln_decode_opts *opts_in, ln_image *out,
                     ln_decode_info *info, ln_error *err)
{
    if (!out || !info || (!data && len))
        return ln_fail(err, LN_ERR_ARG, "ln_decode_memory: NULL argument");
    memset(out, 0, sizeof *out);
    memset(info, 0, sizeof *info);
    info->orientation = 1;
    ln_decode_opts opts;
    if (opts_in)
        opts = *opts_in;
    else
        ln_decode_opts_init(&opts);
    if (opts.jpeg_decoder != LN_JPEG_LIBJPEG && opts.jpeg_decoder != LN_JPEG_STB)
        return ln_fail(err, LN_ERR_ARG, "unknown JPEG decoder %d", opts.jpeg_decoder);
    if (opts.jpeg_draft_min_side < 0)
        return ln_fail(err, LN_ERR_ARG, "jpeg_draft_min_side must be >= 0, got %d", opts.jpeg_draft_min_side);

    char ext[16];
    normalise_ext(opts.ext, ext);
    ln_probe probe;
    memset(&probe, 0, sizeof probe);
    probe.max_pixels = opts.max_pixels ? opts.max_pixels : LN_DEFAULT_MAX_PIXELS;
    probe.ext = ext;

    if (len == 0) {
        ln_reject(info, LN_REASON_EMPTY, "file is empty (0 bytes)");
        return LN_OK;
    }
    ln_reason r = ln_sniff(data, len, &probe, info);
    ln_format claimed = ln_format_from_ext(ext);
    /* Only a decodable image under another name is a note; text or an unsupported format is
     * already the reason, and its message names what the content is. */
    int decodable = info->format >= LN_FORMAT_JPEG && info->format <= LN_FORMAT_WEBP;
    if (claimed != LN_FORMAT_UNKNOWN && decodable && info->format != claimed)
        info->notes |= LN_NOTE_WRONG_EXTENSION;
    if (r != LN_REASON_OK)
        return LN_OK;
    if (check_structure(data, len, &probe, info) != LN_REASON_OK)
        return LN_OK;
    info->orientation = ln_exif_orientation(probe.exif, probe.exif_len);
    if (opts.header_only)
        return LN_OK;

    int rc;
    if (info->format == LN_FORMAT_JPEG && opts.jpeg_decoder == LN_JPEG_LIBJPEG) {
        rc = ln_decode_jpeg_libjpeg(data, len, &opts, &probe, out, info, err);
    } else if (info->format == LN_FORMAT_JPEG) {
        rc = decode_jpeg_stb(data, len, &opts, &probe, out, info, err);
    } else if (info->format == LN_FORMAT_WEBP) {
        rc = ln_decode_webp(data, len, &probe, out, info, err);
    } else {
        rc = ln_decode_stb(data, len, &probe, out, info, err);
    }
    if (rc != LN_OK || info->reason != LN_REASON_OK) {
        ln_image_free(out);
        return rc;
    }
    if (opts.apply_orientation && info->orientation > 1) {
        rc = ln_apply_orientation(out, info->orientation, err);
        if (rc != LN_OK) {
            ln_image_free(out);
            return rc;
        }
        info->notes |= LN_NOTE_ORIENTED;
    }
    return LN_OK;
}

int ln_read_file(const char *path, uint8_t **data, size_t *len, ln_error *err)
{
    *data = NULL;
    *len = 0;
    if (!path)
        return ln_fail(err, LN_ERR_ARG, "ln_read_file: NULL path");
    /* O_NONBLOCK so a FIFO in the folder cannot hang the run; fstat refuses it below. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        struct stat ls;
        if (e == ENOENT && lstat(path, &ls) == 0 && S_ISLNK(ls.st_mode))
            return ln_fail(err, LN_ERR_IO, "broken symbolic link: its target does not exist");
        return ln_fail_errno(err, "cannot open", e);
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return ln_fail_errno(err, "cannot stat", e);
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        if (S_ISDIR(st.st_mode))
            return ln_fail(err, LN_ERR_IO, "is a directory, not a file");
        return ln_fail(err, LN_ERR_IO, "not a regular file (a device, FIFO or socket)");
    }
    if ((uint64_t)st.st_size > LN_MAX_FILE_BYTES) {
        close(fd);
        return ln_fail(err, LN_ERR_LIMIT, "file is %lld bytes, over the %llu-byte limit for one image",
                       (long long)st.st_size, (unsigned long long)LN_MAX_FILE_BYTES);
    }
    size_t size = (size_t)st.st_size, got = 0;
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) {
        close(fd);
        return ln_fail(err, LN_ERR_NOMEM, "out of memory reading a %zu-byte file", size);
    }
    while (got < size) {
        ssize_t k = read(fd, buf + got, size - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            int e = errno;
            free(buf);
            close(fd);
            return ln_fail_errno(err, "cannot read", e);
        }
        if (k == 0)
            break; /* the file shrank while we read it: use what is there */
        got += (size_t)k;
    }
    close(fd);
    *data = buf;
    *len = got;
    return LN_OK;
}

int ln_decode_file_ex(const char *path, const ln_decode_opts *opts, ln_image *out, ln_decode_info *info,
                      uint8_t **bytes, size_t *nbytes, ln_error *err)
{
    if (bytes)
        *bytes = NULL;
    if (nbytes)
        *nbytes = 0;
    if (!out || !info)
        return ln_fail(err, LN_ERR_ARG, "ln_decode_file: NULL argument");
    memset(out, 0, sizeof *out);
    memset(info, 0, sizeof *info);
    info->orientation = 1;
    uint8_t *data;
    size_t len;
    ln_error rerr;
    int rc = ln_read_file(path, &data, &len, &rerr);
    if (rc == LN_ERR_IO || rc == LN_ERR_LIMIT) {
        ln_reject(info, rc == LN_ERR_IO ? LN_REASON_UNREADABLE : LN_REASON_TOO_LARGE, "%s", rerr.msg);
        return LN_OK;
    }
    if (rc != LN_OK) {
        if (err)
            *err = rerr;
        return rc;
    }
    ln_decode_opts o;
    if (opts)
        o = *opts;
    else
        ln_decode_opts_init(&o);
    if (!o.ext) {
        const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        const char *dot = strrchr(base, '.');
        o.ext = dot ? dot : ""; /* "photo" has no extension, not the extension "photo" */
    }
    rc = ln_decode_memory(data, len, &o, out, info, err);
    if (bytes && rc == LN_OK) {
        *bytes = data;
        if (nbytes)
            *nbytes = len;
    } else {
        free(data);
    }
    return rc;
}

int ln_decode_file(const char *path, const ln_decode_opts *opts, ln_image *out, ln_decode_info *info,
                   ln_error *err)
{
    return ln_decode_file_ex(path, opts, out, info, NULL, NULL, err);
}
