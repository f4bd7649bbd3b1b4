/* The packed fp32 GEMM behind merge and the fused branch, with the scalar reference kernels.
 * B (the small operand: LoRA factors, h, g) is packed once into 16-column panels; A (the big
 * one: x, dy, W's factor) is read in place when it is fp32 with unit column stride, converted
 * row by row otherwise, or packed into 6-row panels when transposed (dy^T, x^T). A 6x16 fp32
 * micro-tile is accumulated over K and handed to an epilogue that converts, adds and rounds
 * once into the output's dtype. */
#include "lora_internal.h"

#include <stdlib.h>

float *ln_falloc(size_t n)
{
    size_t bytes;
    if (!ln_mul_size(n ? n : 1, sizeof(float), &bytes) || bytes > SIZE_MAX - 64)
        return NULL;
    bytes = (bytes + 63) & ~(size_t)63; /* aligned_alloc wants a multiple of the alignment */
    return aligned_alloc(64, bytes);
}

static void ukr_scalar(int64_t kc, const float *a, int64_t ars, int64_t aks, int mr, const float *b, float *c,
                       int64_t ldc, int add)
{
    const float *ap[LN_MR];
    float acc[LN_MR][LN_NR] = {{0}};
    for (int i = 0; i < LN_MR; i++)
        ap[i] = a + (i < mr ? i : 0) * ars; /* rows past mr repeat row 0: never out of bounds */
    for (int64_t k = 0, off = 0; k < kc; k++, off += aks) {
        const float *bk = b + k * LN_NR;
        for (int i = 0; i < LN_MR; i++) {
            float av = ap[i][off];
            for (int j = 0; j < LN_NR; j++)
                acc[i][j] += av * bk[j];
        }
    }
    for (int i = 0; i < LN_MR; i++)
        for (int j = 0; j < LN_NR; j++)
            c[i * ldc + j] = add ? c[i * ldc + j] + acc[i][j] : acc[i][j];
}

static void epi_row_scalar(const float *t, int64_t n, char *c, ln_dtype dt, int64_t cs, char *bk, int accumulate,
                           float alpha)
{
    size_t es = ln_dtype_size(dt);
    for (int64_t j = 0; j < n; j++) {
        char *cj = c + (size_t)(j * cs) * es;
        float v = alpha * t[j];
        if (bk)
            memcpy(bk + (size_t)(j * cs) * es, cj, es);
        if (accumulate)
            v = ln_load(cj, dt, 0) + v;
        ln_store(cj, dt, 0, v);
    }
}

static void cvt_row_scalar(const void *src, ln_dtype dt, int64_t n, const float *mask, float *dst)
{
    for (int64_t j = 0; j < n; j++)
        dst[j] = mask ? ln_load(src, dt, j) * mask[j] : ln_load(src, dt, j);
}

static void pack_panels_scalar(const ln_mat *a, int64_t mc, int64_t k0, int64_t kc, float *dst)
{
    for (int64_t p = 0; p < mc; p += LN_MR, dst += LN_MR * kc)
        for (int64_t k = 0; k < kc; k++)
            for (int i = 0; i < LN_MR; i++) {
                int64_t idx = (p + i) * a->rs + (k0 + k) * a->cs;
                float v = p + i < mc ? ln_load(a->p, a->dt, idx) : 0.0f;
                dst[k * LN_MR + i] = a->mask && p + i < mc ? v * a->mask[idx] : v;
            }
}

void ln_kern_select(ln_kern *k, const ln_settings *settings)
{
    k->ukr = ukr_scalar;
    k->epi_row = epi_row_scalar;
    k->cvt_row = cvt_row_scalar;
    k->pack_panels = pack_panels_scalar;
#ifdef LN_LORA_X86
    if (settings && settings->simd >= LN_SIMD_AVX2) {
        k->ukr = ln_ukr_avx2;
        k->epi_row = ln_epi_row_avx2;
        k->cvt_row = ln_cvt_row_avx2;
        k->pack_panels = ln_pack_panels_avx2;
    }
#else
    (void)settings;
#endif
}

int ln_packed_b_size(int64_t k, int64_t n, size_t *out)
{
    size_t panels = (size_t)((n + LN_NR - 1) / LN_NR), t;
    return ln_mul_size(panels, (size_t)k, &t) && ln_mul_size(t, LN_NR, out);
}

void ln_pack_b(float *bp, int64_t kt, int64_t k0, const ln_mat *src, int64_t kcount, int64_t n, float scale)
{
    for (int64_t j0 = 0; j0 < n; j0 += LN_NR) {
        float *panel = bp + (j0 / LN_NR) * kt * LN_NR + k0 * LN_NR;
        int64_t nr = n - j0 < LN_NR ? n - j0 : LN_NR;
        for (int64_t k = 0; k < kcount; k++) {
            float *row = panel + k * LN_NR;
            for (int64_t j = 0; j < nr; j++) {
                int64_t idx = k * src->rs + (j0 + j) * src->cs;
                float v = ln_load(src->p, src->dt, idx);
                if (src->mask)
                    v *= src->mask[idx];
                row[j] = scale == 1.0f ? v : v * scale;
            }
            for (int64_t j = nr; j < LN_NR; j++)
                row[j] = 0.0f;
        }
    }
}

/* The A block [mc, kb) of rows as (base, row stride, k stride, panel stride) for the micro-kernel. */
typedef struct {
    const float *base;
    int64_t ars, aks, pstride;
} a_view;

static a_view prepare_a(const ln_kern *kn, const ln_mat *a, int64_t mc, int64_t k0, int64_t kc, float *abuf)
{
    a_view v;
    if (a->cs == 1 && a->dt == LN_DT_F32 && !a->mask) {
        v.base = (const float *)a->p + k0;
        v.ars = a->rs;
        v.aks = 1;
        v.pstride = LN_MR * a->rs;
    } else if (a->cs == 1) {
        size_t es = ln_dtype_size(a->dt);
        for (int64_t i = 0; i < mc; i++) {
            int64_t off = i * a->rs + k0;
            kn->cvt_row((const char *)a->p + (size_t)off * es, a->dt, kc, a->mask ? a->mask + off : NULL,
                        abuf + i * kc);
        }
        v.base = abuf;
        v.ars = kc;
        v.aks = 1;
        v.pstride = LN_MR * kc;
    } else {
        kn->pack_panels(a, mc, k0, kc, abuf);
        v.base = abuf;
        v.ars = 1;
        v.aks = LN_MR;
        v.pstride = LN_MR * kc;
    }
    return v;
}

static void epilogue(const ln_kern *kn, const float *t, int64_t ldt, int64_t mr, int64_t nr, const ln_out *o,
                     int64_t row, int64_t col)
{
    size_t es = ln_dtype_size(o->dt);
    for (int64_t i = 0; i < mr; i++) {
        size_t off = (size_t)((row + i) * o->rs + col * o->cs) * es;
        kn->epi_row(t + i * ldt, nr, (char *)o->p + off, o->dt, o->cs, o->backup ? (char *)o->backup + off : NULL,
                    o->accumulate, o->alpha);
    }
}

void ln_gemm_rows(const ln_kern *kn, const ln_mat *a, int64_t mc, int64_t k, const float *bp, int64_t ncols,
                  const ln_out *out, float *scratch)
{
    float *abuf = scratch, *acc = scratch + (size_t)LN_MC * LN_KC + 32;
    float tile[LN_MR * LN_NR];
    if (k <= LN_KC) {
        a_view av = prepare_a(kn, a, mc, 0, k, abuf);
        for (int64_t j = 0; j < ncols; j += LN_NR) {
            const float *bj = bp + (j / LN_NR) * k * LN_NR;
            int64_t nr = ncols - j < LN_NR ? ncols - j : LN_NR;
            for (int64_t i = 0; i < mc; i += LN_MR) {
                int mr = (int)(mc - i < LN_MR ? mc - i : LN_MR);
                kn->ukr(k, av.base + (i / LN_MR) * av.pstride, av.ars, av.aks, mr, bj, tile, LN_NR, 0);
                epilogue(kn, tile, LN_NR, mr, nr, out, i, j);
            }
        }
        return;
    }
    /* Long K: fp32 partial sums of a column block in acc, one K block at a time. */
    for (int64_t n0 = 0; n0 < ncols; n0 += LN_NCB) {
        int64_t nc = ncols - n0 < LN_NCB ? ncols - n0 : LN_NCB;
        for (int64_t k0 = 0; k0 < k; k0 += LN_KC) {
            int64_t kc = k - k0 < LN_KC ? k - k0 : LN_KC;
            a_view av = prepare_a(kn, a, mc, k0, kc, abuf);
            for (int64_t j = 0; j < nc; j += LN_NR) {
                const float *bj = bp + ((n0 + j) / LN_NR) * k * LN_NR + k0 * LN_NR;
                for (int64_t i = 0; i < mc; i += LN_MR) {
                    int mr = (int)(mc - i < LN_MR ? mc - i : LN_MR);
                    kn->ukr(kc, av.base + (i / LN_MR) * av.pstride, av.ars, av.aks, mr, bj, acc + i * LN_NCB + j,
                            LN_NCB, k0 > 0);
                }
            }
        }
        for (int64_t i = 0; i < mc; i += LN_MR) {
            int64_t mr = mc - i < LN_MR ? mc - i : LN_MR;
            epilogue(kn, acc + i * LN_NCB, LN_NCB, mr, nc, out, i, n0);
        }
    }
}

typedef struct {
    const ln_kern *kn;
    const ln_mat *a;
    const float *bp;
    const ln_out *out;
    int64_t m, k, n, mb, nb, nblocks;
    float *scratch;
} gemm_job;

static void gemm_task(void *ctx, size_t index, int worker)
{
    gemm_job *g = ctx;
    int64_t bi = (int64_t)index / g->nblocks, bj = (int64_t)index % g->nblocks;
    int64_t m0 = bi * g->mb, n0 = bj * g->nb;
    int64_t mc = g->m - m0 < g->mb ? g->m - m0 : g->mb, nc = g->n - n0 < g->nb ? g->n - n0 : g->nb;
    ln_mat a = *g->a;
    a.p = (const char *)a.p + (size_t)(m0 * a.rs) * ln_dtype_size(a.dt);
    if (a.mask)
        a.mask += m0 * a.rs;
    ln_out o = *g->out;
    size_t off = (size_t)(m0 * o.rs + n0 * o.cs) * ln_dtype_size(o.dt);
    o.p = (char *)o.p + off;
    if (o.backup)
        o.backup = (char *)o.backup + off;
    ln_gemm_rows(g->kn, &a, mc, g->k, g->bp + (n0 / LN_NR) * g->k * LN_NR, nc, &o,
                 g->scratch + (size_t)worker * LN_SCRATCH_FLOATS);
}

int ln_gemm(const ln_kern *kn, int threads, const ln_mat *a, int64_t m, int64_t k, const float *bp, int64_t n,
            const ln_out *out, ln_error *err)
{
    int t = ln_resolve_threads(threads, (size_t)-1);
    int64_t want = 4 * (int64_t)t; /* enough tasks to balance, few enough to amortise packing */
    int64_t mb = LN_MC, nb = (n + LN_NR - 1) / LN_NR * LN_NR;
    if ((m + mb - 1) / mb < want) {
        mb = (m / want + LN_MR - 1) / LN_MR * LN_MR;
        if (mb < LN_MR)
            mb = LN_MR;
    }
    int64_t mblocks = (m + mb - 1) / mb;
    if (mblocks < want) {
        int64_t split = (want + mblocks - 1) / mblocks;
        nb = ((n + split - 1) / split + LN_NR - 1) / LN_NR * LN_NR;
    }
    int64_t nblocks = (n + nb - 1) / nb;
    size_t tasks = (size_t)(mblocks * nblocks);
    t = ln_resolve_threads(threads, tasks);
    gemm_job job = {kn, a, bp, out, m, k, n, mb, nb, nblocks, NULL};
    job.scratch = ln_falloc((size_t)t * LN_SCRATCH_FLOATS);
    if (!job.scratch)
        return ln_fail(err, LN_ERR_NOMEM, "out of memory for GEMM scratch (%d threads)", t);
    ln_parallel_for(threads, tasks, 1, gemm_task, &job);
    free(job.scratch);
    return LN_OK;
}
