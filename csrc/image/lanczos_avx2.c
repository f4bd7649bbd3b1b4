/* Lanczos weights of one output without libm, with a proof that they round like libm's.
 *
 * Pillow's fixed-point weight is k = round_half_away(2^22 * w_j / sum(w)) with w_j =
 * sinc(t) * sinc(t / 3) from libm's sin(). Only k matters, so w_j is computed here with a
 * vectorised sin and fewer divisions, from the very same arguments t (Pillow's operations);
 * each w_j is then within WEIGHT_ERR of Pillow's. A bound on how far each 2^22 * w_j / sum
 * can be from Pillow's value is checked against that value's distance to the nearest
 * rounding boundary (x.5). When any weight is too close to call, the caller recomputes the
 * output with libm; for real sizes that practically never happens (margins are ~1e-8 of a
 * unit against a 0.5 gap). */
#include "resample_internal.h"

#ifdef LN_X86_SIMD
#include <immintrin.h>
#include <math.h>

#define AVX2 __attribute__((target("avx2")))

/* pi/2 split Cody-Waite style: the first part has 33 significant bits, so k * part is
 * exact for |k| < 2^20 (here |k| <= 6). */
#define PIO2_HI 1.57079632673412561417e+00
#define PIO2_LO 6.07710050650619224932e-11
#define TWO_OVER_PI 6.36619772367581382433e-01

/* |fast weight - libm weight| <= WEIGHT_ERR: sin here is within 1e-15 of the true value
 * for |y| <= 3*pi (reduction error ~6e-17, Taylor tail < 1e-19, evaluation < 5e-16; for
 * |y| <= pi/4 no reduction and a few ulp relative) and libm's within 1 ulp. Dividing by
 * y (|y| >= pi/4 wherever the error is absolute rather than relative), the shifted y2,
 * and the regrouped product/quotient (a few ulp of |w| <= 1) keep the total below 1e-14;
 * 4e-14 keeps a margin. */
#define WEIGHT_ERR 4e-14
#define UNIT_ROUNDOFF 1.1102230246251565e-16 /* 2^-53 */

/* sin(y) for |y| <= 10, absolute error < 1e-15. */
AVX2 static inline __m256d fast_sin(__m256d y)
{
    __m256d k = _mm256_round_pd(_mm256_mul_pd(y, _mm256_set1_pd(TWO_OVER_PI)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256d r = _mm256_sub_pd(_mm256_sub_pd(y, _mm256_mul_pd(k, _mm256_set1_pd(PIO2_HI))),
                              _mm256_mul_pd(k, _mm256_set1_pd(PIO2_LO)));
    __m256d r2 = _mm256_mul_pd(r, r);
    /* Taylor series of sin to r^17 and cos to r^18 on |r| <= pi/4. */
    __m256d s = _mm256_set1_pd(-1.0 / 355687428096000.0);
    s = _mm256_add_pd(_mm256_mul_pd(s, r2), _mm256_set1_pd(1.0 / 1307674368000.0));
    s = _mm256_add_pd(_mm256_mul_pd(s, r2), _mm256_set1_pd(-1.0 / 6227020800.0));
    s = _mm256_add_pd(_mm256_mul_pd(s, r2), _mm256_set1_pd(1.0 / 39916800.0));
    s = _mm256_add_pd(_mm256_mul_pd(s, r2), _mm256_set1_pd(-1.0 / 362880.0));
    s = _mm256_add_pd(_mm256_mul_pd(s, r2), _mm256_set1_pd(1.0 / 5040.0));
    s = _mm256_add_pd(_mm256_mul_pd(s, r2), _mm256_set1_pd(-1.0 / 120.0));
    s = _mm256_add_pd(_mm256_mul_pd(s, r2), _mm256_set1_pd(1.0 / 6.0));
    s = _mm256_sub_pd(r, _mm256_mul_pd(_mm256_mul_pd(r, r2), s));
    __m256d c = _mm256_set1_pd(1.0 / 6402373705728000.0);
    c = _mm256_add_pd(_mm256_mul_pd(c, r2), _mm256_set1_pd(-1.0 / 20922789888000.0));
    c = _mm256_add_pd(_mm256_mul_pd(c, r2), _mm256_set1_pd(1.0 / 87178291200.0));
    c = _mm256_add_pd(_mm256_mul_pd(c, r2), _mm256_set1_pd(-1.0 / 479001600.0));
    c = _mm256_add_pd(_mm256_mul_pd(c, r2), _mm256_set1_pd(1.0 / 3628800.0));
    c = _mm256_add_pd(_mm256_mul_pd(c, r2), _mm256_set1_pd(-1.0 / 40320.0));
    c = _mm256_add_pd(_mm256_mul_pd(c, r2), _mm256_set1_pd(1.0 / 720.0));
    c = _mm256_add_pd(_mm256_mul_pd(c, r2), _mm256_set1_pd(-1.0 / 24.0));
    c = _mm256_add_pd(_mm256_mul_pd(c, r2), _mm256_set1_pd(0.5));
    c = _mm256_sub_pd(_mm256_set1_pd(1.0), _mm256_mul_pd(r2, c));
    /* quadrant k mod 4: sin, cos, -sin, -cos */
    __m128i q = _mm256_cvtpd_epi32(k);
    __m256i q64 = _mm256_cvtepi32_epi64(q);
    __m256i odd = _mm256_slli_epi64(q64, 63);
    __m256i neg = _mm256_slli_epi64(_mm256_srli_epi64(q64, 1), 63);
    __m256d v = _mm256_blendv_pd(s, c, _mm256_castsi256_pd(odd));
    return _mm256_xor_pd(v, _mm256_castsi256_pd(neg));
}

/* sinc(t) * sinc(t / 3), sinc(x) = sin(pi x) / (pi x) and 1 at 0, with one division:
 * (s1 * s2) / (y1 * y2). Pillow forms y1 = t * pi exactly like this; t / 3 is taken as
 * t * (1/3), which moves y2 by at most 2 ulp and sin(y2) by < 1e-15 (inside WEIGHT_ERR). */
AVX2 static inline __m256d fast_lanczos_core(__m256d t)
{
    const __m256d one = _mm256_set1_pd(1.0), pi = _mm256_set1_pd(LN_PI);
    __m256d zero = _mm256_cmp_pd(t, _mm256_setzero_pd(), _CMP_EQ_OQ);
    __m256d y1 = _mm256_blendv_pd(_mm256_mul_pd(t, pi), one, zero);
    __m256d y2 = _mm256_blendv_pd(_mm256_mul_pd(_mm256_mul_pd(t, _mm256_set1_pd(1.0 / 3.0)), pi), one, zero);
    __m256d s1 = _mm256_blendv_pd(fast_sin(y1), one, zero);
    __m256d s2 = _mm256_blendv_pd(fast_sin(y2), one, zero);
    return _mm256_div_pd(_mm256_mul_pd(s1, s2), _mm256_mul_pd(y1, y2));
}

AVX2 int ln_lanczos_weights_avx2(double center, int xmin, int n, double inv_filterscale, double *w, int32_t *k)
{
    if (n <= 0)
        return 1;
    const __m256d lane = _mm256_setr_pd(0.0, 1.0, 2.0, 3.0);
    __m256d sum = _mm256_setzero_pd(), abs_sum = sum;
    const __m256d sign = _mm256_set1_pd(-0.0);
    for (int x = 0; x < n; x += 4) {
        /* Pillow: (x + xmin - center + 0.5) * (1 / filterscale), int sum converted exactly. */
        __m256d j = _mm256_add_pd(_mm256_set1_pd((double)(x + xmin)), lane);
        __m256d t = _mm256_mul_pd(_mm256_add_pd(_mm256_sub_pd(j, _mm256_set1_pd(center)), _mm256_set1_pd(0.5)),
                                  _mm256_set1_pd(inv_filterscale));
        __m256d inside = _mm256_and_pd(_mm256_cmp_pd(t, _mm256_set1_pd(-3.0), _CMP_GE_OQ),
                                       _mm256_cmp_pd(t, _mm256_set1_pd(3.0), _CMP_LT_OQ));
        __m256d valid = _mm256_cmp_pd(lane, _mm256_set1_pd((double)(n - x)), _CMP_LT_OQ);
        __m256d v = fast_lanczos_core(t);
        v = _mm256_and_pd(v, _mm256_and_pd(inside, valid));
        sum = _mm256_add_pd(sum, v);
        abs_sum = _mm256_add_pd(abs_sum, _mm256_andnot_pd(sign, v));
        if (x + 4 <= n) {
            _mm256_storeu_pd(w + x, v);
        } else {
            double tmp[4];
            _mm256_storeu_pd(tmp, v);
            for (int i = 0; x + i < n; i++)
                w[x + i] = tmp[i];
        }
    }
    double lanes[4], abs_lanes[4];
    _mm256_storeu_pd(lanes, sum);
    _mm256_storeu_pd(abs_lanes, abs_sum);
    double ww = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    double s_abs = (abs_lanes[0] + abs_lanes[1]) + (abs_lanes[2] + abs_lanes[3]);

    /* |ww - Pillow's sum|: the weight errors plus both sums' rounding (gamma_n bound). */
    double nn = (double)n + 4.0;
    double gamma = nn * UNIT_ROUNDOFF / (1.0 - nn * UNIT_ROUNDOFF);
    double sum_err = nn * WEIGHT_ERR + 2.0 * gamma * (s_abs + nn * WEIGHT_ERR);
    sum_err *= 1.01;
    double ww_low = fabs(ww) - sum_err;
    if (!(ww_low > 0.0))
        return 0;
    /* v = 2^22 * w / ww, here as w * (1 / ww): one more rounding, counted in the bound.
     * |v - Pillow's v| <= c0 + c1 * |w| from the weight error, the sum error and the roundings. */
    const double scale = (double)(1 << LN_PRECISION_BITS);
    double inv_ww = 1.0 / ww;
    double c0 = scale * (WEIGHT_ERR / ww_low) * 1.01 + 1e-9;
    double c1 = scale * (sum_err / (ww_low * fabs(ww)) + 4.04 * UNIT_ROUNDOFF / ww_low) * 1.01;
    const __m256d vinv = _mm256_set1_pd(inv_ww * scale), vc0 = _mm256_set1_pd(c0), vc1 = _mm256_set1_pd(c1);
    const __m256d half = _mm256_set1_pd(0.5);
    int x = 0;
    for (; x + 4 <= n; x += 4) {
        __m256d wv = _mm256_loadu_pd(w + x);
        __m256d v = _mm256_mul_pd(wv, vinv);
        __m256d a = _mm256_andnot_pd(sign, v);
        __m256d gap = _mm256_andnot_pd(sign, _mm256_sub_pd(_mm256_sub_pd(a, _mm256_floor_pd(a)), half));
        __m256d dv = _mm256_add_pd(vc0, _mm256_mul_pd(vc1, _mm256_andnot_pd(sign, wv)));
        if (_mm256_movemask_pd(_mm256_cmp_pd(gap, dv, _CMP_GT_OQ)) != 0xF)
            return 0;
        /* Pillow: (int)(v < 0 ? v - 0.5 : v + 0.5), truncating */
        __m256d r = _mm256_add_pd(v, _mm256_or_pd(half, _mm256_and_pd(sign, v)));
        _mm_storeu_si128((__m128i *)(k + x), _mm256_cvttpd_epi32(r));
    }
    for (; x < n; x++) {
        double v = w[x] * (inv_ww * scale);
        double a = fabs(v);
        if (!(fabs(a - floor(a) - 0.5) > c0 + c1 * fabs(w[x])))
            return 0;
        k[x] = v < 0 ? (int)(-0.5 + v) : (int)(0.5 + v);
    }
    return 1;
}

#endif
