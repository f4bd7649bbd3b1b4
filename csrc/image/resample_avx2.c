/* AVX2 row passes of the Pillow-exact resampler and the luma conversion.
 * Weights are up to 23-bit integers, split as k = hi * 2^16 + lo with both halves int16 so
 * that they fit _mm256_madd_epi16 against 8-bit pixels; the int32 lane sums wrap exactly
 * like Pillow's int accumulator, so the result is bit-identical to the scalar reference
 * whatever the summation order. The high halves are zero away from the filter's peak
 * when downscaling, and the 1-channel kernels skip those blocks. */
#include "resample_internal.h"

#ifdef LN_X86_SIMD
#include <immintrin.h>
#include <string.h>

#define AVX2 __attribute__((target("avx2")))

AVX2 static inline uint32_t hsum_epi32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return (uint32_t)_mm_cvtsi128_si32(s);
}

/* lo + hi * 2^16, lane-wise (mod 2^32). */
AVX2 static inline __m256i join_halves(__m256i lo, __m256i hi)
{
    return _mm256_add_epi32(lo, _mm256_slli_epi32(hi, 16));
}

AVX2 void ln_widen_row1_avx2(const uint8_t *src, int width, int16_t *dst)
{
    int x = 0;
    for (; x + 16 <= width; x += 16)
        _mm256_storeu_si256((__m256i *)(dst + x), _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(src + x))));
    for (; x < width; x++)
        dst[x] = src[x];
    memset(dst + width, 0, LN_ROW_PAD * sizeof *dst);
}

#define LOAD(p) _mm256_loadu_si256((const __m256i *)(p))
#define MADD_ADD(acc, v, c) acc = _mm256_add_epi32(acc, _mm256_madd_epi16(v, c))

AVX2 void ln_hrow1x4_avx2(const ln_kernels *kt, const int16_t *const r[4], uint8_t *const o[4])
{
    for (int xx = 0; xx < kt->out_size; xx++) {
        const int16_t *lo = kt->k_lo + (size_t)xx * kt->kstride;
        const int16_t *hi = kt->k_hi + (size_t)xx * kt->kstride;
        int s = kt->start[xx] - kt->lead[xx], n = kt->count[xx] + kt->lead[xx];
        int hb = kt->hi_begin[xx], he = kt->hi_end[xx], i = 0;
        const int16_t *p0 = r[0] + s, *p1 = r[1] + s, *p2 = r[2] + s, *p3 = r[3] + s;
        __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        /* Weights past count are zero and rows carry LN_ROW_PAD zeros: whole vectors are safe. */
        for (; i < hb; i += 16) {
            __m256i cl = LOAD(lo + i);
            MADD_ADD(a0, LOAD(p0 + i), cl);
            MADD_ADD(a1, LOAD(p1 + i), cl);
            MADD_ADD(a2, LOAD(p2 + i), cl);
            MADD_ADD(a3, LOAD(p3 + i), cl);
        }
        for (; i < he; i += 16) {
            __m256i cl = LOAD(lo + i), ch = LOAD(hi + i);
            __m256i v0 = LOAD(p0 + i), v1 = LOAD(p1 + i), v2 = LOAD(p2 + i), v3 = LOAD(p3 + i);
            MADD_ADD(a0, v0, cl);
            MADD_ADD(b0, v0, ch);
            MADD_ADD(a1, v1, cl);
            MADD_ADD(b1, v1, ch);
            MADD_ADD(a2, v2, cl);
            MADD_ADD(b2, v2, ch);
            MADD_ADD(a3, v3, cl);
            MADD_ADD(b3, v3, ch);
        }
        for (; i < n; i += 16) {
            __m256i cl = LOAD(lo + i);
            MADD_ADD(a0, LOAD(p0 + i), cl);
            MADD_ADD(a1, LOAD(p1 + i), cl);
            MADD_ADD(a2, LOAD(p2 + i), cl);
            MADD_ADD(a3, LOAD(p3 + i), cl);
        }
        o[0][xx] = ln_clip8(LN_BIAS + hsum_epi32(join_halves(a0, b0)));
        o[1][xx] = ln_clip8(LN_BIAS + hsum_epi32(join_halves(a1, b1)));
        o[2][xx] = ln_clip8(LN_BIAS + hsum_epi32(join_halves(a2, b2)));
        o[3][xx] = ln_clip8(LN_BIAS + hsum_epi32(join_halves(a3, b3)));
    }
}

AVX2 void ln_hrow1_avx2(const ln_kernels *kt, const int16_t *r0, uint8_t *o0)
{
    for (int xx = 0; xx < kt->out_size; xx++) {
        const int16_t *lo = kt->k_lo + (size_t)xx * kt->kstride;
        const int16_t *hi = kt->k_hi + (size_t)xx * kt->kstride;
        const int16_t *p0 = r0 + kt->start[xx] - kt->lead[xx];
        int n = kt->count[xx] + kt->lead[xx], hb = kt->hi_begin[xx], he = kt->hi_end[xx];
        __m256i a0 = _mm256_setzero_si256(), b0 = a0;
        for (int i = 0; i < n; i += 16) {
            __m256i v0 = LOAD(p0 + i);
            MADD_ADD(a0, v0, LOAD(lo + i));
            if (i >= hb && i < he)
                MADD_ADD(b0, v0, LOAD(hi + i));
        }
        o0[xx] = ln_clip8(LN_BIAS + hsum_epi32(join_halves(a0, b0)));
    }
}

AVX2 void ln_widen_row4_avx2(const uint8_t *src, int channels, int width, int16_t *dst)
{
    int x = 0;
    if (channels == 4) {
        for (; x + 4 <= width; x += 4)
            _mm256_storeu_si256((__m256i *)(dst + 4 * x),
                                _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(src + 4 * x))));
        for (; x < width; x++)
            for (int c = 0; c < 4; c++)
                dst[4 * x + c] = src[4 * x + c];
    } else {
        const __m128i rgbx = _mm_setr_epi8(0, 1, 2, -1, 3, 4, 5, -1, 6, 7, 8, -1, 9, 10, 11, -1);
        /* A 16-byte load covers 4 pixels (12 bytes) and must stay inside the row. */
        for (; 3 * (x + 4) + 4 <= 3 * width; x += 4) {
            __m128i v = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(src + 3 * x)), rgbx);
            _mm256_storeu_si256((__m256i *)(dst + 4 * x), _mm256_cvtepu8_epi16(v));
        }
        for (; x < width; x++) {
            dst[4 * x + 0] = src[3 * x + 0];
            dst[4 * x + 1] = src[3 * x + 1];
            dst[4 * x + 2] = src[3 * x + 2];
            dst[4 * x + 3] = 0;
        }
    }
    memset(dst + 4 * (size_t)width, 0, 4 * LN_ROW_PAD * sizeof *dst);
}

AVX2 void ln_hrow4_avx2(const ln_kernels *kt, const int16_t *src4, int channels, uint8_t *out)
{
    /* Per 128-bit lane: two pixels RGBX RGBX -> channel pairs R0 R1 G0 G1 B0 B1 X0 X1,
     * multiplied by the weight pair (k0, k1) broadcast to all four. */
    const __m256i pairs = _mm256_setr_epi8(0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15, 0, 1, 8, 9, 2, 3,
                                           10, 11, 4, 5, 12, 13, 6, 7, 14, 15);
    const __m256i spread = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
    const __m128i bias = _mm_set1_epi32((int)LN_BIAS);
    for (int xx = 0; xx < kt->out_size; xx++) {
        const int16_t *lo = kt->k_lo + (size_t)xx * kt->kstride + kt->lead[xx];
        const int16_t *hi = kt->k_hi + (size_t)xx * kt->kstride + kt->lead[xx];
        const int16_t *p = src4 + 4 * (size_t)kt->start[xx];
        int n = kt->count[xx];
        __m256i a = _mm256_setzero_si256(), b = a;
        for (int i = 0; i < n; i += 4) {
            __m256i v = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(p + 4 * i)), pairs);
            __m256i cl = _mm256_permutevar8x32_epi32(
                _mm256_castsi128_si256(_mm_loadl_epi64((const __m128i *)(lo + i))), spread);
            __m256i ch = _mm256_permutevar8x32_epi32(
                _mm256_castsi128_si256(_mm_loadl_epi64((const __m128i *)(hi + i))), spread);
            a = _mm256_add_epi32(a, _mm256_madd_epi16(v, cl));
            b = _mm256_add_epi32(b, _mm256_madd_epi16(v, ch));
        }
        __m256i s = join_halves(a, b);
        __m128i t = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        t = _mm_srai_epi32(_mm_add_epi32(t, bias), LN_PRECISION_BITS);
        t = _mm_packus_epi16(_mm_packs_epi32(t, t), t);
        uint32_t px = (uint32_t)_mm_cvtsi128_si32(t);
        uint8_t *o = out + (size_t)xx * channels;
        o[0] = (uint8_t)px;
        o[1] = (uint8_t)(px >> 8);
        o[2] = (uint8_t)(px >> 16);
        if (channels == 4)
            o[3] = (uint8_t)(px >> 24);
    }
}

/* 16 columns of one output row; rows r and r+1 interleaved so one madd applies two weights. */
AVX2 static inline __m128i vcolumns16(const ln_kernels *kt, int yy, const uint8_t *base, size_t stride, size_t x)
{
    const int16_t *lo = kt->k_lo + (size_t)yy * kt->kstride + kt->lead[yy];
    const int16_t *hi = kt->k_hi + (size_t)yy * kt->kstride + kt->lead[yy];
    int n = kt->count[yy];
    __m256i al = _mm256_setzero_si256(), ah = al, bl = al, bh = al;
    for (int t = 0; t < n; t += 2) {
        const uint8_t *r0 = base + (size_t)t * stride + x;
        /* An odd last row pairs with itself under a zero weight (the table is zero-padded). */
        const uint8_t *r1 = t + 1 < n ? r0 + stride : r0;
        __m128i a = _mm_loadu_si128((const __m128i *)r0), b = _mm_loadu_si128((const __m128i *)r1);
        __m256i il = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(a, b));
        __m256i ih = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(a, b));
        int32_t pl, ph;
        memcpy(&pl, lo + t, sizeof pl);
        memcpy(&ph, hi + t, sizeof ph);
        __m256i cl = _mm256_set1_epi32(pl), ch = _mm256_set1_epi32(ph);
        al = _mm256_add_epi32(al, _mm256_madd_epi16(il, cl));
        ah = _mm256_add_epi32(ah, _mm256_madd_epi16(il, ch));
        bl = _mm256_add_epi32(bl, _mm256_madd_epi16(ih, cl));
        bh = _mm256_add_epi32(bh, _mm256_madd_epi16(ih, ch));
    }
    const __m256i bias = _mm256_set1_epi32((int)LN_BIAS);
    __m256i s0 = _mm256_srai_epi32(_mm256_add_epi32(join_halves(al, ah), bias), LN_PRECISION_BITS);
    __m256i s1 = _mm256_srai_epi32(_mm256_add_epi32(join_halves(bl, bh), bias), LN_PRECISION_BITS);
    __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(s0, s1), 0xD8);
    __m256i b8 = _mm256_permute4x64_epi64(_mm256_packus_epi16(w, w), 0x08);
    return _mm256_castsi256_si128(b8);
}

AVX2 void ln_vpass_avx2(const ln_kernels *kt, const uint8_t *src, int row0, size_t stride, size_t width_bytes,
                        size_t src_readable, uint8_t *out, size_t out_stride)
{
    for (int yy = 0; yy < kt->out_size; yy++) {
        const uint8_t *base = src + (size_t)(kt->start[yy] - row0) * stride;
        uint8_t *o = out + (size_t)yy * out_stride;
        size_t x = 0;
        for (; x < width_bytes && x + 16 <= src_readable; x += 16) {
            __m128i v = vcolumns16(kt, yy, base, stride, x);
            if (x + 16 <= width_bytes) {
                _mm_storeu_si128((__m128i *)(o + x), v);
            } else {
                uint8_t tmp[16];
                _mm_storeu_si128((__m128i *)tmp, v);
                memcpy(o + x, tmp, width_bytes - x);
            }
        }
        if (x < width_bytes) {
            /* Columns a full vector would over-read: the scalar loop. */
            const int32_t *k = kt->k + (size_t)yy * kt->kstride;
            for (; x < width_bytes; x++) {
                uint32_t ss = LN_BIAS;
                for (int y = 0; y < kt->count[yy]; y++)
                    ss += (uint32_t)base[(size_t)y * stride + x] * (uint32_t)k[y];
                o[x] = ln_clip8(ss);
            }
        }
    }
}

/* Luma of 8 pixels: per lane, 4 pixels as (R,G) and (B,G) int16 pairs; G's weight 38470
 * does not fit int16, so it is applied as 19235 twice. */
AVX2 static inline __m256i luma8(__m256i px, __m256i rg_idx, __m256i bg_idx)
{
    const __m256i w_rg = _mm256_set1_epi32(19595 | (19235 << 16));
    const __m256i w_bg = _mm256_set1_epi32(7471 | (19235 << 16));
    __m256i s = _mm256_add_epi32(_mm256_madd_epi16(_mm256_shuffle_epi8(px, rg_idx), w_rg),
                                 _mm256_madd_epi16(_mm256_shuffle_epi8(px, bg_idx), w_bg));
    return _mm256_srli_epi32(_mm256_add_epi32(s, _mm256_set1_epi32(0x8000)), 16);
}

AVX2 static inline __m256i load_pixels8(const uint8_t *p, int channels)
{
    if (channels == 4)
        return _mm256_loadu_si256((const __m256i *)p);
    return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)p)),
                                   _mm_loadu_si128((const __m128i *)(p + 12)), 1);
}

AVX2 void ln_gray_row_avx2(const uint8_t *src, int channels, int width, uint8_t *out)
{
    __m256i rg, bg;
    if (channels == 4) {
        rg = _mm256_setr_epi8(0, -1, 1, -1, 4, -1, 5, -1, 8, -1, 9, -1, 12, -1, 13, -1, 0, -1, 1, -1, 4, -1, 5, -1, 8,
                              -1, 9, -1, 12, -1, 13, -1);
        bg = _mm256_setr_epi8(2, -1, 1, -1, 6, -1, 5, -1, 10, -1, 9, -1, 14, -1, 13, -1, 2, -1, 1, -1, 6, -1, 5, -1,
                              10, -1, 9, -1, 14, -1, 13, -1);
    } else {
        rg = _mm256_setr_epi8(0, -1, 1, -1, 3, -1, 4, -1, 6, -1, 7, -1, 9, -1, 10, -1, 0, -1, 1, -1, 3, -1, 4, -1, 6,
                              -1, 7, -1, 9, -1, 10, -1);
        bg = _mm256_setr_epi8(2, -1, 1, -1, 5, -1, 4, -1, 8, -1, 7, -1, 11, -1, 10, -1, 2, -1, 1, -1, 5, -1, 4, -1, 8,
                              -1, 7, -1, 11, -1, 10, -1);
    }
    size_t row = (size_t)width * channels;
    /* Bytes the last load of a 16-pixel step touches, relative to its first pixel. */
    size_t reach = channels == 4 ? 64 : 52;
    int x = 0;
    for (; (size_t)x * channels + reach <= row; x += 16) {
        const uint8_t *p = src + (size_t)x * channels;
        __m256i a = luma8(load_pixels8(p, channels), rg, bg);
        __m256i b = luma8(load_pixels8(p + 8 * channels, channels), rg, bg);
        __m256i w = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xD8);
        __m256i b8 = _mm256_permute4x64_epi64(_mm256_packus_epi16(w, w), 0x08);
        _mm_storeu_si128((__m128i *)(out + x), _mm256_castsi256_si128(b8));
    }
    ln_gray_row_scalar(src + (size_t)x * channels, channels, width - x, out + x);
}

#endif
