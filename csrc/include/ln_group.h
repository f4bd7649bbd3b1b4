/* Near-duplicate grouping: connected components of the graph "Hamming distance <= t"
 * over N 64-bit hashes, found with multi-index hashing (pigeonhole over bit blocks) and
 * union-find. Results equal brute force; expected O(N) work for random hashes. */
#ifndef LN_GROUP_H
#define LN_GROUP_H

#include "ln_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* settings may be NULL (CPU defaults); settings->simd == scalar selects the portable popcount.
 * labels[i] receives the smallest index of the group holding i (labels[i] == i for a
 * singleton or a group's first member). t in [0, 64]. threads <= 0: all cores.
 * If pairs_out is non-NULL it receives the number of candidate pairs verified (for stats). */
int ln_group_hamming(const uint64_t *hashes, size_t n, int t, int threads, const ln_settings *settings,
                     int64_t *labels, uint64_t *pairs_out, ln_error *err);

/* The same with the search strategy forced, for tests and benchmarks: blocks = 0 lets the
 * cost model choose, 1 compares all pairs of distinct values, 3..64 runs multi-index hashing
 * with that many blocks. */
int ln_group_hamming_ex(const uint64_t *hashes, size_t n, int t, int threads, int blocks,
                        const ln_settings *settings, int64_t *labels, uint64_t *pairs_out, ln_error *err);

/* The strategy the cost model picks for n_distinct distinct values at distance t: 0 (no
 * search needed: t == 0, t == 64 or fewer than 2 values), 1 (all pairs) or the block count. */
int ln_group_plan_blocks(size_t n_distinct, int t);

/* O(n^2) reference: every pair compared, single thread, no shared code with the fast path
 * beyond the labelling rule. For tests on small n. */
int ln_group_hamming_bruteforce(const uint64_t *hashes, size_t n, int t, int64_t *labels,
                                ln_error *err);

#ifdef __cplusplus
}
#endif
#endif
