/* AVX2/FMA/F16C versions of the GEMM kernels (selected at run time; the build has no -march).
 * Conversions and epilogues are bit-identical to the scalar ones (F16C rounds to nearest even,
 * the bf16 rounding is the scalar formula lane-wise); the micro-kernel uses FMA. */
#include "lora_internal.h"

#ifdef LN_LORA_X86
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 void ln_ukr_avx2(int64_t kc, const float *a, int64_t ars, int64_t aks, int mr, const float *b, float *c,
                      int64_t ldc, int add)
{
    const float *a0 = a, *a1 = a + (mr > 1 ? ars : 0), *a2 = a + (mr > 2 ? 2 * ars : 0);
    const float *a3 = a + (mr > 3 ? 3 * ars : 0), *a4 = a + (mr > 4 ? 4 * ars : 0), *a5 = a + (mr > 5 ? 5 * ars : 0);
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int64_t k = 0, off = 0; k < kc; k++, off += aks, b += LN_NR) {
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8), av;
        av = _mm256_broadcast_ss(a0 + off);
        c00 = _mm256_fmadd_ps(av, b0, c00);
        c01 = _mm256_fmadd_ps(av, b1, c01);
        av = _mm256_broadcast_ss(a1 + off);
        c10 = _mm256_fmadd_ps(av, b0, c10);
        c11 = _mm256_fmadd_ps(av, b1, c11);
        av = _mm256_broadcast_ss(a2 + off);
        c20 = _mm256_fmadd_ps(av, b0, c20);
        c21 = _mm256_fmadd_ps(av, b1, c21);
        av = _mm256_broadcast_ss(a3 + off);
        c30 = _mm256_fmadd_ps(av, b0, c30);
        c31 = _mm256_fmadd_ps(av, b1, c31);
        av = _mm256_broadcast_ss(a4 + off);
        c40 = _mm256_fmadd_ps(av, b0, c40);
        c41 = _mm256_fmadd_ps(av, b1, c41);
        av = _mm256_broadcast_ss(a5 + off);
        c50 = _mm256_fmadd_ps(av, b0, c50);
        c51 = _mm256_fmadd_ps(av, b1, c51);
    }
#define LN_PUT(i, lo, hi)                                                                                         \
    do {                                                                                                          \
        float *ci = c + (i) * ldc;                                                                                \
        if (add) {                                                                                                \
            lo = _mm256_add_ps(_mm256_loadu_ps(ci), lo);                                                          \
            hi = _mm256_add_ps(_mm256_loadu_ps(ci + 8), hi);                                                      \
        }                                                                                                         \
        _mm256_storeu_ps(ci, lo);                                                                                 \
        _mm256_storeu_ps(ci + 8, hi);                                                                             \
    } while (0)
    LN_PUT(0, c00, c01);
    LN_PUT(1, c10, c11);
    LN_PUT(2, c20, c21);
    LN_PUT(3, c30, c31);
    LN_PUT(4, c40, c41);
    LN_PUT(5, c50, c51);
#undef LN_PUT
}

AVX2 static inline __m256 bf16x8_to_f32(__m128i h)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/* The scalar ln_f32_to_bf16 on 8 lanes. */
AVX2 static inline __m128i f32x8_to_bf16(__m256 v)
{
    __m256i x = _mm256_castps_si256(v);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(x, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
    __m256i q = _mm256_or_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(0x40));
    __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
    r = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(r), _mm256_castsi256_ps(q), nan));
    return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
}

#define LN_F16_RNE (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

AVX2 static inline __m256 load8(const void *p, ln_dtype dt)
{
    switch (dt) {
    case LN_DT_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
    case LN_DT_BF16: return bf16x8_to_f32(_mm_loadu_si128((const __m128i *)p));
    default: return _mm256_loadu_ps((const float *)p);
    }
}

AVX2 void ln_epi_row_avx2(const float *t, int64_t n, char *c, ln_dtype dt, int64_t cs, char *bk, int accumulate,
                          float alpha)
{
    int64_t j = 0;
    if (cs == 1) {
        __m256 va = _mm256_set1_ps(alpha);
        for (; j + 8 <= n; j += 8) {
            __m256 v = _mm256_mul_ps(va, _mm256_loadu_ps(t + j));
            if (dt == LN_DT_F32) {
                float *cj = (float *)c + j;
                if (bk || accumulate) {
                    __m256 old = _mm256_loadu_ps(cj);
                    if (bk)
                        _mm256_storeu_ps((float *)bk + j, old);
                    if (accumulate)
                        v = _mm256_add_ps(old, v);
                }
                _mm256_storeu_ps(cj, v);
            } else {
                __m128i *cj = (__m128i *)(c + 2 * j);
                if (bk || accumulate) {
                    __m128i old = _mm_loadu_si128(cj);
                    if (bk)
                        _mm_storeu_si128((__m128i *)(bk + 2 * j), old);
                    if (accumulate)
                        v = _mm256_add_ps(dt == LN_DT_F16 ? _mm256_cvtph_ps(old) : bf16x8_to_f32(old), v);
                }
                _mm_storeu_si128(cj, dt == LN_DT_F16 ? _mm256_cvtps_ph(v, LN_F16_RNE) : f32x8_to_bf16(v));
            }
        }
    }
    size_t es = ln_dtype_size(dt);
    for (; j < n; j++) {
        char *cj = c + (size_t)(j * cs) * es;
        float v = alpha * t[j];
        if (bk)
            memcpy(bk + (size_t)(j * cs) * es, cj, es);
        if (accumulate)
            v = ln_load(cj, dt, 0) + v;
        ln_store(cj, dt, 0, v);
    }
}

AVX2 void ln_cvt_row_avx2(const void *src, ln_dtype dt, int64_t n, const float *mask, float *dst)
{
    size_t es = ln_dtype_size(dt);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 v = load8((const char *)src + (size_t)j * es, dt);
        if (mask)
            v = _mm256_mul_ps(v, _mm256_loadu_ps(mask + j));
        _mm256_storeu_ps(dst + j, v);
    }
    for (; j < n; j++)
        dst[j] = mask ? ln_load(src, dt, j) * mask[j] : ln_load(src, dt, j);
}

AVX2 void ln_pack_panels_avx2(const ln_mat *a, int64_t mc, int64_t k0, int64_t kc, float *dst)
{
    size_t es = ln_dtype_size(a->dt);
    for (int64_t p = 0; p < mc; p += LN_MR, dst += LN_MR * kc) {
        if (a->rs == 1 && !a->mask && p + 8 <= mc) {
            /* 8 lanes from each source row; the 2 extra are overwritten by the next k (the
             * scratch has room past the last panel). */
            const char *s = (const char *)a->p + (size_t)(p + k0 * a->cs) * es;
            for (int64_t k = 0; k < kc; k++, s += (size_t)a->cs * es)
                _mm256_storeu_ps(dst + k * LN_MR, load8(s, a->dt));
            continue;
        }
        for (int64_t k = 0; k < kc; k++)
            for (int i = 0; i < LN_MR; i++) {
                int64_t idx = (p + i) * a->rs + (k0 + k) * a->cs;
                float v = p + i < mc ? ln_load(a->p, a->dt, idx) : 0.0f;
                dst[k * LN_MR + i] = a->mask && p + i < mc ? v * a->mask[idx] : v;
            }
    }
}
#endif
