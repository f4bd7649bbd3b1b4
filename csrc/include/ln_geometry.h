/* Where each output pixel comes from: center crop to WxH, aspect-ratio buckets as
 * kohya sd-scripts computes them, or fit-with-padding. A plan is a source box (in the
 * decoded, oriented image) resampled into the output, optionally onto a white canvas. */
#ifndef LN_GEOMETRY_H
#define LN_GEOMETRY_H

#include "ln_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    int width;
    int height;
} ln_size;

typedef struct {
    int out_width, out_height;    /* final image size */
    float box[4];                 /* source region x0, y0, x1, y1 */
    int inner_width, inner_height; /* the resampled region's size (== out size unless padding) */
    int offset_x, offset_y;       /* where the region lands on the canvas (padding only) */
} ln_plan;

/* The size that fits inside side x side with the aspect kept (long side = side); images
 * already inside are left as they are. Never below 1x1. */
ln_size ln_fit_within(int width, int height, int side);

/* Bucket resolutions as sd-scripts' make_bucket_resolutions: the square of area
 * max_w*max_h rounded down to `step`, plus every (w, h) and (h, w) with w from min_size to
 * max_size in `step`s and h = min(max_size, floor(area / w / step) * step) >= min_size.
 * Sorted ascending by (width, height), unique. `out` may be NULL to count. */
int ln_bucket_resolutions(int max_w, int max_h, int min_size, int max_size, int step, ln_size *out, int cap,
                          int *count, ln_error *err);

/* sd-scripts' select_bucket: without no_upscale, the bucket with the smallest aspect error
 * (an exact size match first) and the cover size; with no_upscale, shrink to max_area when
 * larger, then round down to `step`. */
int ln_bucket_select(int width, int height, const ln_size *resos, int n, int no_upscale, int64_t max_area, int step,
                     ln_size *bucket, ln_size *resized, ln_error *err);

/* Resize to cover (out_w, out_h) and crop the center; one resample from the source box. */
int ln_plan_crop(int width, int height, int out_w, int out_h, ln_plan *plan, ln_error *err);
/* Resize to cover `resized` then crop the center to `bucket`, as sd-scripts trims. */
int ln_plan_bucket(int width, int height, ln_size bucket, ln_size resized, ln_plan *plan, ln_error *err);
/* Resize to fit inside (out_w, out_h) and pad the rest with white, centered. */
int ln_plan_pad(int width, int height, int out_w, int out_h, ln_plan *plan, ln_error *err);

#ifdef __cplusplus
}
#endif
#endif
