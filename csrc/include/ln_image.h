/* The one image struct of the core, and what operates on it: decode (with the
 * file checks that turn broken inputs into reason records), resample, quality metrics. */
#ifndef LN_IMAGE_H
#define LN_IMAGE_H

#include "ln_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 8-bit interleaved pixels: channels 1 (L) or 3 (RGB) or 4 (RGBA). */
typedef struct {
    int width;
    int height;
    int channels;
    size_t stride; /* bytes per row */
    uint8_t *data;
} ln_image;

int ln_image_alloc(ln_image *img, int width, int height, int channels, ln_error *err);
void ln_image_free(ln_image *img);
/* A view onto caller memory; ln_image_free must not be called on it. */
ln_image ln_image_view(uint8_t *data, int width, int height, int channels, size_t stride);

#ifdef __cplusplus
}
#endif
#endif
