/* Pillow-exact resize (two fixed-point passes, Resample.c) and convert("L") (Convert.c),
 * with the scalar reference passes. The AVX2 passes live in resample_avx2.c. */
#include "resample_internal.h"

#include <stdlib.h>
#include <string.h>

void ln_hrow_scalar(const ln_kernels *kt, const uint8_t *src, int channels, uint8_t *out)
{
    for (int xx = 0; xx < kt->out_size; xx++) {
        const int32_t *k = kt->k + (size_t)xx * kt->kstride;
        const uint8_t *p = src + (size_t)kt->start[xx] * channels;
        int n = kt->count[xx];
        for (int c = 0; c < channels; c++) {
            uint32_t ss = LN_BIAS;
            for (int x = 0; x < n; x++)
                ss += (uint32_t)p[x * channels + c] * (uint32_t)k[x];
            out[xx * channels + c] = ln_clip8(ss);
        }
    }
}

void ln_vpass_scalar(const ln_kernels *kt, const uint8_t *src, int row0, size_t stride, size_t width_bytes,
                     uint8_t *out, size_t out_stride)
{
    enum { BLOCK = 64 };
    uint32_t acc[BLOCK];
    for (int yy = 0; yy < kt->out_size; yy++) {
        const int32_t *k = kt->k + (size_t)yy * kt->kstride;
        const uint8_t *rows = src + (size_t)(kt->start[yy] - row0) * stride;
        int n = kt->count[yy];
        uint8_t *o = out + (size_t)yy * out_stride;
        /* Column blocks keep the accumulators in cache while walking down the rows. */
        for (size_t x0 = 0; x0 < width_bytes; x0 += BLOCK) {
            size_t bw = width_bytes - x0 < BLOCK ? width_bytes - x0 : BLOCK;
            for (size_t x = 0; x < bw; x++)
                acc[x] = LN_BIAS;
            for (int y = 0; y < n; y++) {
                const uint8_t *r = rows + (size_t)y * stride + x0;
                uint32_t ky = (uint32_t)k[y];
                for (size_t x = 0; x < bw; x++)
                    acc[x] += (uint32_t)r[x] * ky;
            }
            for (size_t x = 0; x < bw; x++)
                o[x0 + x] = ln_clip8(acc[x]);
        }
    }
}

/* ITU-R 601-2 luma in Pillow's 16-bit fixed point: (R*19595 + G*38470 + B*7471 + 0x8000) >> 16. */
void ln_gray_row_scalar(const uint8_t *src, int channels, int width, uint8_t *out)
{
    for (int x = 0; x < width; x++, src += channels)
        out[x] = (uint8_t)(((uint32_t)src[0] * 19595u + (uint32_t)src[1] * 38470u + (uint32_t)src[2] * 7471u +
                            0x8000u) >> 16);
}

void ln_gray_row(const uint8_t *src, int channels, int width, uint8_t *out, int avx2)
{
#ifdef LN_X86_SIMD
    if (avx2) {
        ln_gray_row_avx2(src, channels, width, out);
        return;
    }
#else
    (void)avx2;
#endif
    ln_gray_row_scalar(src, channels, width, out);
}

static int check_image(const ln_image *img, const char *what, ln_error *err)
{
    if (!img || !img->data)
        return ln_fail(err, LN_ERR_ARG, "%s image has no pixel buffer", what);
    if (img->width <= 0 || img->height <= 0)
        return ln_fail(err, LN_ERR_ARG, "%s image size %dx%d must be positive", what, img->width, img->height);
    if (img->channels != 1 && img->channels != 3 && img->channels != 4)
        return ln_fail(err, LN_ERR_ARG, "%s image has %d channels; expected 1, 3 or 4", what, img->channels);
    if (img->stride < (size_t)img->width * (size_t)img->channels)
        return ln_fail(err, LN_ERR_ARG, "%s image row stride %zu is shorter than a row", what, img->stride);
    return LN_OK;
}

static void copy_rows(const uint8_t *src, size_t src_stride, uint8_t *dst, size_t dst_stride, size_t row_bytes,
                      int rows)
{
    for (int y = 0; y < rows; y++)
        memcpy(dst + (size_t)y * dst_stride, src + (size_t)y * src_stride, row_bytes);
}

int ln_use_avx2(const ln_settings *settings)
{
#ifdef LN_X86_SIMD
    return settings && settings->simd >= LN_SIMD_AVX2;
#else
    (void)settings;
    return 0;
#endif
}

/* Horizontal pass over `rows` rows of `width` pixels, row r at src + r * src_stride. */
static int horizontal_pass(const ln_kernels *kh, const uint8_t *src, size_t src_stride, int channels, int width,
                           int rows, uint8_t *dst, size_t dst_stride, int avx2, ln_error *err)
{
#ifdef LN_X86_SIMD
    if (avx2 && kh->simd_ok) {
        size_t lanes = (size_t)(channels == 1 ? 1 : 4);
        /* Rows 64-byte aligned: the 1-channel kernels read them in aligned 32-byte blocks. */
        size_t row_len = (((size_t)width + LN_ROW_PAD) * lanes + 31) & ~(size_t)31;
        int16_t *buf = aligned_alloc(64, 4 * row_len * sizeof *buf);
        if (!buf)
            return ln_fail(err, LN_ERR_NOMEM, "out of memory for resample row buffers");
        int y = 0;
        if (channels == 1) {
            for (; y + 3 < rows; y += 4) {
                const int16_t *r[4] = {buf, buf + row_len, buf + 2 * row_len, buf + 3 * row_len};
                uint8_t *o[4];
                for (int i = 0; i < 4; i++) {
                    ln_widen_row1_avx2(src + (size_t)(y + i) * src_stride, width, (int16_t *)r[i]);
                    o[i] = dst + (size_t)(y + i) * dst_stride;
                }
                ln_hrow1x4_avx2(kh, r, o);
            }
            for (; y < rows; y++) {
                ln_widen_row1_avx2(src + (size_t)y * src_stride, width, buf);
                ln_hrow1_avx2(kh, buf, dst + (size_t)y * dst_stride);
            }
        } else {
            for (; y < rows; y++) {
                ln_widen_row4_avx2(src + (size_t)y * src_stride, channels, width, buf);
                ln_hrow4_avx2(kh, buf, channels, dst + (size_t)y * dst_stride);
            }
        }
        free(buf);
        return LN_OK;
    }
#else
    (void)avx2;
    (void)err;
    (void)width;
#endif
    for (int y = 0; y < rows; y++)
        ln_hrow_scalar(kh, src + (size_t)y * src_stride, channels, dst + (size_t)y * dst_stride);
    return LN_OK;
}

void ln_vpass(const ln_kernels *kv, const uint8_t *src, int row0, size_t stride, size_t width_bytes,
              size_t readable, uint8_t *out, size_t out_stride, int avx2)
{
#ifdef LN_X86_SIMD
    if (avx2 && kv->simd_ok) {
        ln_vpass_avx2(kv, src, row0, stride, width_bytes, readable, out, out_stride);
        return;
    }
#else
    (void)avx2;
    (void)readable;
#endif
    ln_vpass_scalar(kv, src, row0, stride, width_bytes, out, out_stride);
}

int ln_resample_vertical_first(int in_w, int in_h, int out_w, int out_h, int pillow_compat)
{
    /* Pillow >= 13 (python-pillow/Pillow#9549) resizes vertically first when the height
     * shrinks by more than twice as many pixels as the width; the 8-bit rounding between
     * the passes makes the order visible in the result. Older Pillow always starts with the
     * horizontal pass (settings.pillow_compat < 13, LORA_NATIVE_PILLOW_COMPAT=12). */
    if (pillow_compat < 13)
        return 0;
    return out_h < in_h && 2 * ((long long)in_w - out_w) < (long long)in_h - out_h;
}

int ln_resample_run(const ln_image *in, ln_image *out, const ln_kernels *kh, const ln_kernels *kv, int need_h,
                    int need_v, const ln_settings *settings, ln_error *err)
{
    int c = in->channels, W = in->width, H = in->height, ow = out->width, oh = out->height;
    size_t in_row = (size_t)W * c, out_row = (size_t)ow * c;
    int avx2 = ln_use_avx2(settings), rc = LN_OK;
    uint8_t *temp = NULL;
    if (!need_h && !need_v) {
        copy_rows(in->data, in->stride, out->data, out->stride, out_row, oh);
        return LN_OK;
    }
    if (!need_h) {
        ln_vpass(kv, in->data, 0, in->stride, out_row, in_row, out->data, out->stride, avx2);
        return LN_OK;
    }
    if (need_v && ln_resample_vertical_first(W, H, ow, oh, settings->pillow_compat)) {
        size_t tstride = (in_row + 31) & ~(size_t)31, bytes;
        if (!ln_mul_size(tstride, (size_t)oh, &bytes))
            return ln_fail(err, LN_ERR_LIMIT, "resample intermediate image is too large");
        if (!(temp = malloc(bytes)))
            return ln_fail(err, LN_ERR_NOMEM, "out of memory for a %dx%d intermediate image", W, oh);
        ln_vpass(kv, in->data, 0, in->stride, in_row, in_row, temp, tstride, avx2);
        rc = horizontal_pass(kh, temp, tstride, c, W, oh, out->data, out->stride, avx2, err);
        free(temp);
        return rc;
    }
    /* Horizontal first, over only the source rows the vertical pass will read (Pillow's ybox). */
    int first = kv->first, last = kv->last;
    const uint8_t *rows = in->data + (size_t)first * in->stride;
    if (!need_v) {
        if (last - first != oh)
            return ln_fail(err, LN_ERR_INTERNAL, "resample: %d source rows for %d output rows", last - first, oh);
        return horizontal_pass(kh, rows, in->stride, c, W, oh, out->data, out->stride, avx2, err);
    }
    /* Rows padded so the vertical vectors may read a little past the row end. */
    size_t tstride = (out_row + 31) & ~(size_t)31, bytes;
    if (!ln_mul_size(tstride, (size_t)(last - first > 0 ? last - first : 1), &bytes))
        return ln_fail(err, LN_ERR_LIMIT, "resample intermediate image is too large");
    if (!(temp = malloc(bytes)))
        return ln_fail(err, LN_ERR_NOMEM, "out of memory for a %dx%d intermediate image", ow, last - first);
    rc = horizontal_pass(kh, rows, in->stride, c, W, last - first, temp, tstride, avx2, err);
    if (rc == LN_OK)
        ln_vpass(kv, temp, first, tstride, out_row, tstride, out->data, out->stride, avx2);
    free(temp);
    return rc;
}

int ln_resample(const ln_image *in, ln_image *out, const float *box, ln_filter filter, const ln_settings *settings,
                ln_error *err)
{
    ln_settings fallback;
    settings = ln_settings_or_default(settings, &fallback);
    int rc;
    if ((rc = check_image(in, "source", err)) != LN_OK || (rc = check_image(out, "target", err)) != LN_OK)
        return rc;
    if (out->channels != in->channels)
        return ln_fail(err, LN_ERR_ARG, "target has %d channels but the source has %d", out->channels,
                       in->channels);
    if (filter < LN_FILTER_BOX || filter > LN_FILTER_LANCZOS)
        return ln_fail(err, LN_ERR_ARG, "unknown resampling filter %d", (int)filter);
    float b[4] = {0.0f, 0.0f, (float)in->width, (float)in->height};
    if (box)
        memcpy(b, box, sizeof b);
    for (int i = 0; i < 4; i++)
        if (!(b[i] == b[i]) || b[i] > 1e9f || b[i] < -1e9f)
            return ln_fail(err, LN_ERR_ARG, "box coordinates must be finite numbers");
    /* Pillow's own box checks, in its order and words. */
    if (b[0] < 0 || b[1] < 0)
        return ln_fail(err, LN_ERR_ARG, "box offset can't be negative");
    if (b[2] > in->width || b[3] > in->height)
        return ln_fail(err, LN_ERR_ARG, "box can't exceed original image size");
    if (b[2] - b[0] < 0 || b[3] - b[1] < 0)
        return ln_fail(err, LN_ERR_ARG, "box can't be empty");

    int c = in->channels, ow = out->width, oh = out->height;
    /* Integer box of the target's size: Pillow crops instead of resampling. */
    if (b[0] - (int)b[0] == 0 && b[2] - b[0] == ow && b[1] - (int)b[1] == 0 && b[3] - b[1] == oh) {
        copy_rows(in->data + (size_t)(int)b[1] * in->stride + (size_t)(int)b[0] * c, in->stride, out->data,
                  out->stride, (size_t)ow * c, oh);
        return LN_OK;
    }
    int need_h = ln_resample_need_pass(in->width, b[0], b[2], ow);
    int need_v = ln_resample_need_pass(in->height, b[1], b[3], oh);
    ln_kernels kv, kh;
    memset(&kh, 0, sizeof kh);
    if ((rc = ln_kernels_build(&kv, in->height, b[1], b[3], oh, filter, settings, err)) != LN_OK)
        return rc;
    if (need_h)
        rc = ln_kernels_build(&kh, in->width, b[0], b[2], ow, filter, settings, err);
    if (rc == LN_OK)
        rc = ln_resample_run(in, out, need_h ? &kh : NULL, &kv, need_h, need_v, settings, err);
    ln_kernels_free(&kh);
    ln_kernels_free(&kv);
    return rc;
}

int ln_to_gray(const ln_image *in, ln_image *out, const ln_settings *settings, ln_error *err)
{
    ln_settings fallback;
    settings = ln_settings_or_default(settings, &fallback);
    int rc;
    if ((rc = check_image(in, "source", err)) != LN_OK)
        return rc;
    if (!out || !out->data || out->channels != 1 || out->width != in->width || out->height != in->height ||
        out->stride < (size_t)out->width)
        return ln_fail(err, LN_ERR_ARG, "gray target must be a %dx%d 1-channel image", in->width, in->height);
    if (in->channels == 1) {
        copy_rows(in->data, in->stride, out->data, out->stride, (size_t)in->width, in->height);
        return LN_OK;
    }
    int avx2 = ln_use_avx2(settings);
    for (int y = 0; y < in->height; y++)
        ln_gray_row(in->data + (size_t)y * in->stride, in->channels, in->width, out->data + (size_t)y * out->stride,
                    avx2);
    return LN_OK;
}
