#include "ln_checks.h"

#include <math.h>
#include <string.h>

#include "ln_geometry.h"
#include "ln_resample.h"

int ln_quality_downscale(const ln_image *rgb, ln_image *small, const ln_settings *settings, ln_error *err)
{
    if (!rgb || !rgb->data || rgb->channels != 3)
        return ln_fail(err, LN_ERR_ARG, "quality metrics need an RGB image");
    int w = rgb->width, h = rgb->height;
    ln_size fit = ln_fit_within(w, h, LN_CHECKS_SIDE);
    int lw = fit.width, lh = fit.height;
    int rc = ln_image_alloc(small, lw, lh, 3, err);
    if (rc != LN_OK)
        return rc;
    if (lw == w && lh == h) {
        for (int y = 0; y < h; y++)
            memcpy(small->data + (size_t)y * small->stride, rgb->data + (size_t)y * rgb->stride, (size_t)w * 3);
        return LN_OK;
    }
    rc = ln_resample(rgb, small, NULL, LN_FILTER_BOX, settings, err);
    if (rc != LN_OK)
        ln_image_free(small);
    return rc;
}

int ln_quality_compute(const ln_image *rgb, ln_quality *q, const ln_settings *settings, ln_error *err)
{
    ln_image small;
    memset(q, 0, sizeof *q);
    int rc = ln_quality_downscale(rgb, &small, settings, err);
    if (rc != LN_OK)
        return rc;
    rc = ln_quality_measure(&small, q, settings, err);
    ln_image_free(&small);
    return rc;
}

int ln_quality_measure(const ln_image *small_in, ln_quality *q, const ln_settings *settings, ln_error *err)
{
    memset(q, 0, sizeof *q);
    if (!small_in || !small_in->data || small_in->channels != 3)
        return ln_fail(err, LN_ERR_ARG, "quality metrics need an RGB image");
    const ln_image small = *small_in;
    ln_image gray;
    int rc = ln_image_alloc(&gray, small.width, small.height, 1, err);
    if (rc == LN_OK)
        rc = ln_to_gray(&small, &gray, settings, err);
    if (rc != LN_OK) {
        ln_image_free(&gray);
        return rc;
    }
    int w = gray.width, h = gray.height;
    size_t n = (size_t)w * h;
    uint64_t hist[256] = {0};
    uint64_t colored = 0, sum = 0;
    for (int y = 0; y < h; y++) {
        const uint8_t *g = gray.data + (size_t)y * gray.stride;
        const uint8_t *c = small.data + (size_t)y * small.stride;
        for (int x = 0; x < w; x++, c += 3) {
            hist[g[x]]++;
            sum += g[x];
            int mx = c[0] > c[1] ? c[0] : c[1], mn = c[0] < c[1] ? c[0] : c[1];
            mx = c[2] > mx ? c[2] : mx;
            mn = c[2] < mn ? c[2] : mn;
            colored += (mx - mn) > LN_CHECKS_CHROMA;
        }
    }
    q->mean_luma = (double)sum / (double)n;
    q->color_fraction = (double)colored / (double)n;
    /* Percentiles by nearest rank on the histogram. */
    uint64_t rank1 = (uint64_t)ceil(0.01 * (double)n), rank99 = (uint64_t)ceil(0.99 * (double)n), acc = 0;
    int p1 = -1, p99 = -1;
    double entropy = 0.0;
    for (int v = 0; v < 256; v++) {
        acc += hist[v];
        if (p1 < 0 && acc >= rank1)
            p1 = v;
        if (p99 < 0 && acc >= rank99)
            p99 = v;
        if (hist[v]) {
            double p = (double)hist[v] / (double)n;
            entropy -= p * log2(p);
        }
    }
    q->p1_luma = p1 < 0 ? 0 : p1;
    q->p99_luma = p99 < 0 ? 255 : p99;
    q->entropy = entropy;
    /* Laplacian variance over interior pixels; images under 3 px have none (blur 0). */
    if (w >= 3 && h >= 3) {
        double lsum = 0.0, lsq = 0.0;
        size_t count = 0;
        for (int y = 1; y < h - 1; y++) {
            const uint8_t *up = gray.data + (size_t)(y - 1) * gray.stride;
            const uint8_t *row = gray.data + (size_t)y * gray.stride;
            const uint8_t *dn = gray.data + (size_t)(y + 1) * gray.stride;
            for (int x = 1; x < w - 1; x++) {
                int lap = up[x] + dn[x] + row[x - 1] + row[x + 1] - 4 * row[x];
                lsum += lap;
                lsq += (double)lap * lap;
                count++;
            }
        }
        double mean = lsum / (double)count;
        q->blur = lsq / (double)count - mean * mean;
    }
    ln_image_free(&gray);
    return LN_OK;
}
