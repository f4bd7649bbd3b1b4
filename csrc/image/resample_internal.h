/* Private to csrc/image/ and csrc/hash/: the fixed-point kernel tables and row passes
 * behind ln_resample, shared with the hash pipeline (which runs three resizes off one
 * grayscale row stream). Every pass has a scalar reference and an AVX2 version that
 * must agree bit for bit (integer arithmetic, wrapping like Pillow's int sums). */
#ifndef LN_RESAMPLE_INTERNAL_H
#define LN_RESAMPLE_INTERNAL_H

#include "ln_resample.h"

/* Pillow's PRECISION_BITS: 8 bits of result, 2 of headroom in an int32 sum. */
#define LN_PRECISION_BITS 22
/* Padding (in taps or pixels) a source row needs past its end for the vector kernels. */
#define LN_ROW_PAD 16
/* Pillow's rounding bias of every weighted sum. */
#define LN_BIAS (1u << (LN_PRECISION_BITS - 1))
/* The double M_PI of the C headers (not defined under strict C11). */
#define LN_PI 3.14159265358979323846

/* Pillow's clip8: (sum >> PRECISION_BITS) clamped to 0..255. Sums are accumulated as
 * uint32 (wrapping like Pillow's int, without signed-overflow UB) and read back signed. */
static inline uint8_t ln_clip8(uint32_t acc)
{
    int32_t v = (int32_t)acc >> LN_PRECISION_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* Fixed-point weights of one axis: output i reads `count[i]` source samples from `start[i]`. */
typedef struct {
    int in_size, out_size;
    float in0, in1;
    ln_filter filter;
    int kstride;     /* taps stored per output: Pillow's ksize + 18 (lead, overreads), rounded up to 16 */
    int first, last; /* source range the outputs read, [first, last), as Pillow's ybox */
    int simd_ok;     /* every weight splits exactly into the int16 halves below */
    int *start, *count;
    int32_t *k;      /* out_size * kstride, zero past count */
    /* The int16 halves of output i sit at [i * kstride + lead[i], ...), after lead[i] zeros,
     * lead[i] = start[i] % 16 for long windows: the vector kernels then read source rows
     * from start - lead in 32-byte aligned blocks. */
    int16_t *k_lo;   /* low 16 bits as signed: k == k_hi * 2^16 + k_lo */
    int16_t *k_hi;   /* (k - k_lo) >> 16: zero wherever |k| < 2^15 */
    int *lead;
    int *hi_begin, *hi_end; /* per output, counted from the lead: the 16-tap blocks [begin, end)
                             * where some k_hi != 0 */
    int libm_rows;   /* outputs whose weights came from libm (all of them unless the fast path ran) */
} ln_kernels;

int ln_kernels_build(ln_kernels *kt, int in_size, float in0, float in1, int out_size, ln_filter filter,
                     const ln_settings *settings, ln_error *err);
/* The same with the fast Lanczos path (needs AVX2: the caller decides) allowed or not: the tables are
 * identical either way; the tests compare them. */
int ln_kernels_build_ex(ln_kernels *kt, int in_size, float in0, float in1, int out_size, ln_filter filter,
                        int allow_fast, ln_error *err);
void ln_kernels_free(ln_kernels *kt);

/* Pillow's resize skips a pass when that axis is unchanged and the box is trivial. */
int ln_resample_need_pass(int in_size, float b0, float b1, int out_size);

/* Pillow's pass order for a two-pass resize of in_w x in_h to out_w x out_h. */
int ln_resample_vertical_first(int in_w, int in_h, int out_w, int out_h, int pillow_compat);
/* Both passes with prepared tables (kv always: its source range is Pillow's ybox; kh when
 * need_h), in Pillow's order. `in` and `out` are checked by the caller. */
int ln_resample_run(const ln_image *in, ln_image *out, const ln_kernels *kh, const ln_kernels *kv, int need_h,
                    int need_v, const ln_settings *settings, ln_error *err);

/* Whether to take the AVX2 paths under these settings (built with them and allowed). */
int ln_use_avx2(const ln_settings *settings);
/* The vertical pass (see ln_vpass_scalar/ln_vpass_avx2), vectorised when `avx2` and the table allow. */
void ln_vpass(const ln_kernels *kt, const uint8_t *src, int row0, size_t stride, size_t width_bytes,
              size_t src_readable, uint8_t *out, size_t out_stride, int avx2);
/* One row of RGB(A) to L, vectorised when `avx2`. */
void ln_gray_row(const uint8_t *src, int channels, int width, uint8_t *out, int avx2);

/* Horizontal pass, one output row (out_size * channels bytes), any channel count: Pillow's loop. */
void ln_hrow_scalar(const ln_kernels *kt, const uint8_t *src, int channels, uint8_t *out);
/* Vertical pass over `width_bytes` columns (channel-agnostic): source row r (r >= row0) is
 * src + (r - row0) * stride, output row i of the table goes to out + i * out_stride. */
void ln_vpass_scalar(const ln_kernels *kt, const uint8_t *src, int row0, size_t stride, size_t width_bytes,
                     uint8_t *out, size_t out_stride);
void ln_gray_row_scalar(const uint8_t *src, int channels, int width, uint8_t *out);

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define LN_X86_SIMD 1
/* AVX2 versions (csrc/image/resample_avx2.c); callers check ln_use_avx2() and kt->simd_ok. */
/* Widen a 1-channel row to int16 with LN_ROW_PAD zeros after it (dst holds width + LN_ROW_PAD). */
void ln_widen_row1_avx2(const uint8_t *src, int width, int16_t *dst);
void ln_hrow1_avx2(const ln_kernels *kt, const int16_t *r0, uint8_t *o0);
/* Four rows through the same 1-channel kernels (shares the weight loads). */
void ln_hrow1x4_avx2(const ln_kernels *kt, const int16_t *const r[4], uint8_t *const o[4]);
/* 3/4 channels: src widened to int16 RGBX (4 per pixel) with LN_ROW_PAD zero pixels after it. */
void ln_widen_row4_avx2(const uint8_t *src, int channels, int width, int16_t *dst);
void ln_hrow4_avx2(const ln_kernels *kt, const int16_t *src4, int channels, uint8_t *out);
/* `src_readable`: bytes readable in each source row (>= width_bytes); reads past width_bytes
 * up to it let narrow rows use full vectors. */
void ln_vpass_avx2(const ln_kernels *kt, const uint8_t *src, int row0, size_t stride, size_t width_bytes,
                   size_t src_readable, uint8_t *out, size_t out_stride);
void ln_gray_row_avx2(const uint8_t *src, int channels, int width, uint8_t *out);
/* Fixed-point Lanczos weights of one output (csrc/image/lanczos_avx2.c) without libm sin;
 * returns 0, leaving k undefined, when it cannot prove they equal the libm ones. `w` is
 * scratch for n doubles. */
int ln_lanczos_weights_avx2(double center, int xmin, int n, double inv_filterscale, double *w, int32_t *k);
#endif

#endif
