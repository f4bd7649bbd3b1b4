/* Semantic near-duplicates: all pairs of embeddings whose dot product (cosine, for the
 * L2-normalised rows callers pass) reaches a threshold. Exact: the set of pairs equals a
 * float64 brute force over the stored values. The blocked fp32 search flags candidates within a
 * proven error margin of the threshold and those are decided again in float64. */
#ifndef LN_EMBED_H
#define LN_EMBED_H

#include <stddef.h>
#include <stdint.h>

#include "ln_common.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { LN_EMBED_F32 = 0, LN_EMBED_F16 = 1 };

typedef struct {
    int64_t i, j;   /* i < j */
    float sim;      /* the float64 dot product, rounded to float */
} ln_pair;

/* Every pair i < j of the n rows of `emb` (row-major, n x dim, `dtype`, row stride dim) with
 * dot(row i, row j) >= threshold. *pairs (free() it) receives *count pairs sorted by (i, j);
 * *pairs is NULL when there are none. Runs on `threads` threads (0 = all cores).
 * The threshold is a double so that the comparison is the float64 one (a float cannot hold 0.95:
 * float(0.95) would admit dots in [0.94999998807, 0.95)). LN_ERR_ARG for a row holding NaN or
 * Inf (the message names it), a NaN threshold, dim 0 or an unknown dtype; LN_ERR_NOMEM when the
 * pair list does not fit in memory. */
int ln_similar_pairs(const void *emb, int dtype, size_t n, size_t dim, double threshold, int threads,
                     const ln_settings *settings, ln_pair **pairs, size_t *count, ln_error *err);

#ifdef __cplusplus
}
#endif
#endif
