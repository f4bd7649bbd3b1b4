/* Internal interface between group.c (collapse identical hashes, labelling, reference) and
 * group_search.c (pair search over distinct values). Not installed, not used elsewhere. */
#ifndef LN_GROUP_INTERNAL_H
#define LN_GROUP_INTERNAL_H

#include "ln_group.h"

/* Bit count without any instruction-set assumption (SWAR). */
static inline int ln_popcount64_portable(uint64_t x)
{
    x = x - ((x >> 1) & 0x5555555555555555ULL);
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
    return (int)((x * 0x0101010101010101ULL) >> 56);
}

/* Unions every pair of the nu sorted distinct values u[] within Hamming distance t.
 * parent[] (nu entries, any content) is used as the union-find and on return holds the
 * root of each value's component. blocks: 0 = cost model, 1 = all pairs, 3..64 = MIH.
 * *candidates (if non-NULL) receives the number of pairs verified with a full popcount. */
int ln_group_search(const uint64_t *u, uint32_t nu, int t, int threads, int blocks, int hw_popcount,
                    uint32_t *parent,
                    uint64_t *candidates, ln_error *err);

#endif
