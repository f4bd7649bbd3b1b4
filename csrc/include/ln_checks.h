/* Quality metrics per image (model: cleanvision's issue types). Thresholds are applied by
 * the caller (lora_native/dataset.py documents the defaults); the core only measures. */
#ifndef LN_CHECKS_H
#define LN_CHECKS_H

#include "ln_image.h"

#ifdef __cplusplus
extern "C" {
#endif

/* All measured on a grayscale downscale whose long side is LN_CHECKS_SIDE (box filter,
 * aspect kept; smaller images are measured as they are), so scores do not depend on size. */
#define LN_CHECKS_SIDE 256
/* A pixel counts as coloured when max(R,G,B) - min(R,G,B) exceeds this. */
#define LN_CHECKS_CHROMA 12

typedef struct {
    double blur;           /* variance of the 4-neighbour Laplacian (higher = sharper) */
    double mean_luma;      /* 0..255 */
    int p1_luma, p99_luma; /* 1st and 99th percentile of luma */
    double entropy;        /* Shannon entropy of the luma histogram, bits (0..8) */
    double color_fraction; /* fraction of pixels with chroma above LN_CHECKS_CHROMA */
} ln_quality;

/* The measuring downscale of an RGB image (long side LN_CHECKS_SIDE, box filter); `small` is
 * allocated here. Callers that also need a thumbnail make it from this. */
int ln_quality_downscale(const ln_image *rgb, ln_image *small, const ln_settings *settings, ln_error *err);
/* Metrics of an image already downscaled by ln_quality_downscale. */
int ln_quality_measure(const ln_image *small, ln_quality *q, const ln_settings *settings, ln_error *err);
/* Both steps. */
int ln_quality_compute(const ln_image *rgb, ln_quality *q, const ln_settings *settings, ln_error *err);

#ifdef __cplusplus
}
#endif
#endif
