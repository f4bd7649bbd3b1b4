/* AVX2 candidate scan of the similarity search (selected at run time; the build has no -march).
 * Same result as ln_embed_scan_scalar, eight dots per compare. */
#include "embed_internal.h"

#ifdef LN_LORA_X86
#include <immintrin.h>
#include <math.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 size_t ln_embed_scan_avx2(const float *x, size_t n, float lo, uint32_t *hits)
{
    const __m256 vlo = _mm256_set1_ps(lo), vninf = _mm256_set1_ps(-INFINITY);
    size_t c = 0, k = 0;
    for (; c + 8 <= n; c += 8) {
        __m256 v = _mm256_loadu_ps(x + c);
        /* ordered compares: NaN is never "safe", so it becomes a candidate */
        __m256 safe = _mm256_and_ps(_mm256_cmp_ps(v, vlo, _CMP_LT_OQ), _mm256_cmp_ps(v, vninf, _CMP_GT_OQ));
        unsigned m = ~(unsigned)_mm256_movemask_ps(safe) & 0xffu;
        while (m) {
            hits[k++] = (uint32_t)(c + (unsigned)__builtin_ctz(m));
            m &= m - 1;
        }
    }
    if (c < n) {
        size_t tail = ln_embed_scan_scalar(x + c, n - c, lo, hits + k);
        for (size_t h = k; h < k + tail; h++)
            hits[h] += (uint32_t)c;
        k += tail;
    }
    return k;
}
#endif
