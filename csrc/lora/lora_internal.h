/* Private to csrc/lora/ and the similarity search (csrc/hash/embed_search.c): exact fp16/bf16
 * conversions and the packed fp32 GEMM core shared by merge, the fused branch and that search.
 * Every kernel has a scalar reference and an AVX2/FMA/F16C version (lora_avx2.c) selected at run time; they agree up to fp32 accumulation order (FMA vs mul+add),
 * conversions and epilogues are bit-identical. */
#ifndef LN_LORA_INTERNAL_H
#define LN_LORA_INTERNAL_H

#include "ln_lora.h"

#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define LN_LORA_X86 1
#endif

static inline uint32_t ln_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float ln_bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline float ln_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (exp == 0x1f) /* inf/NaN; NaN comes back quiet, as F16C does */
        return ln_bits_f32(sign | 0x7f800000u | (mant << 13) | (mant ? 0x400000u : 0));
    if (exp == 0) { /* zero or subnormal: mant * 2^-24 is exact in fp32 */
        float f = (float)mant * 5.9604644775390625e-8f;
        return ln_bits_f32(sign | ln_f32_bits(f));
    }
    return ln_bits_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

/* Round to nearest even, subnormals and overflow to inf included (F16C's result). */
static inline uint16_t ln_f32_to_f16(float f)
{
    uint32_t x = ln_f32_bits(f), sign = (x >> 16) & 0x8000u;
    x &= 0x7fffffffu;
    if (x >= 0x7f800000u) /* inf, or NaN kept quiet with its top payload bits */
        return (uint16_t)(sign | (x > 0x7f800000u ? 0x7e00u | ((x >> 13) & 0x3ffu) : 0x7c00u));
    if (x >= 0x477ff000u) /* >= 65520 rounds past the largest half */
        return (uint16_t)(sign | 0x7c00u);
    if (x < 0x38800000u) { /* result is subnormal: let the fp32 adder round at 2^-24 */
        float v = ln_bits_f32(x) + 0.5f;
        return (uint16_t)(sign | (ln_f32_bits(v) - 0x3f000000u));
    }
    uint32_t odd = (x >> 13) & 1u;
    x += 0xc8000fffu + odd; /* rebias exponent (-112 << 23) and round half to even */
    return (uint16_t)(sign | (x >> 13));
}

static inline float ln_bf16_to_f32(uint16_t h) { return ln_bits_f32((uint32_t)h << 16); }

static inline uint16_t ln_f32_to_bf16(float f)
{
    uint32_t x = ln_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40u);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

static inline size_t ln_dtype_size(ln_dtype dt) { return dt == LN_DT_F32 ? 4 : 2; }

static inline float ln_load(const void *p, ln_dtype dt, int64_t i)
{
    switch (dt) {
    case LN_DT_F16: return ln_f16_to_f32(((const uint16_t *)p)[i]);
    case LN_DT_BF16: return ln_bf16_to_f32(((const uint16_t *)p)[i]);
    default: return ((const float *)p)[i];
    }
}

static inline void ln_store(void *p, ln_dtype dt, int64_t i, float v)
{
    switch (dt) {
    case LN_DT_F16: ((uint16_t *)p)[i] = ln_f32_to_f16(v); break;
    case LN_DT_BF16: ((uint16_t *)p)[i] = ln_f32_to_bf16(v); break;
    default: ((float *)p)[i] = v; break;
    }
}

/* ---- packed GEMM: C[M, N] (+)= alpha * A[M, K] @ B[K, N] ---- */
#define LN_MR 6    /* micro-tile rows */
#define LN_NR 16   /* micro-tile columns (two AVX2 vectors) */
#define LN_MC 48   /* rows per block */
#define LN_KC 512  /* K per block: the B block stays in L2 */
#define LN_NCB 256 /* columns per fp32 accumulator block when K > LN_KC */

/* A strided matrix of any dtype; mask (optional, fp32, same strides) multiplies it on packing. */
typedef struct {
    const void *p;
    ln_dtype dt;
    int64_t rs, cs;
    const float *mask;
} ln_mat;

/* Where a result goes: C = alpha * acc, or C += alpha * acc; backup gets C's old bits. */
typedef struct {
    void *p;
    ln_dtype dt;
    int64_t rs, cs;
    void *backup;
    int accumulate;
    float alpha;
} ln_out;

typedef struct {
    void (*ukr)(int64_t kc, const float *a, int64_t ars, int64_t aks, int mr, const float *b, float *c, int64_t ldc,
                int add);
    void (*epi_row)(const float *t, int64_t n, char *c, ln_dtype dt, int64_t cs, char *bk, int accumulate,
                    float alpha);
    void (*cvt_row)(const void *src, ln_dtype dt, int64_t n, const float *mask, float *dst);
    /* A^T-style panels: dst[p][k][6] from rows with unit row stride (rs == 1). */
    void (*pack_panels)(const ln_mat *a, int64_t mc, int64_t k0, int64_t kc, float *dst);
} ln_kern;

void ln_kern_select(ln_kern *k, const ln_settings *settings);

/* Floats of packed B: ceil(N / 16) panels of K x 16. */
int ln_packed_b_size(int64_t k, int64_t n, size_t *out);
/* Packs rows [0, kcount) of src ([kcount, N], times scale) into rows [k0, k0 + kcount) of the
 * packed B with kt rows in all (columns past N are zero). */
void ln_pack_b(float *bp, int64_t kt, int64_t k0, const ln_mat *src, int64_t kcount, int64_t n, float scale);

/* Floats of per-worker scratch ln_gemm_rows needs. */
#define LN_SCRATCH_FLOATS ((size_t)LN_MC * LN_KC + (size_t)LN_MC * LN_NCB + 64)
/* One thread: rows [0, mc) (mc <= LN_MC) of A (a->p at the block's first row) times packed B
 * (bp at the first column panel, ncols columns, k rows) into out (at the block's first element). */
void ln_gemm_rows(const ln_kern *kn, const ln_mat *a, int64_t mc, int64_t k, const float *bp, int64_t ncols,
                  const ln_out *out, float *scratch);

/* The whole product on `threads` threads, over row and column blocks (each output is computed by
 * one task in a fixed order: results do not depend on the thread count). */
int ln_gemm(const ln_kern *kn, int threads, const ln_mat *a, int64_t m, int64_t k, const float *bp, int64_t n,
            const ln_out *out, ln_error *err);

/* LN_ERR_ARG unless dt is one of ln_dtype's values; `what` names the argument. */
int ln_lora_check_dtype(ln_dtype dt, const char *what, ln_error *err);

/* 64-byte aligned, checked; n floats. */
float *ln_falloc(size_t n);

#ifdef LN_LORA_X86
void ln_ukr_avx2(int64_t kc, const float *a, int64_t ars, int64_t aks, int mr, const float *b, float *c, int64_t ldc,
                 int add);
void ln_epi_row_avx2(const float *t, int64_t n, char *c, ln_dtype dt, int64_t cs, char *bk, int accumulate,
                     float alpha);
void ln_cvt_row_avx2(const void *src, ln_dtype dt, int64_t n, const float *mask, float *dst);
void ln_pack_panels_avx2(const ln_mat *a, int64_t mc, int64_t k0, int64_t kc, float *dst);
#endif

#endif
