/* The unnormalised DCT-II that scipy.fftpack.dct computes (scipy >= 1.4 runs pocketfft's
 * C++ T_dcst23: pre-processing, a backward real FFT of the same length, post-twiddles),
 * reproduced operation by operation. pHash bits on flat, gradient or symmetric images
 * are decided by the rounding noise of coefficients that are zero in exact arithmetic, so
 * only the same operations in the same order give the same hash.
 *
 * For N = 32 pocketfft factors the real FFT as 2 * 4 * 4 (radix 4 first, then the factor
 * 2 moved to the front) and runs the backward passes in that order: radix 2 (ido 16),
 * radix 4 (ido 4), radix 4 (ido 1). Twiddles come from pocketfft's two-table sincos
 * scheme: cos/sin of angles reduced to the first octant, then one complex product. */
#include "dct_internal.h"
#include "ln_hash.h"

#include <math.h>
#include <string.h>

typedef struct {
    double r, i;
} cplx;

/* e^(2*pi*i*x/n) from the octant-reduced angle x*ang, ang = pi/(4n). */
static cplx octant_sincos(size_t x, size_t n, double ang)
{
    cplx z;
    x <<= 3;
    if (x < 4 * n) {
        if (x < 2 * n) {
            if (x < n) {
                z.r = cos((double)x * ang), z.i = sin((double)x * ang);
            } else {
                z.r = sin((double)(2 * n - x) * ang), z.i = cos((double)(2 * n - x) * ang);
            }
        } else {
            x -= 2 * n;
            if (x < n) {
                z.r = -sin((double)x * ang), z.i = cos((double)x * ang);
            } else {
                z.r = -cos((double)(2 * n - x) * ang), z.i = sin((double)(2 * n - x) * ang);
            }
        }
    } else {
        x = 8 * n - x;
        if (x < 2 * n) {
            if (x < n) {
                z.r = cos((double)x * ang), z.i = -sin((double)x * ang);
            } else {
                z.r = sin((double)(2 * n - x) * ang), z.i = -cos((double)(2 * n - x) * ang);
            }
        } else {
            x -= 2 * n;
            if (x < n) {
                z.r = -sin((double)x * ang), z.i = -cos((double)x * ang);
            } else {
                z.r = -cos((double)(2 * n - x) * ang), z.i = -sin((double)(2 * n - x) * ang);
            }
        }
    }
    return z;
}

/* Roots of unity e^(2*pi*i*k/n) for the k < n we need, as the product of a fine table
 * entry (k & mask) and a coarse one (k >> shift). Only small n are used here. */
enum { SC_MAX = 64 };
typedef struct {
    size_t n, mask, shift;
    cplx fine[SC_MAX], coarse[SC_MAX];
} sincos_table;

static void sincos_init(sincos_table *t, size_t n)
{
    /* The angle is formed in long double, as pocketfft does, then rounded once. */
    double ang = (double)(0.25L * 3.141592653589793238462643383279502884197L / (long double)n);
    size_t nval = (n + 2) / 2;
    size_t shift = 1;
    while (((size_t)1 << shift) * ((size_t)1 << shift) < nval)
        ++shift;
    t->n = n;
    t->shift = shift;
    t->mask = ((size_t)1 << shift) - 1;
    t->fine[0].r = 1.0, t->fine[0].i = 0.0;
    for (size_t i = 1; i < t->mask + 1 && i < SC_MAX; i++)
        t->fine[i] = octant_sincos(i, n, ang);
    size_t ncoarse = (nval + t->mask) / (t->mask + 1);
    t->coarse[0].r = 1.0, t->coarse[0].i = 0.0;
    for (size_t i = 1; i < ncoarse && i < SC_MAX; i++)
        t->coarse[i] = octant_sincos(i * (t->mask + 1), n, ang);
}

static cplx sincos_at(const sincos_table *t, size_t idx)
{
    int conj = 0;
    if (2 * idx > t->n) {
        idx = t->n - idx;
        conj = 1;
    }
    cplx a = t->fine[idx & t->mask], b = t->coarse[idx >> t->shift], z;
    z.r = a.r * b.r - a.i * b.i;
    z.i = a.r * b.i + a.i * b.r;
    if (conj)
        z.i = -z.i;
    return z;
}

void ln_dct32_plan_init(ln_dct32_plan *plan)
{
    sincos_table t;
    memset(plan, 0, sizeof *plan);
    sincos_init(&t, 4 * LN_DCT_N);
    for (size_t i = 0; i < LN_DCT_N; i++)
        plan->post[i] = sincos_at(&t, i + 1).r;
    sincos_init(&t, LN_DCT_N);
    /* radix-2 pass: l1 = 1, ido = 16; twiddle j=1, i=1..7 -> root i */
    for (size_t i = 1; i <= 7; i++) {
        cplx z = sincos_at(&t, i);
        plan->radix2_tw[2 * i - 2] = z.r;
        plan->radix2_tw[2 * i - 1] = z.i;
    }
    /* radix-4 pass: l1 = 2, ido = 4; twiddles j=1..3, i=1 -> root 2j */
    for (size_t j = 1; j <= 3; j++) {
        cplx z = sincos_at(&t, 2 * j);
        plan->radix4_tw[(j - 1) * 3 + 0] = z.r;
        plan->radix4_tw[(j - 1) * 3 + 1] = z.i;
    }
}

/* Backward radix-2 pass of a real FFT (pocketfft radb2). */
static void radix2_backward(size_t ido, size_t l1, const double *cc, double *ch, const double *wa)
{
#define CC(a, b, c) cc[(a) + ido * ((b) + 2 * (c))]
#define CH(a, b, c) ch[(a) + ido * ((b) + l1 * (c))]
#define WA(x, i) wa[(i) + (x) * (ido - 1)]
    for (size_t k = 0; k < l1; k++) {
        double a = CC(0, 0, k), b = CC(ido - 1, 1, k);
        CH(0, k, 0) = a + b;
        CH(0, k, 1) = a - b;
    }
    if ((ido & 1) == 0)
        for (size_t k = 0; k < l1; k++) {
            CH(ido - 1, k, 0) = 2.0 * CC(ido - 1, 0, k);
            CH(ido - 1, k, 1) = -2.0 * CC(0, 1, k);
        }
    if (ido <= 2)
        return;
    for (size_t k = 0; k < l1; k++)
        for (size_t i = 2; i < ido; i += 2) {
            size_t ic = ido - i;
            double tr2 = CC(i - 1, 0, k) - CC(ic - 1, 1, k);
            CH(i - 1, k, 0) = CC(i - 1, 0, k) + CC(ic - 1, 1, k);
            double ti2 = CC(i, 0, k) + CC(ic, 1, k);
            CH(i, k, 0) = CC(i, 0, k) - CC(ic, 1, k);
            CH(i, k, 1) = WA(0, i - 2) * ti2 + WA(0, i - 1) * tr2;
            CH(i - 1, k, 1) = WA(0, i - 2) * tr2 - WA(0, i - 1) * ti2;
        }
#undef CC
#undef CH
#undef WA
}

/* Backward radix-4 pass of a real FFT (pocketfft radb4). */
static void radix4_backward(size_t ido, size_t l1, const double *cc, double *ch, const double *wa)
{
    const double sqrt2 = (double)1.414213562373095048801688724209698L;
#define CC(a, b, c) cc[(a) + ido * ((b) + 4 * (c))]
#define CH(a, b, c) ch[(a) + ido * ((b) + l1 * (c))]
#define WA(x, i) wa[(i) + (x) * (ido - 1)]
    for (size_t k = 0; k < l1; k++) {
        double tr2 = CC(0, 0, k) + CC(ido - 1, 3, k);
        double tr1 = CC(0, 0, k) - CC(ido - 1, 3, k);
        double tr3 = 2.0 * CC(ido - 1, 1, k);
        double tr4 = 2.0 * CC(0, 2, k);
        CH(0, k, 0) = tr2 + tr3;
        CH(0, k, 2) = tr2 - tr3;
        CH(0, k, 3) = tr1 + tr4;
        CH(0, k, 1) = tr1 - tr4;
    }
    if ((ido & 1) == 0)
        for (size_t k = 0; k < l1; k++) {
            double ti1 = CC(0, 3, k) + CC(0, 1, k);
            double ti2 = CC(0, 3, k) - CC(0, 1, k);
            double tr2 = CC(ido - 1, 0, k) + CC(ido - 1, 2, k);
            double tr1 = CC(ido - 1, 0, k) - CC(ido - 1, 2, k);
            CH(ido - 1, k, 0) = tr2 + tr2;
            CH(ido - 1, k, 1) = sqrt2 * (tr1 - ti1);
            CH(ido - 1, k, 2) = ti2 + ti2;
            CH(ido - 1, k, 3) = -sqrt2 * (tr1 + ti1);
        }
    if (ido <= 2)
        return;
    for (size_t k = 0; k < l1; k++)
        for (size_t i = 2; i < ido; i += 2) {
            size_t ic = ido - i;
            double tr2 = CC(i - 1, 0, k) + CC(ic - 1, 3, k), tr1 = CC(i - 1, 0, k) - CC(ic - 1, 3, k);
            double ti1 = CC(i, 0, k) + CC(ic, 3, k), ti2 = CC(i, 0, k) - CC(ic, 3, k);
            double tr4 = CC(i, 2, k) + CC(ic, 1, k), ti3 = CC(i, 2, k) - CC(ic, 1, k);
            double tr3 = CC(i - 1, 2, k) + CC(ic - 1, 1, k), ti4 = CC(i - 1, 2, k) - CC(ic - 1, 1, k);
            CH(i - 1, k, 0) = tr2 + tr3;
            double cr3 = tr2 - tr3;
            CH(i, k, 0) = ti2 + ti3;
            double ci3 = ti2 - ti3;
            double cr4 = tr1 + tr4, cr2 = tr1 - tr4;
            double ci2 = ti1 + ti4, ci4 = ti1 - ti4;
            CH(i, k, 1) = WA(0, i - 2) * ci2 + WA(0, i - 1) * cr2;
            CH(i - 1, k, 1) = WA(0, i - 2) * cr2 - WA(0, i - 1) * ci2;
            CH(i, k, 2) = WA(1, i - 2) * ci3 + WA(1, i - 1) * cr3;
            CH(i - 1, k, 2) = WA(1, i - 2) * cr3 - WA(1, i - 1) * ci3;
            CH(i, k, 3) = WA(2, i - 2) * ci4 + WA(2, i - 1) * cr4;
            CH(i - 1, k, 3) = WA(2, i - 2) * cr4 - WA(2, i - 1) * ci4;
        }
#undef CC
#undef CH
#undef WA
}

/* One 32-point DCT-II in place (pocketfft T_dcst23, type 2, cosine, no ortho, fct 1). */
static void dct2_32(const ln_dct32_plan *plan, double *c)
{
    enum { N = LN_DCT_N, NS2 = (LN_DCT_N + 1) / 2 };
    double scratch[N];
    c[0] *= 2;
    c[N - 1] *= 2;
    for (size_t k = 1; k < N - 1; k += 2) {
        double t = c[k + 1];
        c[k + 1] = t - c[k];
        c[k] = t + c[k];
    }
    /* Backward real FFT: three passes ping-ponging between c and scratch, ending in scratch. */
    radix2_backward(16, 1, c, scratch, plan->radix2_tw);
    radix4_backward(4, 2, scratch, c, plan->radix4_tw);
    radix4_backward(1, 8, c, scratch, NULL);
    memcpy(c, scratch, sizeof scratch);
    for (size_t k = 1, kc = N - 1; k < NS2; ++k, --kc) {
        double t1 = plan->post[k - 1] * c[kc] + plan->post[kc - 1] * c[k];
        double t2 = plan->post[k - 1] * c[k] - plan->post[kc - 1] * c[kc];
        c[k] = 0.5 * (t1 + t2);
        c[kc] = 0.5 * (t1 - t2);
    }
    c[NS2] *= plan->post[NS2 - 1];
}

void ln_dct2_32x32_plan(const ln_dct32_plan *plan, double *block)
{
    double col[LN_DCT_N];
    for (int x = 0; x < LN_DCT_N; x++) {
        for (int y = 0; y < LN_DCT_N; y++)
            col[y] = block[y * LN_DCT_N + x];
        dct2_32(plan, col);
        for (int y = 0; y < LN_DCT_N; y++)
            block[y * LN_DCT_N + x] = col[y];
    }
    for (int y = 0; y < LN_DCT_N; y++)
        dct2_32(plan, block + y * LN_DCT_N);
}

int ln_dct2_32x32(double *block, ln_error *err)
{
    if (!block)
        return ln_fail(err, LN_ERR_ARG, "dct2_32x32: no block given");
    ln_dct32_plan plan;
    ln_dct32_plan_init(&plan);
    ln_dct2_32x32_plan(&plan, block);
    return LN_OK;
}
