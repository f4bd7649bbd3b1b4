/* Resampling and grayscale conversion that reproduce Pillow exactly on 8-bit images
 * (Pillow libImaging/Resample.c fixed-point two-pass filter, Convert.c ITU-R 601-2 luma).
 * The image hashes depend on this being bit-identical to Pillow. */
#ifndef LN_RESAMPLE_H
#define LN_RESAMPLE_H

#include "ln_image.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    LN_FILTER_BOX = 0,      /* area average; Pillow Image.BOX */
    LN_FILTER_BILINEAR = 1, /* Pillow Image.BILINEAR */
    LN_FILTER_BICUBIC = 2,  /* Pillow Image.BICUBIC */
    LN_FILTER_LANCZOS = 3   /* Pillow Image.LANCZOS (imagehash's ANTIALIAS) */
} ln_filter;

/* `settings` may be NULL (CPU defaults, Pillow >= 13 pass order) in every function here.
 *
 * Resize `in` (the region `box` = {x0, y0, x1, y1} in source pixels, float like Pillow's
 * box; NULL = whole image) into `out`, which the caller allocated with the target width,
 * height and in->channels. Same result as Pillow's Image.resize(size, filter, box) for
 * modes L / RGB / RGBX (RGBA is resized per channel without premultiplying: composite
 * alpha first). */
int ln_resample(const ln_image *in, ln_image *out, const float *box, ln_filter filter, const ln_settings *settings,
                ln_error *err);

/* RGB(A) -> L exactly as Pillow's convert("L"): (R*19595 + G*38470 + B*7471 + 0x8000) >> 16.
 * `out` allocated by the caller with the same width/height and 1 channel. 1-channel input is copied. */
int ln_to_gray(const ln_image *in, ln_image *out, const ln_settings *settings, ln_error *err);

#ifdef __cplusplus
}
#endif
#endif
