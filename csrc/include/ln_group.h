/* Near-duplicate grouping: connected components of the graph "Hamming distance <= t"
 * over N 64-bit hashes, found with multi-index hashing (pigeonhole over bit blocks) and
 * union-find. Results equal brute force; expected O(N) work for random hashes. */
#ifndef LN_GROUP_H
#define LN_GROUP_H

#include "ln_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* labels[i] receives the smallest index of the group holding i (labels[i] == i for a
 * singleton or a group's first member). t in [0, 64]. threads <= 0: all cores.
 * If pairs_out is non-NULL it receives the number of candidate pairs verified (for stats). */
int ln_group_hamming(const uint64_t *hashes, size_t n, int t, int threads, int64_t *labels,
                     uint64_t *pairs_out, ln_error *err);

#ifdef __cplusplus
}
#endif
#endif
