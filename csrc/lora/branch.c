/* The fused LoRA branch of a Linear layer. Forward and the row-wise half of backward run per
 * block of LN_MC rows, both GEMMs back to back while the block's h (or g) is in cache; the
 * reductions over M (dup, ddown) are GEMMs with M as K, parallel over their output rows, so
 * every output has one fixed summation order whatever the thread count. */
#include "lora_internal.h"

#include <stdio.h>
#include <stdlib.h>

static int check_shapes(const char *fn, const void *x, ln_dtype x_dtype, const void *t, ln_dtype t_dtype,
                        const char *tname, int64_t m, int64_t in, int64_t out, int64_t r, const float *down,
                        const float *up, ln_error *err)
{
    if (!x || !t || !down || !up)
        return ln_fail(err, LN_ERR_ARG, "%s: x, %s, down and up must not be NULL", fn, tname);
    if (m <= 0 || in <= 0 || out <= 0 || r <= 0)
        return ln_fail(err, LN_ERR_ARG, "%s: m, in, out and rank must be positive, got m=%lld in=%lld out=%lld rank=%lld",
                       fn, (long long)m, (long long)in, (long long)out, (long long)r);
    char what[64];
    snprintf(what, sizeof what, "%s: x", fn);
    if (ln_lora_check_dtype(x_dtype, what, err))
        return LN_ERR_ARG;
    snprintf(what, sizeof what, "%s: %s", fn, tname);
    if (ln_lora_check_dtype(t_dtype, what, err))
        return LN_ERR_ARG;
    size_t s;
    int64_t big = in > out ? in : out;
    if (big < r)
        big = r;
    /* Every operand's element count (and byte size) then fits. */
    if (!ln_mul_size((size_t)m, (size_t)big, &s) || s > (size_t)INT64_MAX / 8 ||
        !ln_mul_size((size_t)r, (size_t)(in > out ? in : out), &s) || s > (size_t)INT64_MAX / 8)
        return ln_fail(err, LN_ERR_ARG, "%s: sizes m=%lld in=%lld out=%lld rank=%lld overflow", fn, (long long)m,
                       (long long)in, (long long)out, (long long)r);
    return LN_OK;
}

/* Packs src as B ([k, n]) into a new buffer; NULL when out of memory. */
static float *pack_new(const ln_mat *src, int64_t k, int64_t n, float scale)
{
    size_t sz;
    if (!ln_packed_b_size(k, n, &sz))
        return NULL;
    float *bp = ln_falloc(sz);
    if (bp)
        ln_pack_b(bp, k, 0, src, k, n, scale);
    return bp;
}

static int64_t nblocks(int64_t m) { return (m + LN_MC - 1) / LN_MC; }

typedef struct {
    ln_kern kn;
    const void *x;
    ln_dtype x_dt;
    int64_t m, in, out, r;
    const float *mask;
    float scale;
    void *y;
    ln_dtype y_dt;
    float *h;
    const float *bp_down, *bp_up;
    float *scratch, *hbuf;
} fwd_job;

static void fwd_task(void *ctx, size_t index, int worker)
{
    fwd_job *j = ctx;
    int64_t m0 = (int64_t)index * LN_MC, mc = j->m - m0 < LN_MC ? j->m - m0 : LN_MC;
    float *scratch = j->scratch + (size_t)worker * LN_SCRATCH_FLOATS;
    float *hb = j->h ? j->h + m0 * j->r : j->hbuf + (size_t)worker * LN_MC * (size_t)j->r;
    ln_mat xa = {(const char *)j->x + (size_t)(m0 * j->in) * ln_dtype_size(j->x_dt), j->x_dt, j->in, 1, NULL};
    ln_out ho = {hb, LN_DT_F32, j->r, 1, NULL, 0, 1.0f};
    ln_gemm_rows(&j->kn, &xa, mc, j->in, j->bp_down, j->r, &ho, scratch);
    ln_mat ha = {hb, LN_DT_F32, j->r, 1, j->mask ? j->mask + m0 * j->r : NULL};
    ln_out yo = {(char *)j->y + (size_t)(m0 * j->out) * ln_dtype_size(j->y_dt), j->y_dt, j->out, 1, NULL, 1, j->scale};
    ln_gemm_rows(&j->kn, &ha, mc, j->r, j->bp_up, j->out, &yo, scratch);
}

int ln_lora_branch_forward(const void *x, ln_dtype x_dtype, int64_t m, int64_t in, int64_t out, int64_t r,
                           const float *down, const float *up, const float *mask, float scale, void *y,
                           ln_dtype y_dtype, float *h, int threads, const ln_settings *settings, ln_error *err)
{
    ln_error_clear(err);
    int rc = check_shapes("lora_branch_forward", x, x_dtype, y, y_dtype, "y", m, in, out, r, down, up, err);
    if (rc)
        return rc;
    fwd_job j = {.x = x, .x_dt = x_dtype, .m = m, .in = in, .out = out, .r = r, .mask = mask, .scale = scale,
                 .y = y, .y_dt = y_dtype, .h = h};
    ln_settings fallback;
    ln_kern_select(&j.kn, ln_settings_or_default(settings, &fallback));
    size_t tasks = (size_t)nblocks(m);
    int t = ln_resolve_threads(threads, tasks);
    ln_mat dT = {down, LN_DT_F32, 1, in, NULL}; /* B[k=i, n=q] = down[q, i] */
    ln_mat uT = {up, LN_DT_F32, 1, r, NULL};    /* B[k=q, n=o] = up[o, q] */
    float *bp_down = pack_new(&dT, in, r, 1.0f), *bp_up = pack_new(&uT, r, out, 1.0f);
    float *scratch = ln_falloc((size_t)t * LN_SCRATCH_FLOATS);
    float *hbuf = h ? NULL : ln_falloc((size_t)t * LN_MC * (size_t)r);
    if (!bp_down || !bp_up || !scratch || (!h && !hbuf)) {
        rc = ln_fail(err, LN_ERR_NOMEM, "lora_branch_forward: out of memory (in=%lld out=%lld rank=%lld)",
                     (long long)in, (long long)out, (long long)r);
    } else {
        j.bp_down = bp_down;
        j.bp_up = bp_up;
        j.scratch = scratch;
        j.hbuf = hbuf;
        ln_parallel_for(threads, tasks, 1, fwd_task, &j);
    }
    free(bp_down);
    free(bp_up);
    free(scratch);
    free(hbuf);
    return rc;
}

typedef struct {
    ln_kern kn;
    const void *dy;
    ln_dtype dy_dt;
    int64_t m, in, out, r;
    const float *mask;
    float scale;
    float *g;
    void *dx;
    ln_dtype dx_dt;
    int dx_accumulate;
    const float *bp_up, *bp_down;
    float *scratch;
} bwd_job;

/* g = scale * (dy @ up) * mask and dx (+)= g @ down for one block of rows. */
static void bwd_rows_task(void *ctx, size_t index, int worker)
{
    bwd_job *j = ctx;
    int64_t m0 = (int64_t)index * LN_MC, mc = j->m - m0 < LN_MC ? j->m - m0 : LN_MC;
    float *scratch = j->scratch + (size_t)worker * LN_SCRATCH_FLOATS;
    float *gb = j->g + m0 * j->r;
    ln_mat dya = {(const char *)j->dy + (size_t)(m0 * j->out) * ln_dtype_size(j->dy_dt), j->dy_dt, j->out, 1, NULL};
    ln_out go = {gb, LN_DT_F32, j->r, 1, NULL, 0, j->scale};
    ln_gemm_rows(&j->kn, &dya, mc, j->out, j->bp_up, j->r, &go, scratch);
    if (j->mask) {
        const float *mk = j->mask + m0 * j->r;
        for (int64_t i = 0; i < mc * j->r; i++)
            gb[i] *= mk[i];
    }
    if (j->dx) {
        ln_mat ga = {gb, LN_DT_F32, j->r, 1, NULL};
        ln_out dxo = {(char *)j->dx + (size_t)(m0 * j->in) * ln_dtype_size(j->dx_dt), j->dx_dt, j->in, 1, NULL,
                      j->dx_accumulate, 1.0f};
        ln_gemm_rows(&j->kn, &ga, mc, j->r, j->bp_down, j->in, &dxo, scratch);
    }
}

int ln_lora_branch_backward(const void *dy, ln_dtype dy_dtype, const void *x, ln_dtype x_dtype, int64_t m, int64_t in,
                            int64_t out, int64_t r, const float *down, const float *up, const float *h,
                            const float *mask, float scale, float *ddown, float *dup, void *dx, ln_dtype dx_dtype,
                            int dx_accumulate, int threads, const ln_settings *settings, ln_error *err)
{
    ln_error_clear(err);
    int rc = check_shapes("lora_branch_backward", x, x_dtype, dy, dy_dtype, "dy", m, in, out, r, down, up, err);
    if (rc)
        return rc;
    if (!h || !ddown || !dup)
        return ln_fail(err, LN_ERR_ARG, "lora_branch_backward: h, ddown and dup must not be NULL");
    if (dx && ln_lora_check_dtype(dx_dtype, "lora_branch_backward: dx", err))
        return LN_ERR_ARG;
    bwd_job j = {.dy = dy, .dy_dt = dy_dtype, .m = m, .in = in, .out = out, .r = r, .mask = mask, .scale = scale,
                 .dx = dx, .dx_dt = dx_dtype, .dx_accumulate = dx_accumulate};
    ln_settings fallback;
    ln_kern_select(&j.kn, ln_settings_or_default(settings, &fallback));
    size_t tasks = (size_t)nblocks(m);
    int t = ln_resolve_threads(threads, tasks);
    ln_mat um = {up, LN_DT_F32, r, 1, NULL};   /* B[k=o, n=q] = up[o, q] */
    ln_mat dm = {down, LN_DT_F32, in, 1, NULL}; /* B[k=q, n=i] = down[q, i] */
    ln_mat hm = {h, LN_DT_F32, r, 1, mask};     /* h * mask, [M, r] */
    float *bp_up = pack_new(&um, out, r, 1.0f), *bp_down = dx ? pack_new(&dm, r, in, 1.0f) : NULL;
    float *bp_h = pack_new(&hm, m, r, 1.0f);
    float *scratch = ln_falloc((size_t)t * LN_SCRATCH_FLOATS);
    float *g = ln_falloc((size_t)(m * r));
    float *bp_g = NULL;
    if (!bp_up || (dx && !bp_down) || !bp_h || !scratch || !g) {
        rc = ln_fail(err, LN_ERR_NOMEM, "lora_branch_backward: out of memory (m=%lld in=%lld out=%lld rank=%lld)",
                     (long long)m, (long long)in, (long long)out, (long long)r);
        goto done;
    }
    j.g = g;
    j.bp_up = bp_up;
    j.bp_down = bp_down;
    j.scratch = scratch;
    ln_parallel_for(threads, tasks, 1, bwd_rows_task, &j);
    /* dup = scale * dy^T @ (h * mask): rows of dup are columns of dy. */
    ln_mat dyT = {dy, dy_dtype, 1, out, NULL};
    ln_out dupo = {dup, LN_DT_F32, r, 1, NULL, 0, scale};
    if ((rc = ln_gemm(&j.kn, threads, &dyT, out, m, bp_h, r, &dupo, err)) != LN_OK)
        goto done;
    /* ddown^T [in, r] = x^T @ g, written transposed into ddown [r, in]. */
    ln_mat gm = {g, LN_DT_F32, r, 1, NULL};
    if (!(bp_g = pack_new(&gm, m, r, 1.0f))) {
        rc = ln_fail(err, LN_ERR_NOMEM, "lora_branch_backward: out of memory packing g (m=%lld rank=%lld)",
                     (long long)m, (long long)r);
        goto done;
    }
    ln_mat xT = {x, x_dtype, 1, in, NULL};
    ln_out ddo = {ddown, LN_DT_F32, 1, in, NULL, 0, 1.0f};
    rc = ln_gemm(&j.kn, threads, &xT, in, m, bp_g, r, &ddo, err);
done:
    free(bp_up);
    free(bp_down);
    free(bp_h);
    free(scratch);
    free(g);
    free(bp_g);
    return rc;
}
