/* Near-duplicate grouping of 64-bit hashes: identical values are collapsed first (a stable
 * radix sort), so runs of one value cost O(run) instead of O(run^2) pairs; the pair search
 * (group_search.c) then runs over distinct values only, and every hash is labelled with
 * the smallest index of its component. Also the O(n^2) reference the tests compare with. */
#include "group_internal.h"

#include <stdlib.h>
#include <string.h>

#define RADIX_BITS 11
#define RADIX_SIZE (1u << RADIX_BITS)
#define RADIX_PASSES 6 /* ceil(64 / 11) */

/* LSD radix sort of (value, index); *u_out receives the *nu_out distinct values ascending
 * and uid[i] the rank of hashes[i] among them. */
static int collapse_identical(const uint64_t *hashes, size_t n, int64_t *uid, uint64_t **u_out, uint32_t *nu_out,
                              ln_error *err)
{
    size_t key_bytes, idx_bytes;
    if (!ln_mul_size(n, sizeof(uint64_t), &key_bytes) || !ln_mul_size(n, sizeof(uint32_t), &idx_bytes))
        return ln_fail(err, LN_ERR_LIMIT, "%zu hashes overflow the address space", n);
    uint64_t *keys[2] = {malloc(key_bytes), malloc(key_bytes)};
    uint32_t *idx[2] = {malloc(idx_bytes), malloc(idx_bytes)};
    uint32_t *hist = calloc((size_t)RADIX_PASSES * RADIX_SIZE, sizeof *hist);
    if (!keys[0] || !keys[1] || !idx[0] || !idx[1] || !hist) {
        free(keys[0]);
        free(keys[1]);
        free(idx[0]);
        free(idx[1]);
        free(hist);
        return ln_fail(err, LN_ERR_NOMEM, "out of memory sorting %zu hashes", n);
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t v = hashes[i];
        keys[0][i] = v;
        idx[0][i] = (uint32_t)i;
        for (int d = 0; d < RADIX_PASSES; d++)
            hist[d * RADIX_SIZE + ((v >> (d * RADIX_BITS)) & (RADIX_SIZE - 1))]++;
    }
    int src = 0;
    for (int d = 0; d < RADIX_PASSES; d++) {
        uint32_t *h = hist + d * RADIX_SIZE;
        const int sh = d * RADIX_BITS;
        if (h[(keys[src][0] >> sh) & (RADIX_SIZE - 1)] == n)
            continue; /* every key has this digit: the pass would not move anything */
        uint32_t sum = 0;
        for (uint32_t k = 0; k < RADIX_SIZE; k++) {
            uint32_t c = h[k];
            h[k] = sum;
            sum += c;
        }
        const uint64_t *ks = keys[src];
        const uint32_t *is = idx[src];
        uint64_t *kd = keys[!src];
        uint32_t *id = idx[!src];
        for (size_t i = 0; i < n; i++) {
            uint32_t pos = h[(ks[i] >> sh) & (RADIX_SIZE - 1)]++;
            kd[pos] = ks[i];
            id[pos] = is[i];
        }
        src = !src;
    }
    free(hist);
    free(keys[!src]);
    free(idx[!src]);

    /* Compact in place: the write position nu - 1 never passes the read position p. */
    uint64_t *k = keys[src];
    uint32_t *ix = idx[src];
    uint32_t nu = 0;
    for (size_t p = 0; p < n; p++) {
        uint64_t v = k[p];
        if (nu == 0 || v != k[nu - 1])
            k[nu++] = v;
        uid[ix[p]] = (int64_t)(nu - 1);
    }
    free(ix);
    *u_out = k;
    *nu_out = nu;
    return LN_OK;
}

int ln_group_hamming_ex(const uint64_t *hashes, size_t n, int t, int threads, int blocks,
                        const ln_settings *settings, int64_t *labels, uint64_t *pairs_out, ln_error *err)
{
    ln_settings fallback;
    settings = ln_settings_or_default(settings, &fallback);
    if (pairs_out)
        *pairs_out = 0;
    if (t < 0 || t > 64)
        return ln_fail(err, LN_ERR_ARG, "t must be between 0 and 64 bits, got %d", t);
    if (blocks != 0 && blocks != 1 && (blocks < 3 || blocks > 64))
        return ln_fail(err, LN_ERR_ARG, "blocks must be 0 (automatic), 1 (all pairs) or 3..64, got %d", blocks);
    if (n == 0)
        return LN_OK;
    if (!hashes || !labels)
        return ln_fail(err, LN_ERR_ARG, "hashes and labels must not be NULL");
    if (n >= UINT32_MAX)
        return ln_fail(err, LN_ERR_LIMIT, "at most %u hashes per call, got %zu", UINT32_MAX - 1, n);
    if (t == 64) {
        memset(labels, 0, n * sizeof *labels); /* every pair is within 64 bits */
        return LN_OK;
    }

    uint64_t *u = NULL;
    uint32_t nu = 0;
    int rc = collapse_identical(hashes, n, labels, &u, &nu, err); /* labels hold value ranks for now */
    if (rc != LN_OK)
        return rc;
    uint32_t *parent = malloc((size_t)nu * sizeof *parent);
    if (!parent) {
        free(u);
        return ln_fail(err, LN_ERR_NOMEM, "out of memory for %u distinct hashes", nu);
    }
    rc = ln_group_search(u, nu, t, threads, blocks, settings->simd != LN_SIMD_SCALAR, parent, pairs_out, err);
    free(u);
    if (rc != LN_OK) {
        free(parent);
        return rc;
    }
    /* Scanning i upwards, the first index met in a component is its smallest: the label. */
    uint32_t *first = malloc((size_t)nu * sizeof *first);
    if (!first) {
        free(parent);
        return ln_fail(err, LN_ERR_NOMEM, "out of memory for %u distinct hashes", nu);
    }
    memset(first, 0xff, (size_t)nu * sizeof *first);
    for (size_t i = 0; i < n; i++) {
        uint32_t root = parent[labels[i]];
        if (first[root] == UINT32_MAX)
            first[root] = (uint32_t)i;
        labels[i] = first[root];
    }
    free(first);
    free(parent);
    return LN_OK;
}

int ln_group_hamming(const uint64_t *hashes, size_t n, int t, int threads, const ln_settings *settings,
                     int64_t *labels, uint64_t *pairs_out, ln_error *err)
{
    return ln_group_hamming_ex(hashes, n, t, threads, 0, settings, labels, pairs_out, err);
}

/* Reference: labels[] doubles as the union-find, always linking the larger root under the
 * smaller, so every root is its component's smallest index. */
static int64_t ref_find(int64_t *parent, int64_t x)
{
    while (parent[x] != x) {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    return x;
}

int ln_group_hamming_bruteforce(const uint64_t *hashes, size_t n, int t, int64_t *labels, ln_error *err)
{
    if (t < 0 || t > 64)
        return ln_fail(err, LN_ERR_ARG, "t must be between 0 and 64 bits, got %d", t);
    if (n == 0)
        return LN_OK;
    if (!hashes || !labels)
        return ln_fail(err, LN_ERR_ARG, "hashes and labels must not be NULL");
    for (size_t i = 0; i < n; i++)
        labels[i] = (int64_t)i;
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (ln_popcount64_portable(hashes[i] ^ hashes[j]) <= t) {
                int64_t a = ref_find(labels, (int64_t)i), b = ref_find(labels, (int64_t)j);
                if (a < b)
                    labels[b] = a;
                else if (b < a)
                    labels[a] = b;
            }
    for (size_t i = 0; i < n; i++)
        labels[i] = ref_find(labels, (int64_t)i);
    return LN_OK;
}
