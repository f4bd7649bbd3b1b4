/* Encoding to PNG/JPEG in memory (stb_image_write) and atomic file writes. */
#ifndef LN_ENCODE_H
#define LN_ENCODE_H

#include "ln_image.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    uint8_t *data;
    size_t len;
    size_t cap;
    int failed; /* an allocation failed while growing */
} ln_buffer;

void ln_buffer_free(ln_buffer *buf);

/* 1, 3 or 4 channel images. The buffer is allocated here; free with ln_buffer_free. */
int ln_encode_png(const ln_image *img, ln_buffer *out, ln_error *err);
int ln_encode_jpeg(const ln_image *img, int quality, ln_buffer *out, ln_error *err);

/* Write `len` bytes to `path` through a temporary file in the same folder and rename(2),
 * so a reader never sees a half-written file and an interrupted run leaves no partial output. */
int ln_write_file_atomic(const char *path, const uint8_t *data, size_t len, ln_error *err);

#ifdef __cplusplus
}
#endif
#endif
