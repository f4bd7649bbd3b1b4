/* Model-input preprocessing: one decoded RGB image -> one float32 slot of a vision model's batch,
 * by the rules of transformers' PIL image processors (BLIP: resize; CLIP: shortest edge + center
 * crop) or SmilingWolf's WD14 tagger app (white square pad + resize), and a batch of files on the
 * thread pool in ln_load_batch's shape (per-file status, a failed slot zero-filled).
 *
 * Arithmetic of a value, all in float32 (so a test can state its tolerance):
 *     t     = fl(pixel * scale)
 *     value = fl(fl(t - mean[c]) / std[c])
 * transformers computes t as fl(pixel * (double)scale) with scale a double (1/255): our float scale
 * can make t one float32 ulp (<= 6e-8 for t <= 1) off theirs, which 1/std at most amplifies (about 3.7x
 * for CLIP's std). The rest is the same float32 operations in the same order, so the difference is
 * within a few 1e-7. With scale 1, mean 0, std 1 (WD14) the value is the pixel, exactly. */
#include "ln_prep.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Largest slot side accepted: keeps 3 * width * height far from size_t limits on every platform. */
#define PREP_MAX_SIDE (1 << 20)

void ln_prep_opts_init(ln_prep_opts *opts)
{
    memset(opts, 0, sizeof *opts);
    ln_decode_opts_init(&opts->decode);
    opts->mode = LN_PREP_RESIZE;
    opts->width = opts->height = 224;
    opts->filter = LN_FILTER_BICUBIC;
    opts->layout = LN_PREP_NCHW_RGB;
    opts->scale = 1.0f / 255.0f;
    for (int c = 0; c < 3; c++)
        opts->std[c] = 1.0f;
    ln_settings_default(&opts->settings);
}

static int check_opts(const ln_prep_opts *o, ln_error *err)
{
    if (o->mode < LN_PREP_RESIZE || o->mode > LN_PREP_PAD_SQUARE)
        return ln_fail(err, LN_ERR_ARG, "unknown preprocessing mode %d", o->mode);
    if (o->width < 1 || o->height < 1 || o->width > PREP_MAX_SIDE || o->height > PREP_MAX_SIDE)
        return ln_fail(err, LN_ERR_ARG, "slot size must be between 1 and %d per side, got %dx%d", PREP_MAX_SIDE,
                       o->width, o->height);
    if (o->mode == LN_PREP_SHORT_CROP && (o->short_side < 1 || o->short_side > PREP_MAX_SIDE))
        return ln_fail(err, LN_ERR_ARG, "short_crop needs short_side between 1 and %d, got %d", PREP_MAX_SIDE,
                       o->short_side);
    if (o->filter < LN_FILTER_BOX || o->filter > LN_FILTER_LANCZOS)
        return ln_fail(err, LN_ERR_ARG, "unknown resampling filter %d", o->filter);
    if (o->layout != LN_PREP_NCHW_RGB && o->layout != LN_PREP_NHWC_BGR)
        return ln_fail(err, LN_ERR_ARG, "unknown layout %d", o->layout);
    if (!isfinite(o->scale))
        return ln_fail(err, LN_ERR_ARG, "scale must be a finite number");
    for (int c = 0; c < 3; c++) {
        if (!isfinite(o->mean[c]))
            return ln_fail(err, LN_ERR_ARG, "mean[%d] must be a finite number", c);
        if (!isfinite(o->std[c]) || o->std[c] == 0.0f)
            return ln_fail(err, LN_ERR_ARG, "std[%d] must be a finite non-zero number, got %g", c, (double)o->std[c]);
    }
    return LN_OK;
}

/* Every value a pixel can become, per channel (R, G, B): the arithmetic of the file comment, once. */
typedef struct {
    float v[3][256];
} prep_lut;

static void build_lut(const ln_prep_opts *o, prep_lut *lut)
{
    for (int c = 0; c < 3; c++)
        for (int p = 0; p < 256; p++) {
            float t = (float)p * o->scale;
            lut->v[c][p] = (t - o->mean[c]) / o->std[c];
        }
}

/* Where the slot's pixels come from along one axis: slot position o reads source o - dst0 + src0 when
 * that lies in [0, src_size), else it is pixel 0 (transformers' center_crop pads with zeros). */
typedef struct {
    int src0, dst0;
} axis_map;

/* transformers' center_crop on one axis: a larger source is cropped at floor((src - crop) / 2); a
 * smaller one is placed at ceil((crop - src) / 2) on zeros (its pad branch shifts by the ceil). */
static axis_map center_crop_axis(int src, int crop)
{
    axis_map m = {0, 0};
    if (src >= crop)
        m.src0 = (src - crop) / 2;
    else
        m.dst0 = (crop - src + 1) / 2;
    return m;
}

/* Writes the slot from `img` (RGB) through the lut in the chosen layout. */
static void write_slot(const ln_image *img, axis_map mx, axis_map my, const ln_prep_opts *o, const prep_lut *lut,
                       float *out)
{
    int W = o->width, H = o->height;
    size_t plane = (size_t)W * (size_t)H;
    /* Slot columns [xa, xb) read the source; the others are pixel 0. */
    int xa = mx.dst0 - mx.src0 > 0 ? mx.dst0 - mx.src0 : 0;
    int xb = img->width - mx.src0 + mx.dst0 < W ? img->width - mx.src0 + mx.dst0 : W;
    const float zero[3] = {lut->v[0][0], lut->v[1][0], lut->v[2][0]};
    for (int y = 0; y < H; y++) {
        int sy = y - my.dst0 + my.src0;
        const uint8_t *row = sy >= 0 && sy < img->height ? img->data + (size_t)sy * img->stride : NULL;
        int a = row ? xa : W, b = row ? xb : W;
        if (o->layout == LN_PREP_NCHW_RGB) {
            for (int c = 0; c < 3; c++) {
                float *dst = out + (size_t)c * plane + (size_t)y * (size_t)W;
                const float *lc = lut->v[c];
                for (int x = 0; x < a; x++)
                    dst[x] = zero[c];
                if (b > a) {
                    const uint8_t *src = row + (size_t)(a - mx.dst0 + mx.src0) * 3 + (size_t)c;
                    for (int x = a; x < b; x++, src += 3)
                        dst[x] = lc[*src];
                }
                for (int x = b > a ? b : a; x < W; x++)
                    dst[x] = zero[c];
            }
        } else {
            float *dst = out + (size_t)y * (size_t)W * 3;
            for (int x = 0; x < W; x++) {
                float *px = dst + (size_t)x * 3;
                if (x >= a && x < b) {
                    const uint8_t *s = row + (size_t)(x - mx.dst0 + mx.src0) * 3;
                    px[0] = lut->v[2][s[2]];
                    px[1] = lut->v[1][s[1]];
                    px[2] = lut->v[0][s[0]];
                } else {
                    px[0] = zero[2];
                    px[1] = zero[1];
                    px[2] = zero[0];
                }
            }
        }
    }
}

static uint64_t pixel_limit(const ln_prep_opts *o)
{
    return o->decode.max_pixels ? o->decode.max_pixels : LN_DEFAULT_MAX_PIXELS;
}

/* `src` resized to w x h into *tmp (allocated here), or src itself when the size already matches:
 * Pillow's resize returns a copy then, so skipping it changes nothing. *use points at the result. */
static int resize_to(const ln_image *src, int w, int h, const ln_prep_opts *o, ln_image *tmp, const ln_image **use,
                     ln_error *err)
{
    if (src->width == w && src->height == h) {
        *use = src;
        return LN_OK;
    }
    int rc = ln_image_alloc(tmp, w, h, 3, err);
    if (rc == LN_OK)
        rc = ln_resample(src, tmp, NULL, (ln_filter)o->filter, &o->settings, err);
    *use = tmp;
    return rc;
}

/* transformers' get_resize_output_image_size(default_to_square=False): the short edge becomes
 * short_side, the long one int(short_side * long / short) (a double quotient, truncated); a square
 * counts its width as the short edge. */
static int short_side_size(const ln_image *img, const ln_prep_opts *o, int *nw, int *nh, ln_error *err)
{
    int w = img->width, h = img->height;
    int shrt = w <= h ? w : h, lng = w <= h ? h : w;
    double q = (double)o->short_side * (double)lng / (double)shrt; /* exact product, one rounding */
    uint64_t limit = pixel_limit(o);
    if (q >= (double)PREP_MAX_SIDE + 1.0 || (double)o->short_side * (double)(int)q > (double)limit)
        return ln_fail(err, LN_ERR_LIMIT,
                       "a %dx%d image resized to short side %d is %.0f pixels long, over the %llu-pixel limit "
                       "(max_pixels)",
                       w, h, o->short_side, q, (unsigned long long)limit);
    int n_long = (int)q;
    if (n_long < 1) /* cannot happen (long >= short), but never hand the resampler a zero size */
        n_long = 1;
    *nw = w <= h ? o->short_side : n_long;
    *nh = w <= h ? n_long : o->short_side;
    return LN_OK;
}

/* SmilingWolf's app: paste onto a white square of side max(w, h) at ((side - w) / 2, (side - h) / 2). */
static int pad_square(const ln_image *img, const ln_prep_opts *o, ln_image *canvas, ln_error *err)
{
    int w = img->width, h = img->height, side = w > h ? w : h;
    /* The canvas of a decodable panorama (up to 1:4) is allowed: 4x the decode limit. */
    uint64_t limit = pixel_limit(o) * 4;
    if ((uint64_t)side * (uint64_t)side > limit)
        return ln_fail(err, LN_ERR_LIMIT,
                       "a %dx%d image pads to a %dx%d square, over the %llu-pixel limit (max_pixels)", w, h, side,
                       side, (unsigned long long)limit);
    int rc = ln_image_alloc(canvas, side, side, 3, err);
    if (rc != LN_OK)
        return rc;
    memset(canvas->data, 255, canvas->stride * (size_t)side);
    int x0 = (side - w) / 2, y0 = (side - h) / 2;
    for (int y = 0; y < h; y++)
        memcpy(canvas->data + (size_t)(y0 + y) * canvas->stride + (size_t)x0 * 3, img->data + (size_t)y * img->stride,
               (size_t)w * 3);
    return LN_OK;
}

/* One image into one slot; opts checked and lut built by the caller. */
static int prep_one(const ln_image *rgb, const ln_prep_opts *o, const prep_lut *lut, float *out, ln_error *err)
{
    ln_image tmp = {0}, canvas = {0};
    const ln_image *use = rgb;
    axis_map mx = {0, 0}, my = {0, 0};
    int rc = LN_OK;
    switch (o->mode) {
    case LN_PREP_RESIZE:
        rc = resize_to(rgb, o->width, o->height, o, &tmp, &use, err);
        break;
    case LN_PREP_SHORT_CROP: {
        int nw = 0, nh = 0;
        rc = short_side_size(rgb, o, &nw, &nh, err);
        if (rc == LN_OK)
            rc = resize_to(rgb, nw, nh, o, &tmp, &use, err);
        mx = center_crop_axis(nw, o->width);
        my = center_crop_axis(nh, o->height);
        break;
    }
    case LN_PREP_PAD_SQUARE:
        if (rgb->width == rgb->height) { /* already square: the canvas would be the image */
            rc = resize_to(rgb, o->width, o->height, o, &tmp, &use, err);
        } else {
            rc = pad_square(rgb, o, &canvas, err);
            if (rc == LN_OK)
                rc = resize_to(&canvas, o->width, o->height, o, &tmp, &use, err);
        }
        break;
    default:
        rc = ln_fail(err, LN_ERR_ARG, "unknown preprocessing mode %d", o->mode);
    }
    if (rc == LN_OK)
        write_slot(use, mx, my, o, lut, out);
    ln_image_free(&tmp);
    ln_image_free(&canvas);
    return rc;
}

static int check_rgb(const ln_image *rgb, ln_error *err)
{
    if (!rgb || !rgb->data || rgb->width < 1 || rgb->height < 1)
        return ln_fail(err, LN_ERR_ARG, "ln_prep_image: empty image");
    if (rgb->channels != 3)
        return ln_fail(err, LN_ERR_ARG, "ln_prep_image: needs an RGB image (3 channels), got %d", rgb->channels);
    if (rgb->stride < (size_t)rgb->width * 3)
        return ln_fail(err, LN_ERR_ARG, "ln_prep_image: row stride %zu is shorter than a row", rgb->stride);
    return LN_OK;
}

int ln_prep_image(const ln_image *rgb, const ln_prep_opts *opts, float *out, ln_error *err)
{
    if (!opts || !out)
        return ln_fail(err, LN_ERR_ARG, "ln_prep_image: NULL argument");
    int rc = check_opts(opts, err);
    if (rc == LN_OK)
        rc = check_rgb(rgb, err);
    if (rc != LN_OK)
        return rc;
    prep_lut *lut = malloc(sizeof *lut);
    if (!lut)
        return ln_fail(err, LN_ERR_NOMEM, "out of memory for the value table");
    build_lut(opts, lut);
    rc = prep_one(rgb, opts, lut, out, err);
    free(lut);
    return rc;
}

typedef struct {
    const char *const *paths;
    const ln_prep_opts *opts;
    const prep_lut *lut;
    float *out;
    size_t slot; /* floats per slot */
    int *status;
    ln_error *errors;
} prep_ctx;

static int prep_file(const prep_ctx *ctx, size_t i, ln_error *err)
{
    const char *path = ctx->paths[i];
    if (!path)
        return ln_fail(err, LN_ERR_ARG, "path %zu is NULL", i);
    ln_image img = {0};
    ln_decode_info info;
    int rc = ln_decode_file(path, &ctx->opts->decode, &img, &info, err);
    if (rc != LN_OK)
        return rc;
    if (!img.data)
        return ln_fail(err, LN_ERR_FORMAT, "%s: %s: %s", path, ln_reason_name(info.reason), info.message);
    rc = prep_one(&img, ctx->opts, ctx->lut, ctx->out + i * ctx->slot, err);
    ln_image_free(&img);
    if (rc != LN_OK && err) { /* name the file, as the decoder's reasons do */
        ln_error inner = *err;
        ln_fail(err, rc, "%s: %s", path, inner.msg);
    }
    return rc;
}

static void prep_task(void *vctx, size_t i, int worker)
{
    (void)worker;
    prep_ctx *ctx = vctx;
    ln_error local;
    ln_error *e = ctx->errors ? &ctx->errors[i] : &local;
    ln_error_clear(e);
    ctx->status[i] = prep_file(ctx, i, e);
    if (ctx->status[i] != LN_OK) /* never half a picture: a failed slot is zeros */
        memset(ctx->out + i * ctx->slot, 0, ctx->slot * sizeof(float));
}

int ln_prep_files(const char *const *paths, size_t n, const ln_prep_opts *opts, int threads, float *out,
                  int *status, ln_error *errors, ln_error *err)
{
    if (!opts)
        return ln_fail(err, LN_ERR_ARG, "ln_prep_files: NULL argument");
    int rc = check_opts(opts, err);
    if (rc != LN_OK || n == 0)
        return rc;
    if (!paths || !out || !status)
        return ln_fail(err, LN_ERR_ARG, "ln_prep_files: NULL argument");
    size_t slot, total;
    if (!ln_mul_size((size_t)opts->width * 3, (size_t)opts->height, &slot) || !ln_mul_size(slot, n, &total) ||
        !ln_mul_size(total, sizeof(float), &total))
        return ln_fail(err, LN_ERR_LIMIT, "a batch of %zu slots of %dx%d is too large", n, opts->width, opts->height);
    prep_lut *lut = malloc(sizeof *lut);
    if (!lut)
        return ln_fail(err, LN_ERR_NOMEM, "out of memory for the value table");
    build_lut(opts, lut);
    prep_ctx ctx = {paths, opts, lut, out, slot, status, errors};
    ln_parallel_for(threads, n, 1, prep_task, &ctx);
    free(lut);
    return LN_OK;
}
