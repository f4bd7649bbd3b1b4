/* Decoding with file checks. A broken or odd file is data, not an error: it comes back as
 * a reason code plus a human message, and the caller reports it and moves on. */
#ifndef LN_DECODE_H
#define LN_DECODE_H

#include "ln_image.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    LN_FORMAT_UNKNOWN = 0,
    LN_FORMAT_JPEG,
    LN_FORMAT_PNG,
    LN_FORMAT_GIF,
    LN_FORMAT_BMP,
    LN_FORMAT_TGA,
    LN_FORMAT_WEBP,
    LN_FORMAT_TEXT,  /* text or HTML: not an image */
    LN_FORMAT_OTHER, /* a recognised format we do not decode: TIFF, HEIC/AVIF, PSD, PDF, ZIP, ... */
    LN_FORMAT_COUNT
} ln_format;

/* Why a file cannot be used; exactly one per file. */
typedef enum {
    LN_REASON_OK = 0,
    LN_REASON_EMPTY,       /* "empty_file": zero bytes */
    LN_REASON_UNREADABLE,  /* "unreadable": open/read failed (missing, permission, a directory) */
    LN_REASON_NOT_IMAGE,   /* "not_an_image": text, HTML or unknown bytes */
    LN_REASON_UNSUPPORTED, /* "unsupported_format": a format or feature we do not decode */
    LN_REASON_TRUNCATED,   /* "truncated": data ends early (JPEG without EOI, PNG without IEND, ...) */
    LN_REASON_CORRUPT,     /* "corrupt": bad CRC, broken structure, decoder failure */
    LN_REASON_TOO_LARGE,   /* "too_large": header dimensions over the limit (decompression bomb) */
    LN_REASON_COUNT
} ln_reason;

/* Notes: the image is usable, but the user should know. Bit flags in ln_decode_info.notes. */
enum {
    LN_NOTE_WRONG_EXTENSION = 1u << 0, /* "wrong_extension": content is another format than the name says */
    LN_NOTE_ANIMATED = 1u << 1,        /* "animated": first frame used */
    LN_NOTE_CMYK = 1u << 2,            /* "cmyk": CMYK/YCCK JPEG converted to RGB */
    LN_NOTE_16BIT = 1u << 3,           /* "16bit": 16-bit samples reduced to 8 */
    LN_NOTE_ALPHA = 1u << 4,           /* "alpha": transparency composited on white */
    LN_NOTE_ORIENTED = 1u << 5,        /* "exif_orientation": EXIF orientation applied */
    LN_NOTE_TRAILING_DATA = 1u << 6,   /* "trailing_data": bytes after the end marker, ignored */
    LN_NOTE_DECODER_WARNING = 1u << 7, /* "decoder_warning": the decoder recovered from damaged data */
    LN_NOTE_COUNT_BITS = 8
};

typedef struct {
    ln_format format;   /* sniffed from content, never from the name */
    ln_reason reason;
    uint32_t notes;
    int width, height;  /* as stored (before EXIF orientation); 0 when unknown */
    int channels;       /* in the file: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA/CMYK; 0 when unknown */
    int bit_depth;      /* 8 or 16; 0 when unknown */
    int frames;         /* 1 for stills, >1 for animations, 0 when unknown */
    int orientation;    /* EXIF orientation 1..8; 1 = none */
    char message[256];  /* human message for the reason (empty when OK) */
} ln_decode_info;

typedef struct {
    uint64_t max_pixels;     /* refuse width*height above this; 0 = LN_DEFAULT_MAX_PIXELS */
    const char *ext;         /* the file's extension (".png"), for wrong_extension and TGA; may be NULL */
    int jpeg_decoder;        /* LN_JPEG_LIBJPEG (default) or LN_JPEG_STB */
    int jpeg_draft_min_side; /* >0: libjpeg DCT-scaled decode, smallest scale whose short side >= this */
    int apply_orientation;   /* apply EXIF orientation (default 1) */
    int header_only;         /* sniff, read dimensions and validate structure; no pixels */
} ln_decode_opts;

#define LN_DEFAULT_MAX_PIXELS ((uint64_t)8192 * 8192)
#define LN_JPEG_LIBJPEG 0
#define LN_JPEG_STB 1

void ln_decode_opts_init(ln_decode_opts *opts);

/* Sniff the format, validate its structure, decode to 3-channel RGB (alpha composited on
 * white, grayscale expanded, 16-bit reduced, EXIF orientation applied). Returns LN_OK when
 * the bytes were examined: a broken file sets info->reason/message and leaves `out` empty
 * (data == NULL). Returns an error code only for out-of-memory or bad arguments. */
int ln_decode_memory(const uint8_t *data, size_t len, const ln_decode_opts *opts, ln_image *out,
                     ln_decode_info *info, ln_error *err);

/* Read a whole file. LN_ERR_IO with the OS reason in err->msg when it cannot be read. */
int ln_read_file(const char *path, uint8_t **data, size_t *len, ln_error *err);

/* ln_read_file + ln_decode_memory; an unreadable or empty file is a reason, not an error. */
int ln_decode_file(const char *path, const ln_decode_opts *opts, ln_image *out, ln_decode_info *info,
                   ln_error *err);

/* ln_decode_file that also hands the file's bytes to the caller (*bytes, free() them; NULL
 * when the file could not be read), for hashing the file without reading it twice. */
int ln_decode_file_ex(const char *path, const ln_decode_opts *opts, ln_image *out, ln_decode_info *info,
                      uint8_t **bytes, size_t *nbytes, ln_error *err);

const char *ln_reason_name(ln_reason reason);  /* "ok", "empty_file", "unreadable", ... */
const char *ln_format_name(ln_format format);  /* "jpeg", "png", ... */
const char *ln_note_name(uint32_t note_bit);   /* "wrong_extension", ... for one bit */

#ifdef __cplusplus
}
#endif
#endif
