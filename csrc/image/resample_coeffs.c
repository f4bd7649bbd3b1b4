/* Resampling weights exactly as Pillow's libImaging/Resample.c derives them: filters in
 * double, support widened by the downscale factor, per-output normalisation, then
 * rounding to PRECISION_BITS fixed point. The bits of every weight matter: the hashes
 * are only Pillow-identical if these tables are. */
#include "resample_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    double (*fn)(double);
    double support;
} filter_def;

static double box_filter(double x)
{
    return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0;
}

static double bilinear_filter(double x)
{
    if (x < 0.0)
        x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

/* Keys' cubic with a = -0.5, evaluated in Pillow's operation order. */
static double bicubic_filter(double x)
{
    const double a = -0.5;
    if (x < 0.0)
        x = -x;
    if (x < 1.0)
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0)
        return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

static double sinc(double x)
{
    if (x == 0.0)
        return 1.0;
    x = x * LN_PI;
    return sin(x) / x;
}

static double lanczos_filter(double x)
{
    if (-3.0 <= x && x < 3.0)
        return sinc(x) * sinc(x / 3);
    return 0.0;
}

static const filter_def FILTERS[] = {
    [LN_FILTER_BOX] = {box_filter, 0.5},
    [LN_FILTER_BILINEAR] = {bilinear_filter, 1.0},
    [LN_FILTER_BICUBIC] = {bicubic_filter, 2.0},
    [LN_FILTER_LANCZOS] = {lanczos_filter, 3.0},
};

/* Lanczos costs two sin() calls per weight, which dominated hashing. Weights are a pure
 * function of the exact double argument, and integer or dyadic scale factors (1024/8,
 * 768/32, ...) repeat the same arguments across outputs, so remember them by bit pattern.
 * The filter is even bit for bit inside its support (IEEE negation is exact and sin is
 * odd), so |x| is the key, which also pairs mirrored outputs. Bounded open addressing;
 * when full it just stops remembering. */
#define MEMO_BITS 12
#define MEMO_SIZE (1u << MEMO_BITS)
#define MEMO_PROBES 8

typedef struct {
    uint64_t key[MEMO_SIZE]; /* 0 = empty; the argument 0.0 is never stored */
    double val[MEMO_SIZE];
} filter_memo;

static double memo_eval(filter_memo *memo, double (*fn)(double), double x)
{
    if (!memo || !(fabs(x) < 3.0))
        return fn(x);
    x = fabs(x);
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    if (bits == 0)
        return fn(x);
    uint32_t h = (uint32_t)((bits * 0x9E3779B97F4A7C15ull) >> (64 - MEMO_BITS));
    for (int probe = 0; probe < MEMO_PROBES; probe++) {
        uint32_t slot = (h + (uint32_t)probe) & (MEMO_SIZE - 1);
        if (memo->key[slot] == bits)
            return memo->val[slot];
        if (memo->key[slot] == 0) {
            double v = fn(x);
            memo->key[slot] = bits;
            memo->val[slot] = v;
            return v;
        }
    }
    return fn(x);
}

int ln_resample_need_pass(int in_size, float b0, float b1, int out_size)
{
    /* Pillow: xsize != imIn->xsize || box[0] || box[2] != xsize */
    return out_size != in_size || b0 != 0.0f || b1 != (float)out_size;
}

void ln_kernels_free(ln_kernels *kt)
{
    if (!kt)
        return;
    free(kt->start);
    free(kt->count);
    free(kt->k);
    free(kt->k_lo);
    free(kt->k_hi);
    free(kt->lead);
    free(kt->hi_begin);
    free(kt->hi_end);
    memset(kt, 0, sizeof *kt);
}

/* Zeroed, 64-byte aligned: the vector kernels load 32-byte blocks of weights, which then
 * never straddle a cache line (a measurable ~10% of the hash time otherwise). */
static void *aligned_zeroed(size_t count, size_t size)
{
    size_t bytes;
    if (!ln_mul_size(count, size, &bytes))
        return NULL;
    bytes = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, bytes ? bytes : 64);
    if (p)
        memset(p, 0, bytes ? bytes : 64);
    return p;
}

static int fixed_point(double w)
{
    return w < 0 ? (int)(-0.5 + w * (1 << LN_PRECISION_BITS)) : (int)(0.5 + w * (1 << LN_PRECISION_BITS));
}

int ln_kernels_build(ln_kernels *kt, int in_size, float in0, float in1, int out_size, ln_filter filter,
                     const ln_settings *settings, ln_error *err)
{
    return ln_kernels_build_ex(kt, in_size, in0, in1, out_size, filter, ln_use_avx2(settings), err);
}

int ln_kernels_build_ex(ln_kernels *kt, int in_size, float in0, float in1, int out_size, ln_filter filter,
                        int allow_fast, ln_error *err)
{
    memset(kt, 0, sizeof *kt);
    if (filter < LN_FILTER_BOX || filter > LN_FILTER_LANCZOS)
        return ln_fail(err, LN_ERR_ARG, "unknown resampling filter %d", (int)filter);
    if (in_size <= 0 || out_size <= 0)
        return ln_fail(err, LN_ERR_ARG, "resample sizes must be positive (in %d, out %d)", in_size, out_size);
    const filter_def *f = &FILTERS[filter];

    /* Pillow subtracts the box ends in float before widening. */
    float span = in1 - in0;
    double scale = (double)span / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = f->support * filterscale;
    if (!(support < 1e8))
        return ln_fail(err, LN_ERR_LIMIT, "resample support %g is too large", support);
    int ksize = (int)ceil(support) * 2 + 1;
    int kstride = (ksize + 15 + 3 + 15) & ~15; /* room for the lead and 4-tap overreads */
    size_t nk;
    if (!ln_mul_size((size_t)out_size, (size_t)kstride, &nk) || nk > ((size_t)1 << 31))
        return ln_fail(err, LN_ERR_LIMIT, "resample table %d x %d is too large", out_size, kstride);

    double *w = malloc((size_t)ksize * sizeof *w);
    /* The memo is only needed where libm does the work; allocated on first use. */
    filter_memo *memo = NULL;
    int fast = 0;
#ifdef LN_X86_SIMD
    fast = allow_fast && filter == LN_FILTER_LANCZOS;
#else
    (void)allow_fast;
#endif
    kt->start = malloc((size_t)out_size * sizeof *kt->start);
    kt->count = malloc((size_t)out_size * sizeof *kt->count);
    kt->k = aligned_zeroed(nk, sizeof *kt->k);
    kt->k_lo = aligned_zeroed(nk, sizeof *kt->k_lo);
    kt->k_hi = aligned_zeroed(nk, sizeof *kt->k_hi);
    kt->lead = malloc((size_t)out_size * sizeof *kt->lead);
    kt->hi_begin = malloc((size_t)out_size * sizeof *kt->hi_begin);
    kt->hi_end = malloc((size_t)out_size * sizeof *kt->hi_end);
    if (!w || !kt->start || !kt->count || !kt->k || !kt->k_lo || !kt->k_hi || !kt->lead || !kt->hi_begin || !kt->hi_end) {
        free(w);
        ln_kernels_free(kt);
        return ln_fail(err, LN_ERR_NOMEM, "out of memory for a %d -> %d resample table", in_size, out_size);
    }

    kt->in_size = in_size;
    kt->out_size = out_size;
    kt->in0 = in0;
    kt->in1 = in1;
    kt->filter = filter;
    kt->kstride = kstride;
    kt->simd_ok = 1;
    double inv_filterscale = 1.0 / filterscale;
    for (int xx = 0; xx < out_size; xx++) {
        double center = in0 + (xx + 0.5) * scale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0)
            xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size)
            xmax = in_size;
        int n = xmax - xmin;
        if (n < 0)
            n = 0;
        if (n > ksize)
            n = ksize; /* cannot happen (window <= 2*ceil(support)+1); keeps writes in bounds */
        kt->start[xx] = xmin;
        kt->count[xx] = n;
        int32_t *k = kt->k + (size_t)xx * kstride;
        int done = 0;
#ifdef LN_X86_SIMD
        done = fast && ln_lanczos_weights_avx2(center, xmin, n, inv_filterscale, w, k);
#endif
        if (!done) {
            if (filter == LN_FILTER_LANCZOS && !memo && !(memo = calloc(1, sizeof *memo))) {
                free(w);
                ln_kernels_free(kt);
                return ln_fail(err, LN_ERR_NOMEM, "out of memory for a %d -> %d resample table", in_size,
                               out_size);
            }
            kt->libm_rows++;
            double ww = 0.0;
            for (int x = 0; x < n; x++) {
                w[x] = memo_eval(memo, f->fn, (x + xmin - center + 0.5) * inv_filterscale);
                ww += w[x];
            }
            if (ww != 0.0)
                for (int x = 0; x < n; x++)
                    w[x] /= ww;
            for (int x = 0; x < n; x++)
                k[x] = fixed_point(w[x]);
        }
        /* Short windows (upscaling) would pay more for the lead than aligned loads save. */
        int lead = n >= 64 ? xmin & 15 : 0;
        int16_t *lo16 = kt->k_lo + (size_t)xx * kstride + lead, *hi16 = kt->k_hi + (size_t)xx * kstride + lead;
        int hi_first = -1, hi_last = -1;
        for (int x = 0; x < n; x++) {
            int32_t v = k[x];
            /* Signed 16-bit low half: downscale weights mostly stay below 2^15, so the
             * vector kernels can skip the high half outside the filter's peak. */
            int16_t lo = (int16_t)(uint16_t)((uint32_t)v & 0xffffu);
            int32_t hi = (int32_t)(((int64_t)v - lo) / 65536);
            if (hi < INT16_MIN || hi > INT16_MAX)
                kt->simd_ok = 0;
            if (hi != 0) {
                if (hi_first < 0)
                    hi_first = x + lead;
                hi_last = x + lead;
            }
            lo16[x] = lo;
            hi16[x] = (int16_t)hi;
        }
        kt->lead[xx] = lead;
        kt->hi_begin[xx] = hi_first < 0 ? 0 : hi_first & ~15;
        kt->hi_end[xx] = hi_first < 0 ? 0 : (hi_last + 16) & ~15;
    }
    kt->first = kt->start[0];
    kt->last = kt->start[out_size - 1] + kt->count[out_size - 1];
    free(w);
    free(memo);
    return LN_OK;
}
