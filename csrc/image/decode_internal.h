/* Private to csrc/image/: what the structure checks learn about a file and hand to the
 * decoders, and the helpers the per-format files share. Not a public header. */
#ifndef LN_DECODE_INTERNAL_H
#define LN_DECODE_INTERNAL_H

#include "ln_decode.h"

/* Facts gathered by sniffing and by the structure walk, before any pixel is decoded. */
typedef struct {
    uint64_t max_pixels;   /* the limit the checks enforce as soon as they know the size */
    const char *ext;       /* normalised lower-case extension without the dot, or "" */
    const uint8_t *exif;   /* TIFF header of the EXIF block, if the file has one */
    size_t exif_len;
    int has_alpha;         /* the file can carry transparency (alpha channel, tRNS, ...) */
    /* JPEG */
    int jpeg_sof;          /* 0xC0..0xCF marker that started the frame */
    int jpeg_components;
    int jpeg_arithmetic;   /* SOF9..SOF11: stb_image cannot decode these */
    int jpeg_default_tables; /* a scan uses Huffman tables no DHT defined (Motion-JPEG style) */
    /* PNG */
    int png_color_type;
    /* WebP */
    int webp_animated;
} ln_probe;

/* Set info->reason and info->message; returns the reason so checks can `return ln_reject(...)`. */
ln_reason ln_reject(ln_decode_info *info, ln_reason reason, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* too_large when width*height is over the limit (checked before any pixel buffer exists). */
ln_reason ln_check_dims(ln_decode_info *info, const ln_probe *probe, int width, int height);

/* ---- sniff.c ---- */
/* Format from the content; for text and recognised-but-refused formats it also sets the
 * reason and message. Returns the reason (OK when the format is one we decode). */
ln_reason ln_sniff(const uint8_t *d, size_t n, ln_probe *probe, ln_decode_info *info);
/* The format a file extension promises (LN_FORMAT_OTHER for known non-decodable image
 * extensions, LN_FORMAT_UNKNOWN for none or unknown). ext is lower-case without the dot. */
ln_format ln_format_from_ext(const char *ext);

/* ---- jpeg_scan.c / structure.c / webp.c: structure checks, filling info and probe ---- */
ln_reason ln_check_jpeg(const uint8_t *d, size_t n, ln_probe *probe, ln_decode_info *info);
ln_reason ln_check_png(const uint8_t *d, size_t n, ln_probe *probe, ln_decode_info *info);
ln_reason ln_check_gif(const uint8_t *d, size_t n, ln_probe *probe, ln_decode_info *info);
ln_reason ln_check_bmp(const uint8_t *d, size_t n, ln_probe *probe, ln_decode_info *info);
ln_reason ln_check_tga(const uint8_t *d, size_t n, ln_probe *probe, ln_decode_info *info);
ln_reason ln_check_webp(const uint8_t *d, size_t n, ln_probe *probe, ln_decode_info *info);
/* Plausible TGA header (TGA has no magic number). */
int ln_tga_header_plausible(const uint8_t *d, size_t n);

/* ---- decoders: fill `out` with 3-channel RGB, or set a reason. Return LN_OK or an error
 * (out of memory). ---- */
int ln_decode_jpeg_libjpeg(const uint8_t *d, size_t n, const ln_decode_opts *opts, const ln_probe *probe,
                           ln_image *out, ln_decode_info *info, ln_error *err);
int ln_decode_stb(const uint8_t *d, size_t n, const ln_probe *probe, ln_image *out, ln_decode_info *info,
                  ln_error *err);
int ln_decode_webp(const uint8_t *d, size_t n, const ln_probe *probe, ln_image *out, ln_decode_info *info,
                   ln_error *err);

/* ---- exif.c ---- */
/* Orientation 1..8 from a TIFF-structured EXIF block (1 when absent or invalid). */
int ln_exif_orientation(const uint8_t *tiff, size_t len);
/* Replace *img by its EXIF-oriented version (Pillow's ImageOps.exif_transpose). */
int ln_apply_orientation(ln_image *img, int orientation, ln_error *err);

/* ---- pixels.c: conversions to the 3-channel RGB output ---- */
/* Composite alpha on white: out = (c*a + 255*(255-a) + 127) / 255. */
static inline uint8_t ln_over_white(unsigned c, unsigned a)
{
    return (uint8_t)((c * a + 255u * (255u - a) + 127u) / 255u);
}
/* src holds width*height pixels of `channels` (1..4) 8-bit samples, rows packed; writes RGB
 * into dst (its own stride). Returns 1 when some pixel was not fully opaque. */
int ln_pixels_to_rgb(const uint8_t *src, int channels, int width, int height, ln_image *dst);
/* Same from 16-bit samples in native byte order, keeping the high byte (Pillow's ;16B unpackers). */
int ln_pixels16_to_rgb(const uint16_t *src, int channels, int width, int height, ln_image *dst);
/* Adobe-inverted CMYK row to RGB, Pillow's formula (JpegImagePlugin "CMYK;I" + Convert.c cmyk2rgb). */
void ln_inverted_cmyk_row_to_rgb(const uint8_t *cmyk, uint8_t *rgb, int width);

/* Little/big-endian readers; callers check bounds first. */
static inline uint16_t ln_rd16le(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint16_t ln_rd16be(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t ln_rd32le(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint32_t ln_rd32be(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

#endif
