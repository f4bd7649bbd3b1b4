/* Model-input preprocessing for captioners and CLIP: decode many files and turn each into the
 * float32 tensor slot a vision model expects, on the thread pool (the caller releases the GIL).
 * Resizing is the Pillow-exact fixed-point filter of ln_resample.h on 8-bit RGB, so a slot equals
 * what transformers' PIL image processors (or SmilingWolf's WD14 app) compute from the same pixels. */
#ifndef LN_PREP_H
#define LN_PREP_H

#include "ln_decode.h"
#include "ln_resample.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    LN_PREP_RESIZE = 0,       /* resize the whole image to width x height (BLIP) */
    LN_PREP_SHORT_CROP = 1,   /* shortest edge to short_side, long edge int(short_side * long / short),
                               * then a center crop of width x height (CLIP); transformers' rules */
    LN_PREP_PAD_SQUARE = 2    /* pad to a white square of the long side (image centred, offsets
                               * (side - w) / 2, (side - h) / 2), then resize to width x height (WD14) */
} ln_prep_mode;

typedef enum {
    LN_PREP_NCHW_RGB = 0,     /* out[i][c][y][x], channels R, G, B */
    LN_PREP_NHWC_BGR = 1      /* out[i][y][x][c], channels B, G, R */
} ln_prep_layout;

typedef struct {
    ln_decode_opts decode;    /* alpha is composited on white by the decoder */
    int mode;                 /* ln_prep_mode */
    int width, height;        /* the slot's size */
    int short_side;           /* LN_PREP_SHORT_CROP only */
    int filter;               /* ln_filter */
    int layout;               /* ln_prep_layout */
    float scale;              /* value = (pixel * scale - mean[c]) / std[c], c in R, G, B order */
    float mean[3];
    float std[3];
    ln_settings settings;
} ln_prep_opts;

/* RESIZE 224x224, bicubic, NCHW, scale 1/255, mean 0, std 1. */
void ln_prep_opts_init(ln_prep_opts *opts);

/* Fill slot i of `out` (float32, n slots of 3 * width * height) from paths[i]. status[i] /
 * errors[i] per file (errors may be NULL): a file that cannot be read or decoded gets the
 * decoder's reason there and a zero-filled slot; it never fails the batch. Returns LN_ERR_ARG for
 * bad options, LN_ERR_NOMEM when the pool cannot start. */
int ln_prep_files(const char *const *paths, size_t n, const ln_prep_opts *opts, int threads, float *out,
                  int *status, ln_error *errors, ln_error *err);

/* The same for one decoded RGB image (3 channels) already in memory, into one slot. */
int ln_prep_image(const ln_image *rgb, const ln_prep_opts *opts, float *out, ln_error *err);

#ifdef __cplusplus
}
#endif
#endif
