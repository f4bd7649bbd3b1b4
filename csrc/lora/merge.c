/* In-place multi-LoRA merge: every term is stacked into one rank-R product
 * (Bcat[rows, R] = [s_1 up_1 | s_2 up_2 | ...] in fp32, Acat[R, cols] = [down_1; down_2; ...]
 * packed once), so W is read, updated and rounded in a single pass. */
#include "lora_internal.h"

#include <stdlib.h>

int ln_lora_check_dtype(ln_dtype dt, const char *what, ln_error *err)
{
    if (dt != LN_DT_F32 && dt != LN_DT_F16 && dt != LN_DT_BF16)
        return ln_fail(err, LN_ERR_ARG, "%s: unknown dtype %d (0 = f32, 1 = f16, 2 = bf16)", what, (int)dt);
    return LN_OK;
}

typedef struct {
    const ln_lora_term *terms;
    int nterms;
    int64_t rows, rtot;
    float *bcat;
} bcat_job;

#define BCAT_ROWS 256

static void bcat_task(void *ctx, size_t index, int worker)
{
    (void)worker;
    bcat_job *j = ctx;
    int64_t r0 = (int64_t)index * BCAT_ROWS, r1 = r0 + BCAT_ROWS < j->rows ? r0 + BCAT_ROWS : j->rows;
    int64_t koff = 0;
    for (int t = 0; t < j->nterms; t++) {
        const ln_lora_term *tm = &j->terms[t];
        for (int64_t r = r0; r < r1; r++) {
            float *dst = j->bcat + r * j->rtot + koff;
            for (int64_t q = 0; q < tm->rank; q++)
                dst[q] = tm->scale * ln_load(tm->up, tm->up_dtype, r * tm->rank + q);
        }
        koff += tm->rank;
    }
}

int ln_lora_merge(void *w, ln_dtype w_dtype, int64_t rows, int64_t cols, const ln_lora_term *terms, int nterms,
                  void *backup, int threads, const ln_settings *settings, ln_error *err)
{
    ln_error_clear(err);
    if (!w)
        return ln_fail(err, LN_ERR_ARG, "lora_merge: w is NULL");
    if (rows <= 0 || cols <= 0)
        return ln_fail(err, LN_ERR_ARG, "lora_merge: rows and cols must be positive, got %lld x %lld",
                       (long long)rows, (long long)cols);
    if (nterms < 0 || (nterms > 0 && !terms))
        return ln_fail(err, LN_ERR_ARG, "lora_merge: nterms must be >= 0 with a term array, got %d", nterms);
    if (ln_lora_check_dtype(w_dtype, "lora_merge: w", err))
        return LN_ERR_ARG;
    size_t wn, wbytes;
    if (!ln_mul_size((size_t)rows, (size_t)cols, &wn) || !ln_mul_size(wn, ln_dtype_size(w_dtype), &wbytes) ||
        wbytes > (size_t)INT64_MAX)
        return ln_fail(err, LN_ERR_ARG, "lora_merge: %lld x %lld weight overflows the address space",
                       (long long)rows, (long long)cols);
    int64_t rtot = 0;
    for (int t = 0; t < nterms; t++) {
        const ln_lora_term *tm = &terms[t];
        if (!tm->up || !tm->down)
            return ln_fail(err, LN_ERR_ARG, "lora_merge: term %d has a NULL up or down", t);
        if (tm->rank <= 0)
            return ln_fail(err, LN_ERR_ARG, "lora_merge: term %d has rank %lld (must be >= 1)", t,
                           (long long)tm->rank);
        if (ln_lora_check_dtype(tm->up_dtype, "lora_merge: up", err) ||
            ln_lora_check_dtype(tm->down_dtype, "lora_merge: down", err))
            return LN_ERR_ARG;
        size_t s1, s2;
        if (tm->rank > INT64_MAX / 2 - rtot || !ln_mul_size((size_t)tm->rank, (size_t)rows, &s1) ||
            !ln_mul_size((size_t)tm->rank, (size_t)cols, &s2))
            return ln_fail(err, LN_ERR_ARG, "lora_merge: term %d: rank %lld overflows", t, (long long)tm->rank);
        rtot += tm->rank;
    }
    if (nterms == 0 || rtot == 0) {
        if (backup)
            memcpy(backup, w, wbytes);
        return LN_OK;
    }
    ln_settings fallback;
    ln_kern kn;
    ln_kern_select(&kn, ln_settings_or_default(settings, &fallback));
    size_t bn, pn;
    if (!ln_mul_size((size_t)rows, (size_t)rtot, &bn) || !ln_packed_b_size(rtot, cols, &pn))
        return ln_fail(err, LN_ERR_ARG, "lora_merge: total rank %lld overflows", (long long)rtot);
    float *bcat = ln_falloc(bn), *bp = ln_falloc(pn);
    if (!bcat || !bp) {
        free(bcat);
        free(bp);
        return ln_fail(err, LN_ERR_NOMEM, "lora_merge: out of memory packing %lld terms of total rank %lld",
                       (long long)nterms, (long long)rtot);
    }
    bcat_job bj = {terms, nterms, rows, rtot, bcat};
    ln_parallel_for(threads, (size_t)((rows + BCAT_ROWS - 1) / BCAT_ROWS), 1, bcat_task, &bj);
    int64_t koff = 0;
    for (int t = 0; t < nterms; t++) {
        ln_mat d = {terms[t].down, terms[t].down_dtype, cols, 1, NULL};
        ln_pack_b(bp, rtot, koff, &d, terms[t].rank, cols, 1.0f);
        koff += terms[t].rank;
    }
    ln_mat a = {bcat, LN_DT_F32, rtot, 1, NULL};
    ln_out o = {w, w_dtype, cols, 1, backup, 1, 1.0f};
    int rc = ln_gemm(&kn, threads, &a, rows, rtot, bp, cols, &o, err);
    free(bcat);
    free(bp);
    return rc;
}
