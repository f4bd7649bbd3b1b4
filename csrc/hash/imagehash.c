/* aHash, dHash and pHash as imagehash 4.x computes them (hash_size 8): convert("L"),
 * Lanczos resize to 8x8 / 9x8 / 32x32, then mean / neighbour / DCT-median bits.
 * The luma is computed once per row and the three horizontal passes run on that row
 * while it is in cache; each resize is still exactly Pillow's (same tables, same clips). */
#include "ln_hash.h"

#include "../image/resample_internal.h"
#include "dct_internal.h"

#include <stdlib.h>
#include <string.h>

enum { T_AHASH, T_DHASH, T_PHASH, N_TARGETS };
static const int TARGET_W[N_TARGETS] = {8, 9, 32};
static const int TARGET_H[N_TARGETS] = {8, 8, 32};
/* Intermediate rows: wide enough for every target and for whole 16-byte vectors. */
#define TEMP_STRIDE 32
/* Tables one image needs: 3 widths + 2 heights; twice that keeps two image sizes warm. */
#define CACHE_SLOTS 10

typedef struct {
    ln_kernels table[CACHE_SLOTS];
    int valid[CACHE_SLOTS];
    int pinned[CACHE_SLOTS]; /* in use by the image being hashed: never evicted */
    int next;
    ln_dct32_plan dct;
    uint8_t *scratch;
    size_t scratch_size;
    ln_settings settings;
} hash_ctx;

typedef struct {
    int w, h, need_h, need_v;
    const ln_kernels *kh, *kv;
    uint8_t *temp; /* horizontal results for source rows [kv->first, kv->last) */
    uint8_t out[32 * 32];
} hash_target;

static void ctx_init(hash_ctx *ctx, const ln_settings *settings)
{
    memset(ctx, 0, sizeof *ctx);
    ln_dct32_plan_init(&ctx->dct);
    ln_settings fallback;
    ctx->settings = *ln_settings_or_default(settings, &fallback);
}

static void ctx_free(hash_ctx *ctx)
{
    for (int i = 0; i < CACHE_SLOTS; i++)
        if (ctx->valid[i])
            ln_kernels_free(&ctx->table[i]);
    free(ctx->scratch);
    memset(ctx, 0, sizeof *ctx);
}

/* Lanczos table for a whole-image axis of in_size -> out_size, cached in the context. */
static int ctx_kernels(hash_ctx *ctx, int in_size, int out_size, const ln_kernels **kt, ln_error *err)
{
    for (int i = 0; i < CACHE_SLOTS; i++)
        if (ctx->valid[i] && ctx->table[i].in_size == in_size && ctx->table[i].out_size == out_size) {
            ctx->pinned[i] = 1;
            *kt = &ctx->table[i];
            return LN_OK;
        }
    int slot = -1;
    for (int n = 0; n < CACHE_SLOTS && slot < 0; n++) {
        int i = (ctx->next + n) % CACHE_SLOTS;
        if (!ctx->pinned[i])
            slot = i;
    }
    if (slot < 0)
        return ln_fail(err, LN_ERR_INTERNAL, "hash table cache exhausted");
    if (ctx->valid[slot]) {
        ln_kernels_free(&ctx->table[slot]);
        ctx->valid[slot] = 0;
    }
    int rc = ln_kernels_build(&ctx->table[slot], in_size, 0.0f, (float)in_size, out_size, LN_FILTER_LANCZOS,
                              &ctx->settings, err);
    if (rc != LN_OK)
        return rc;
    ctx->valid[slot] = ctx->pinned[slot] = 1;
    ctx->next = (slot + 1) % CACHE_SLOTS;
    *kt = &ctx->table[slot];
    return LN_OK;
}

static int ctx_reserve(hash_ctx *ctx, size_t bytes, ln_error *err)
{
    if (bytes <= ctx->scratch_size)
        return LN_OK;
    free(ctx->scratch);
    /* 64-byte aligned so the widened rows start on a cache line (see resample_coeffs.c). */
    bytes = (bytes + 63) & ~(size_t)63;
    ctx->scratch = aligned_alloc(64, bytes);
    ctx->scratch_size = ctx->scratch ? bytes : 0;
    if (!ctx->scratch)
        return ln_fail(err, LN_ERR_NOMEM, "out of memory for %zu bytes of hash scratch", bytes);
    return LN_OK;
}

static size_t round32(size_t n)
{
    return (n + 31) & ~(size_t)31;
}

static uint64_t pack_bits(const int *bits)
{
    /* imagehash prints the flattened bool array as one binary number, first element first. */
    uint64_t v = 0;
    for (int i = 0; i < 64; i++)
        v = (v << 1) | (uint64_t)(bits[i] != 0);
    return v;
}

static uint64_t ahash_bits(const uint8_t *px)
{
    /* pixels > mean, with mean = sum / 64 exact in double: compare 64 * p with the sum. */
    unsigned sum = 0;
    int bits[64];
    for (int i = 0; i < 64; i++)
        sum += px[i];
    for (int i = 0; i < 64; i++)
        bits[i] = 64u * px[i] > sum;
    return pack_bits(bits);
}

static uint64_t dhash_bits(const uint8_t *px)
{
    int bits[64];
    for (int r = 0; r < 8; r++)
        for (int c = 0; c < 8; c++)
            bits[r * 8 + c] = px[r * 9 + c + 1] > px[r * 9 + c];
    return pack_bits(bits);
}

static uint64_t phash_bits(const ln_dct32_plan *plan, const uint8_t *px)
{
    double block[32 * 32], low[64], sorted[64];
    int bits[64];
    for (int i = 0; i < 32 * 32; i++)
        block[i] = px[i];
    ln_dct2_32x32_plan(plan, block);
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 8; x++)
            low[y * 8 + x] = block[y * 32 + x];
    memcpy(sorted, low, sizeof low);
    for (int i = 1; i < 64; i++) {
        double v = sorted[i];
        int j = i - 1;
        for (; j >= 0 && sorted[j] > v; j--)
            sorted[j + 1] = sorted[j];
        sorted[j + 1] = v;
    }
    /* numpy.median of an even count: mean of the two middle values, (a + b) / 2. */
    double med = (sorted[31] + sorted[32]) / 2;
    for (int i = 0; i < 64; i++)
        bits[i] = low[i] > med;
    return pack_bits(bits);
}

/* Up to ROWS_AT_ONCE source rows through a target's horizontal pass (or a plain copy when it has none). */
#define ROWS_AT_ONCE 4
static void target_rows(hash_target *t, int y, int nrows, const uint8_t *const gray[ROWS_AT_ONCE],
                        int16_t *const wide[ROWS_AT_ONCE], int avx2)
{
    int first = t->kv->first, last = t->kv->last, inside = 0;
    uint8_t *o[ROWS_AT_ONCE] = {NULL};
    for (int r = 0; r < nrows; r++)
        if (y + r >= first && y + r < last) {
            o[r] = t->temp + (size_t)(y + r - first) * TEMP_STRIDE;
            inside++;
        }
    if (!t->need_h) {
        for (int r = 0; r < nrows; r++)
            if (o[r])
                memcpy(o[r], gray[r], (size_t)t->w);
        return;
    }
#ifdef LN_X86_SIMD
    if (avx2 && t->kh->simd_ok) {
        if (inside == ROWS_AT_ONCE) {
            ln_hrow1x4_avx2(t->kh, (const int16_t *const *)wide, o);
            return;
        }
        for (int r = 0; r < nrows; r++)
            if (o[r])
                ln_hrow1_avx2(t->kh, wide[r], o[r]);
        return;
    }
#else
    (void)wide;
    (void)avx2;
    (void)inside;
#endif
    for (int r = 0; r < nrows; r++)
        if (o[r])
            ln_hrow_scalar(t->kh, gray[r], 1, o[r]);
}

static int hash_image(hash_ctx *ctx, const ln_image *img, ln_image_hashes *res, ln_error *err)
{
    if (!img || !img->data || img->width <= 0 || img->height <= 0)
        return ln_fail(err, LN_ERR_ARG, "image to hash is empty");
    if (img->channels != 1 && img->channels != 3 && img->channels != 4)
        return ln_fail(err, LN_ERR_ARG, "image to hash has %d channels; expected 1, 3 or 4", img->channels);
    if (img->stride < (size_t)img->width * (size_t)img->channels)
        return ln_fail(err, LN_ERR_ARG, "image row stride %zu is shorter than a row", img->stride);
    int W = img->width, H = img->height, rc;
    int avx2 = ln_use_avx2(&ctx->settings);
    hash_target t[N_TARGETS];
    int vfirst[N_TARGETS], any_vfirst = 0;
    memset(ctx->pinned, 0, sizeof ctx->pinned);
    for (int i = 0; i < N_TARGETS; i++) {
        t[i].w = TARGET_W[i];
        t[i].h = TARGET_H[i];
        t[i].need_h = ln_resample_need_pass(W, 0.0f, (float)W, t[i].w);
        t[i].need_v = ln_resample_need_pass(H, 0.0f, (float)H, t[i].h);
        t[i].kh = NULL;
        if ((rc = ctx_kernels(ctx, H, t[i].h, &t[i].kv, err)) != LN_OK)
            return rc;
        if (t[i].need_h && (rc = ctx_kernels(ctx, W, t[i].w, &t[i].kh, err)) != LN_OK)
            return rc;
        vfirst[i] = t[i].need_h && t[i].need_v && ln_resample_vertical_first(W, H, t[i].w, t[i].h, ctx->settings.pillow_compat);
        any_vfirst |= vfirst[i];
    }
    /* Tall images resize vertically first in Pillow; those targets need the whole L image. */
    int whole_gray = any_vfirst && img->channels != 1;
    int ymin = H, ymax = 0, any_h = 0;
    size_t temp_bytes = 0;
    for (int i = 0; i < N_TARGETS; i++) {
        if (vfirst[i])
            continue;
        any_h |= t[i].need_h;
        ymin = t[i].kv->first < ymin ? t[i].kv->first : ymin;
        ymax = t[i].kv->last > ymax ? t[i].kv->last : ymax;
        temp_bytes += round32((size_t)(t[i].kv->last - t[i].kv->first) * TEMP_STRIDE);
    }
    /* scratch: [widened rows][gray rows][whole L image][temps] */
    size_t wide_bytes = round32(((size_t)W + LN_ROW_PAD) * sizeof(int16_t));
    size_t gray_bytes = img->channels == 1 ? 0 : round32((size_t)W);
    size_t image_bytes = whole_gray ? round32((size_t)W * (size_t)H) : 0;
    size_t rows_bytes = ROWS_AT_ONCE * (wide_bytes + gray_bytes);
    if ((rc = ctx_reserve(ctx, rows_bytes + image_bytes + temp_bytes, err)) != LN_OK)
        return rc;
    int16_t *wide[ROWS_AT_ONCE];
    uint8_t *gray_buf[ROWS_AT_ONCE];
    for (int r = 0; r < ROWS_AT_ONCE; r++) {
        wide[r] = (int16_t *)(ctx->scratch + (size_t)r * wide_bytes);
        gray_buf[r] = ctx->scratch + ROWS_AT_ONCE * wide_bytes + (size_t)r * gray_bytes;
    }
    uint8_t *p = ctx->scratch + rows_bytes;
    ln_image src = *img;
    if (whole_gray) {
        src = ln_image_view(p, W, H, 1, (size_t)W);
        if ((rc = ln_to_gray(img, &src, &ctx->settings, err)) != LN_OK)
            return rc;
    }
    p += image_bytes;
    for (int i = 0; i < N_TARGETS; i++) {
        if (vfirst[i])
            continue;
        t[i].temp = p;
        p += round32((size_t)(t[i].kv->last - t[i].kv->first) * TEMP_STRIDE);
    }

    for (int y = ymin; y < ymax; y += ROWS_AT_ONCE) {
        int nrows = ymax - y < ROWS_AT_ONCE ? ymax - y : ROWS_AT_ONCE;
        const uint8_t *gray[ROWS_AT_ONCE] = {NULL};
        for (int r = 0; r < nrows; r++) {
            const uint8_t *row = src.data + (size_t)(y + r) * src.stride;
            if (src.channels == 1) {
                gray[r] = row;
            } else {
                ln_gray_row(row, src.channels, W, gray_buf[r], avx2);
                gray[r] = gray_buf[r];
            }
#ifdef LN_X86_SIMD
            if (avx2 && any_h)
                ln_widen_row1_avx2(gray[r], W, wide[r]);
#endif
        }
        for (int i = 0; i < N_TARGETS; i++)
            if (!vfirst[i])
                target_rows(&t[i], y, nrows, gray, wide, avx2);
    }

    for (int i = 0; i < N_TARGETS; i++) {
        const ln_kernels *kv = t[i].kv;
        if (vfirst[i]) {
            ln_image out = ln_image_view(t[i].out, t[i].w, t[i].h, 1, (size_t)t[i].w);
            if ((rc = ln_resample_run(&src, &out, t[i].kh, kv, 1, 1, &ctx->settings, err)) != LN_OK)
                return rc;
        } else if (t[i].need_v) {
            ln_vpass(kv, t[i].temp, kv->first, TEMP_STRIDE, (size_t)t[i].w, TEMP_STRIDE, t[i].out, (size_t)t[i].w,
                     avx2);
        } else {
            if (kv->last - kv->first != t[i].h)
                return ln_fail(err, LN_ERR_INTERNAL, "hash resize: %d rows for %d", kv->last - kv->first, t[i].h);
            for (int r = 0; r < t[i].h; r++)
                memcpy(t[i].out + r * t[i].w, t[i].temp + (size_t)r * TEMP_STRIDE, (size_t)t[i].w);
        }
    }
    res->ahash = ahash_bits(t[T_AHASH].out);
    res->dhash = dhash_bits(t[T_DHASH].out);
    res->phash = phash_bits(&ctx->dct, t[T_PHASH].out);
    return LN_OK;
}

int ln_image_hashes_compute(const ln_image *img, ln_image_hashes *out, const ln_settings *settings,
                            ln_error *err)
{
    hash_ctx ctx;
    ctx_init(&ctx, settings);
    int rc = hash_image(&ctx, img, out, err);
    ctx_free(&ctx);
    return rc;
}

int ln_image_hashes_from_gray(const ln_image *gray, ln_image_hashes *out, const ln_settings *settings,
                              ln_error *err)
{
    if (gray && gray->channels != 1)
        return ln_fail(err, LN_ERR_ARG, "expected a 1-channel (L) image, got %d channels", gray->channels);
    return ln_image_hashes_compute(gray, out, settings, err);
}

typedef struct {
    hash_ctx ctx;
    ln_error err;
    size_t fail_index;
    int failed;
} hash_worker;

typedef struct {
    const ln_image *imgs;
    ln_image_hashes *out;
    hash_worker *workers;
} hash_batch;

static void hash_one(void *arg, size_t index, int worker)
{
    hash_batch *b = arg;
    hash_worker *w = &b->workers[worker];
    ln_error err;
    ln_error_clear(&err);
    if (hash_image(&w->ctx, &b->imgs[index], &b->out[index], &err) != LN_OK) {
        memset(&b->out[index], 0, sizeof b->out[index]);
        if (!w->failed || index < w->fail_index) {
            w->err = err;
            w->fail_index = index;
            w->failed = 1;
        }
    }
}

int ln_image_hashes_batch(const ln_image *imgs, size_t n, int threads, const ln_settings *settings,
                          ln_image_hashes *out, ln_error *err)
{
    if (n == 0)
        return LN_OK;
    if (!imgs || !out)
        return ln_fail(err, LN_ERR_ARG, "hash batch: no images or no output given");
    int t = ln_resolve_threads(threads, n);
    hash_worker *workers = calloc((size_t)t, sizeof *workers);
    if (!workers)
        return ln_fail(err, LN_ERR_NOMEM, "out of memory for %d hash workers", t);
    for (int i = 0; i < t; i++)
        ctx_init(&workers[i].ctx, settings);
    hash_batch b = {imgs, out, workers};
    int rc = LN_OK;
    ln_parallel_for(threads, n, 1, hash_one, &b);
    const hash_worker *bad = NULL;
    for (int i = 0; i < t; i++) {
        if (workers[i].failed && (!bad || workers[i].fail_index < bad->fail_index))
            bad = &workers[i];
    }
    if (rc == LN_OK && bad)
        rc = ln_fail(err, bad->err.code, "image %zu: %s", bad->fail_index, bad->err.msg);
    for (int i = 0; i < t; i++)
        ctx_free(&workers[i].ctx);
    free(workers);
    return rc;
}
