#include "ln_geometry.h"

#include <math.h>
#include <stdlib.h>

ln_size ln_fit_within(int width, int height, int side)
{
    ln_size s = {width, height};
    if (width > side || height > side) {
        if (width >= height) {
            s.width = side;
            s.height = (int)((double)height * side / width + 0.5);
        } else {
            s.height = side;
            s.width = (int)((double)width * side / height + 0.5);
        }
    }
    if (s.width < 1)
        s.width = 1;
    if (s.height < 1)
        s.height = 1;
    return s;
}

static int size_cmp(const void *a, const void *b)
{
    const ln_size *x = a, *y = b;
    if (x->width != y->width)
        return x->width < y->width ? -1 : 1;
    return (x->height > y->height) - (x->height < y->height);
}

int ln_bucket_resolutions(int max_w, int max_h, int min_size, int max_size, int step, ln_size *out, int cap,
                          int *count, ln_error *err)
{
    if (max_w <= 0 || max_h <= 0 || step <= 0 || min_size <= 0 || max_size < min_size)
        return ln_fail(err, LN_ERR_ARG, "bad bucket parameters: resolution %dx%d, sizes %d..%d, step %d", max_w,
                       max_h, min_size, max_size, step);
    if (max_size / step > 4096)
        return ln_fail(err, LN_ERR_ARG, "bucket step %d is too small for max size %d", step, max_size);
    int64_t area = (int64_t)max_w * max_h;
    int n_max = 1 + 2 * (max_size / step + 1);
    ln_size *tmp = malloc(sizeof(ln_size) * (size_t)n_max);
    if (!tmp)
        return ln_fail(err, LN_ERR_NOMEM, "out of memory");
    int n = 0;
    int side = (int)((int64_t)sqrt((double)area) / step) * step;
    if (side > 0) /* a step larger than the square's side gives no square bucket */
        tmp[n++] = (ln_size){side, side};
    for (int64_t w = min_size; w <= max_size && n + 2 <= n_max; w += step) {
        int64_t h = (area / w) / step * step;
        if (h > max_size)
            h = max_size;
        if (h >= min_size) {
            tmp[n++] = (ln_size){(int)w, (int)h};
            tmp[n++] = (ln_size){(int)h, (int)w};
        }
    }
    qsort(tmp, (size_t)n, sizeof *tmp, size_cmp);
    int u = 0;
    for (int i = 0; i < n; i++)
        if (u == 0 || size_cmp(&tmp[u - 1], &tmp[i]) != 0)
            tmp[u++] = tmp[i];
    if (out) {
        if (cap < u) {
            free(tmp);
            return ln_fail(err, LN_ERR_ARG, "bucket list needs %d entries, got room for %d", u, cap);
        }
        for (int i = 0; i < u; i++)
            out[i] = tmp[i];
    }
    *count = u;
    free(tmp);
    return LN_OK;
}

static int round_to_step(double x, int step)
{
    int v = (int)(x + 0.5);
    return v - v % step;
}

int ln_bucket_select(int width, int height, const ln_size *resos, int n, int no_upscale, int64_t max_area, int step,
                     ln_size *bucket, ln_size *resized, ln_error *err)
{
    if (width <= 0 || height <= 0 || step <= 0)
        return ln_fail(err, LN_ERR_ARG, "bad image size %dx%d for bucketing", width, height);
    double ar = (double)width / height;
    if (!no_upscale) {
        if (n <= 0)
            return ln_fail(err, LN_ERR_ARG, "no bucket resolutions");
        int best = -1;
        for (int i = 0; i < n; i++)
            if (resos[i].width == width && resos[i].height == height)
                best = i;
        if (best < 0) {
            double best_err = INFINITY;
            for (int i = 0; i < n; i++) {
                if (resos[i].width <= 0 || resos[i].height <= 0)
                    continue;
                double e = fabs((double)resos[i].width / resos[i].height - ar);
                if (e < best_err) { /* first minimum wins, like numpy argmin */
                    best_err = e;
                    best = i;
                }
            }
        }
        if (best < 0)
            return ln_fail(err, LN_ERR_ARG, "no usable bucket resolution among %d", n);
        *bucket = resos[best];
        double bar = (double)bucket->width / bucket->height;
        double scale = ar > bar ? (double)bucket->height / height : (double)bucket->width / width;
        resized->width = (int)(width * scale + 0.5);
        resized->height = (int)(height * scale + 0.5);
    } else {
        if ((int64_t)width * height > max_area) {
            double rw = sqrt((double)max_area * ar);
            double rh = (double)max_area / rw;
            int bw = round_to_step(rw, step);
            int bh_w = round_to_step(bw / ar, step);
            double ar_w = bh_w > 0 ? (double)bw / bh_w : 0;
            int bh = round_to_step(rh, step);
            int bw_h = round_to_step(bh * ar, step);
            double ar_h = bh > 0 ? (double)bw_h / bh : 0;
            if (fabs(ar_w - ar) < fabs(ar_h - ar))
                *resized = (ln_size){bw, (int)(bw / ar + 0.5)};
            else
                *resized = (ln_size){(int)(bh * ar + 0.5), bh};
        } else {
            *resized = (ln_size){width, height};
        }
        bucket->width = resized->width - resized->width % step;
        bucket->height = resized->height - resized->height % step;
        /* sd-scripts yields a zero-sized bucket for images under one step; refuse instead. */
        if (bucket->width <= 0 || bucket->height <= 0)
            return ln_fail(err, LN_ERR_ARG, "image %dx%d is smaller than one bucket step (%d px)", width, height,
                           step);
    }
    return LN_OK;
}

static int check_sizes(int width, int height, int out_w, int out_h, ln_error *err)
{
    if (width <= 0 || height <= 0 || out_w <= 0 || out_h <= 0)
        return ln_fail(err, LN_ERR_ARG, "bad sizes: image %dx%d, target %dx%d", width, height, out_w, out_h);
    return LN_OK;
}

int ln_plan_bucket(int width, int height, ln_size bucket, ln_size resized, ln_plan *plan, ln_error *err)
{
    int rc = check_sizes(width, height, bucket.width, bucket.height, err);
    if (rc != LN_OK)
        return rc;
    if (resized.width < bucket.width || resized.height < bucket.height)
        return ln_fail(err, LN_ERR_ARG, "resized size %dx%d does not cover bucket %dx%d", resized.width,
                       resized.height, bucket.width, bucket.height);
    /* Center trim in resized space (integer, as sd-scripts), mapped back to the source. */
    double sx = (double)width / resized.width, sy = (double)height / resized.height;
    int left = (resized.width - bucket.width) / 2, top = (resized.height - bucket.height) / 2;
    plan->out_width = plan->inner_width = bucket.width;
    plan->out_height = plan->inner_height = bucket.height;
    plan->offset_x = plan->offset_y = 0;
    plan->box[0] = (float)(left * sx);
    plan->box[1] = (float)(top * sy);
    plan->box[2] = (float)((left + bucket.width) * sx);
    plan->box[3] = (float)((top + bucket.height) * sy);
    return LN_OK;
}

int ln_plan_crop(int width, int height, int out_w, int out_h, ln_plan *plan, ln_error *err)
{
    int rc = check_sizes(width, height, out_w, out_h, err);
    if (rc != LN_OK)
        return rc;
    double box_w = width, box_h = height;
    if ((double)width * out_h > (double)height * out_w)
        box_w = (double)height * out_w / out_h; /* wider than the target: trim the sides */
    else
        box_h = (double)width * out_h / out_w;
    plan->out_width = plan->inner_width = out_w;
    plan->out_height = plan->inner_height = out_h;
    plan->offset_x = plan->offset_y = 0;
    plan->box[0] = (float)((width - box_w) / 2);
    plan->box[1] = (float)((height - box_h) / 2);
    plan->box[2] = (float)((width + box_w) / 2);
    plan->box[3] = (float)((height + box_h) / 2);
    return LN_OK;
}

int ln_plan_pad(int width, int height, int out_w, int out_h, ln_plan *plan, ln_error *err)
{
    int rc = check_sizes(width, height, out_w, out_h, err);
    if (rc != LN_OK)
        return rc;
    double scale = fmin((double)out_w / width, (double)out_h / height);
    int iw = (int)(width * scale + 0.5), ih = (int)(height * scale + 0.5);
    if (iw < 1)
        iw = 1;
    if (ih < 1)
        ih = 1;
    if (iw > out_w)
        iw = out_w;
    if (ih > out_h)
        ih = out_h;
    plan->out_width = out_w;
    plan->out_height = out_h;
    plan->inner_width = iw;
    plan->inner_height = ih;
    plan->offset_x = (out_w - iw) / 2;
    plan->offset_y = (out_h - ih) / 2;
    plan->box[0] = plan->box[1] = 0.0f;
    plan->box[2] = (float)width;
    plan->box[3] = (float)height;
    return LN_OK;
}
