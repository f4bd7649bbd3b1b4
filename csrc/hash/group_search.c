/* Pair search over sorted distinct 64-bit values, either all pairs or multi-index hashing
 * (idea from Norouzi, Punjani & Fleet, "Fast Search in Hamming Space with Multi-Index
 * Hashing"): split the 64 bits into m blocks; if two values are within t, one of the first
 * (t mod m)+1 blocks differs in <= t/m bits or one of the others in <= t/m - 1 bits
 * (otherwise the distance would be >= t+1). Every probed block gets a bucket index (counting
 * sort: offsets plus the values themselves in bucket order, so a bucket is one sequential
 * read); each bucket is joined with the buckets within the block's radius and candidates are
 * verified with a full popcount. Pairs found go through small per-thread batches into one
 * union-find. */
#define _POSIX_C_SOURCE 200809L
#include "group_internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BLOCK_WIDTH 22      /* 2^22 + 1 offsets = 16 MiB: the largest table we accept */
#define MAX_PLAN_BLOCKS 16      /* the cost model looks at m = 3..16 */
#define MAX_FLIPS (1u << 20)    /* bucket lookups per block and query */
#define ITEM_VALUES 256         /* about this many values per MIH work item */
#define ALL_PAIRS_CHUNK 64      /* query values per all-pairs work item */
#define EDGE_BATCH 8192         /* pairs a thread holds before taking the union-find lock */

/* Relative costs behind the plan, in units of one candidate pair verified inside a bucket
 * join (about 0.6 ns on the 2-core EPYC of bench/RESULTS.md, where the cost model predicted
 * t=6 and t=10 timings at N = 1e6 within ~10% for m = 3..7); only the ratios matter. */
#define COST_PAIR 1.0    /* xor + popcount + compare of a value already in cache */
#define COST_VISIT 7.0   /* one (bucket, flip) visit: offsets read, often a cache miss */
#define COST_CALL 3.0    /* one value scanned against one neighbour bucket: loop set-up */
#define COST_SCATTER 10.0 /* one value and its rank placed while building a block's index */
#define COST_OFFSET 4.0  /* one offsets entry: fresh page, cleared, counted, summed */

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define LN_POPCNT_DISPATCH 1
#define LN_TARGET_POPCNT __attribute__((target("popcnt")))
#else
#define LN_TARGET_POPCNT
#endif

#if defined(__GNUC__)
#define LN_ALWAYS_INLINE inline __attribute__((always_inline))
#define LN_HW_POPCOUNT(x) __builtin_popcountll(x)
#else
#define LN_ALWAYS_INLINE inline
#define LN_HW_POPCOUNT(x) ln_popcount64_portable(x)
#endif

/* hw is a constant after inlining, so each caller compiles to one popcount flavour. */
#define POPCOUNT(hw, x) ((hw) ? LN_HW_POPCOUNT(x) : ln_popcount64_portable(x))

typedef struct {
    int width, shift, radius; /* radius < 0: the block is not probed */
    uint64_t mask;
    uint32_t *offsets;        /* 2^width + 1 bucket starts */
    const uint64_t *members;  /* values in bucket order */
    uint64_t *owned_members;  /* NULL for block 0: u itself is already in its bucket order */
    uint32_t *ids;            /* rank in u of each member (NULL for block 0: the position) */
    uint32_t *flips;          /* block values with popcount <= radius, 0 first */
    size_t n_flips;
} mih_block;

typedef struct {
    uint32_t (*edges)[2];
    size_t n_edges;
    uint64_t candidates;
    char pad[64]; /* keep workers' counters on separate cache lines */
} search_worker;

typedef struct {
    const uint64_t *u;
    uint32_t nu;
    int t;
    int hw;       /* hardware popcount available and allowed */
    int n_blocks; /* 0: all pairs */
    mih_block blocks[64];
    size_t item_end[64];  /* work items of blocks 0..b end before item_end[b] */
    int item_shift[64];   /* each item of block b covers 2^item_shift[b] buckets */
    search_worker *workers;
    uint32_t *parent;
    uint8_t *rank;
    pthread_mutex_t lock;
} search_job;

/* ---- union-find (path compression, union by rank) ---- */

static uint32_t uf_find(uint32_t *parent, uint32_t x)
{
    uint32_t root = x;
    while (parent[root] != root)
        root = parent[root];
    while (parent[x] != root) {
        uint32_t next = parent[x];
        parent[x] = root;
        x = next;
    }
    return root;
}

static void uf_union(uint32_t *parent, uint8_t *rank, uint32_t a, uint32_t b)
{
    a = uf_find(parent, a);
    b = uf_find(parent, b);
    if (a == b)
        return;
    if (rank[a] < rank[b]) {
        uint32_t tmp = a;
        a = b;
        b = tmp;
    }
    parent[b] = a;
    if (rank[a] == rank[b])
        rank[a]++;
}

/* Batches bound the memory of dense clusters (pairs grow like a cluster's size squared)
 * while keeping the lock rare; the final components do not depend on the union order. */
static void flush_edges(search_job *job, search_worker *w)
{
    pthread_mutex_lock(&job->lock);
    for (size_t i = 0; i < w->n_edges; i++)
        uf_union(job->parent, job->rank, w->edges[i][0], w->edges[i][1]);
    pthread_mutex_unlock(&job->lock);
    w->n_edges = 0;
}

static inline void emit_edge(search_job *job, search_worker *w, uint32_t a, uint32_t b)
{
    w->edges[w->n_edges][0] = a;
    w->edges[w->n_edges][1] = b;
    if (++w->n_edges == EDGE_BATCH)
        flush_edges(job, w);
}

/* ---- block layout and cost model ---- */

/* Widths differ by at most one, widest first; block 0 holds the top bits, so the sorted
 * distinct values are already in block 0's bucket order. */
static void layout_blocks(int m, int t, int *width, int *shift, int *radius)
{
    int q = 64 / m, rem = 64 % m, r = t / m, a = t % m, top = 64;
    for (int b = 0; b < m; b++) {
        width[b] = q + (b < rem);
        top -= width[b];
        shift[b] = top;
        radius[b] = b <= a ? r : r - 1;
    }
}

/* Number of w-bit values within r bits of a given one, saturating above MAX_FLIPS. */
static size_t ball_size(int w, int r)
{
    size_t total = 0, c = 1; /* c = C(w, k) */
    for (int k = 0; k <= r && k <= w; k++) {
        total += c;
        if (total > MAX_FLIPS)
            return (size_t)MAX_FLIPS + 1;
        c = c * (size_t)(w - k) / (size_t)(k + 1);
    }
    return total;
}

static void fill_flips(uint32_t *out, int w, int r)
{
    size_t n = 0;
    out[n++] = 0;
    for (int k = 1; k <= r && k <= w; k++) {
        /* Gosper's hack: the next larger integer with the same number of set bits. */
        uint64_t x = (1ULL << k) - 1;
        while (x < (1ULL << w)) {
            out[n++] = (uint32_t)x;
            uint64_t low = x & (~x + 1), s = x + low;
            x = (((s ^ x) >> 2) / low) | s;
        }
    }
}

/* e^-x for x >= 0 as (1 - x/1024)^1024, close enough for a plan and no libm needed. */
static double exp_neg(double x)
{
    if (x > 40.0)
        return 0.0;
    double y = 1.0 - x / 1024.0;
    for (int i = 0; i < 10; i++)
        y *= y;
    return y;
}

static double mih_cost(double n, int m, int t)
{
    int width[64], shift[64], radius[64];
    layout_blocks(m, t, width, shift, radius);
    double cost = 0.0;
    for (int b = 0; b < m && radius[b] >= 0; b++) {
        if (width[b] > MAX_BLOCK_WIDTH)
            return -1.0;
        size_t lookups = ball_size(width[b], radius[b]);
        if (lookups > MAX_FLIPS)
            return -1.0;
        /* Uniform values: lambda per bucket; bucket pairs are joined once, hence the halves. */
        double buckets = (double)(1ULL << width[b]), lambda = n / buckets, v = (double)lookups;
        double occupied = 1.0 - exp_neg(lambda);
        cost += buckets * COST_OFFSET + (b ? n * COST_SCATTER : 0.0);
        cost += buckets * occupied * v * COST_VISIT;
        cost += n * v * occupied / 2.0 * COST_CALL;
        cost += n * v * lambda / 2.0 * COST_PAIR;
    }
    return cost;
}

int ln_group_plan_blocks(size_t n_distinct, int t)
{
    if (t <= 0 || t >= 64 || n_distinct < 2)
        return 0;
    double n = (double)n_distinct;
    double best = n * (n - 1.0) / 2.0 * COST_PAIR;
    int best_m = 1;
    for (int m = 3; m <= MAX_PLAN_BLOCKS; m++) {
        double c = mih_cost(n, m, t);
        if (c >= 0.0 && c < best) {
            best = c;
            best_m = m;
        }
    }
    return best_m;
}

/* ---- the search kernels ---- */

/* Rank in u of the value at position pos of block b's bucket order. */
static LN_ALWAYS_INLINE uint32_t index_of(const search_job *job, int b, uint32_t pos)
{
    return b == 0 ? pos : job->blocks[b].ids[pos];
}

/* A pair is reported only by the first block whose probe reaches it. */
static LN_ALWAYS_INLINE int first_block_to_find(const search_job *job, uint64_t d, int b, int hw)
{
    for (int e = 0; e < b; e++) {
        const mih_block *blk = &job->blocks[e];
        if (POPCOUNT(hw, (d >> blk->shift) & blk->mask) <= blk->radius)
            return 0;
    }
    return 1;
}

/* Verifies value mem[qp] against mem[begin, end). Matches are rare, so four counts are
 * tested with one branch. */
static LN_ALWAYS_INLINE void scan_run(search_job *job, search_worker *w, int b, const uint64_t *mem, uint32_t qp,
                                      uint32_t begin, uint32_t end, int hw)
{
    const uint64_t v = mem[qp];
    const int t = job->t;
    uint32_t p = begin;
    for (; p + 4 <= end; p += 4) {
        const int c0 = POPCOUNT(hw, mem[p] ^ v), c1 = POPCOUNT(hw, mem[p + 1] ^ v);
        const int c2 = POPCOUNT(hw, mem[p + 2] ^ v), c3 = POPCOUNT(hw, mem[p + 3] ^ v);
        if (!((c0 <= t) | (c1 <= t) | (c2 <= t) | (c3 <= t)))
            continue;
        for (uint32_t i = p; i < p + 4; i++) {
            const uint64_t d = mem[i] ^ v;
            if (POPCOUNT(hw, d) <= t && first_block_to_find(job, d, b, hw))
                emit_edge(job, w, index_of(job, b, qp), index_of(job, b, i));
        }
    }
    for (; p < end; p++) {
        const uint64_t d = mem[p] ^ v;
        if (POPCOUNT(hw, d) <= t && first_block_to_find(job, d, b, hw))
            emit_edge(job, w, index_of(job, b, qp), index_of(job, b, p));
    }
}

/* Buckets [k0, k1) of block b against their neighbours within the block's radius. Going
 * bucket by bucket rather than value by value makes every value of a bucket probe the same
 * neighbour buckets while they are in cache: one pass over the index per flip instead of
 * one random miss per (value, flip). Each unordered bucket pair is joined once, from its
 * smaller key, so each value pair is checked once per block. */
static LN_ALWAYS_INLINE void mih_item(search_job *job, int b, size_t k0, size_t k1, search_worker *w, int hw)
{
    const mih_block *blk = &job->blocks[b];
    const uint32_t *off = blk->offsets;
    const uint64_t *mem = blk->members;
    uint64_t cand = 0;
    for (size_t k = k0; k < k1; k++) {
        const uint32_t qlo = off[k], qhi = off[k + 1];
        if (qlo == qhi)
            continue;
        /* flips[0] == 0: pairs inside the bucket */
        for (uint32_t qp = qlo; qp + 1 < qhi; qp++)
            scan_run(job, w, b, mem, qp, qp + 1, qhi, hw);
        cand += (uint64_t)(qhi - qlo) * (qhi - qlo - 1) / 2;
        for (size_t f = 1; f < blk->n_flips; f++) {
            const size_t k2 = k ^ blk->flips[f];
            if (k2 < k)
                continue;
            const uint32_t clo = off[k2], chi = off[k2 + 1];
            if (clo == chi)
                continue;
            for (uint32_t qp = qlo; qp < qhi; qp++)
                scan_run(job, w, b, mem, qp, clo, chi, hw);
            cand += (uint64_t)(qhi - qlo) * (chi - clo);
        }
    }
    w->candidates += cand;
}

static LN_ALWAYS_INLINE void all_pairs_item(search_job *job, size_t begin, size_t end, search_worker *w, int hw)
{
    for (size_t q = begin; q < end; q++) {
        scan_run(job, w, 0, job->u, (uint32_t)q, (uint32_t)q + 1, job->nu, hw);
        w->candidates += job->nu - q - 1;
    }
}

/* Work item -> block and bucket range (MIH) or value range (all pairs). */
static LN_ALWAYS_INLINE void search_item(search_job *job, size_t index, search_worker *w, int hw)
{
    if (job->n_blocks == 0) {
        size_t begin = index * ALL_PAIRS_CHUNK, end = begin + ALL_PAIRS_CHUNK;
        all_pairs_item(job, begin, end < job->nu ? end : job->nu, w, hw);
        return;
    }
    int b = 0;
    while (index >= job->item_end[b])
        b++;
    size_t k0 = (index - (b ? job->item_end[b - 1] : 0)) << job->item_shift[b];
    mih_item(job, b, k0, k0 + ((size_t)1 << job->item_shift[b]), w, hw);
}

static LN_TARGET_POPCNT void search_item_hw(search_job *job, size_t index, search_worker *w)
{
    search_item(job, index, w, 1);
}

static void search_item_portable(search_job *job, size_t index, search_worker *w)
{
    search_item(job, index, w, 0);
}

static void search_task(void *ctx, size_t index, int worker)
{
    search_job *job = ctx;
    if (job->hw)
        search_item_hw(job, index, &job->workers[worker]);
    else
        search_item_portable(job, index, &job->workers[worker]);
}

static void build_block_task(void *ctx, size_t index, int worker)
{
    (void)worker;
    search_job *job = ctx;
    mih_block *blk = &job->blocks[index];
    const uint64_t *u = job->u;
    const size_t nk = (size_t)1 << blk->width;
    uint32_t *off = blk->offsets;
    memset(off, 0, (nk + 1) * sizeof *off);
    for (size_t i = 0; i < job->nu; i++)
        off[((u[i] >> blk->shift) & blk->mask) + 1]++;
    for (size_t k = 1; k <= nk; k++)
        off[k] += off[k - 1];
    if (!blk->owned_members)
        return;
    /* The scatter leaves off[k] at bucket k's end, which is bucket k+1's start, so shifting
     * by one restores the starts without a second table. */
    for (size_t i = 0; i < job->nu; i++) {
        uint32_t pos = off[(u[i] >> blk->shift) & blk->mask]++;
        blk->owned_members[pos] = u[i];
        blk->ids[pos] = (uint32_t)i;
    }
    memmove(off + 1, off, nk * sizeof *off);
    off[0] = 0;
}

static int hw_popcount_allowed(int wanted)
{
    /* LORA_NATIVE_SIMD=scalar (read by the glue) also selects the portable count, so tests
     * can hold one path against the other. */
    if (!wanted)
        return 0;
#ifdef LN_POPCNT_DISPATCH
    __builtin_cpu_init();
    return __builtin_cpu_supports("popcnt") ? 1 : 0;
#else
    return 1;
#endif
}

static void free_job(search_job *job, int n_workers)
{
    for (int b = 0; b < job->n_blocks; b++) {
        free(job->blocks[b].offsets);
        free(job->blocks[b].owned_members);
        free(job->blocks[b].ids);
        free(job->blocks[b].flips);
    }
    if (job->workers)
        for (int i = 0; i < n_workers; i++)
            free(job->workers[i].edges);
    free(job->workers);
    free(job->rank);
}

/* Allocates the probed blocks' tables (blocks past the first radius < 0 are never used)
 * and splits each block's buckets into work items of about ITEM_VALUES values. */
static int setup_blocks(search_job *job, int m, size_t *n_items, ln_error *err)
{
    int width[64], shift[64], radius[64];
    layout_blocks(m, job->t, width, shift, radius);
    size_t items = 0;
    job->n_blocks = 0;
    for (int b = 0; b < m && radius[b] >= 0; b++) {
        mih_block *blk = &job->blocks[b];
        job->n_blocks = b + 1;
        blk->width = width[b];
        blk->shift = shift[b];
        blk->radius = radius[b];
        blk->mask = (1ULL << width[b]) - 1;
        if (width[b] > MAX_BLOCK_WIDTH)
            return ln_fail(err, LN_ERR_ARG, "%d blocks give %d-bit blocks; at most %d bits are supported",
                           m, width[b], MAX_BLOCK_WIDTH);
        blk->n_flips = ball_size(width[b], radius[b]);
        if (blk->n_flips > MAX_FLIPS)
            return ln_fail(err, LN_ERR_LIMIT, "%d blocks at t=%d need over %u bucket lookups per value",
                           m, job->t, MAX_FLIPS);
        size_t nk = (size_t)1 << width[b];
        blk->offsets = malloc((nk + 1) * sizeof *blk->offsets);
        blk->flips = malloc(blk->n_flips * sizeof *blk->flips);
        if (b > 0) {
            blk->owned_members = malloc((size_t)job->nu * sizeof *blk->owned_members);
            blk->ids = malloc((size_t)job->nu * sizeof *blk->ids);
            blk->members = blk->owned_members;
        } else {
            blk->members = job->u;
        }
        if (!blk->offsets || !blk->flips || (b > 0 && (!blk->owned_members || !blk->ids)))
            return ln_fail(err, LN_ERR_NOMEM, "out of memory for the index of block %d (%u values)", b, job->nu);
        fill_flips(blk->flips, width[b], radius[b]);
        int s = 0;
        while (s < width[b] && ((uint64_t)job->nu << (s + 1)) <= (uint64_t)ITEM_VALUES << width[b])
            s++;
        job->item_shift[b] = s;
        items += nk >> s;
        job->item_end[b] = items;
    }
    *n_items = items;
    return LN_OK;
}

int ln_group_search(const uint64_t *u, uint32_t nu, int t, int threads, int blocks, int hw_popcount,
                    uint32_t *parent,
                    uint64_t *candidates, ln_error *err)
{
    if (candidates)
        *candidates = 0;
    for (uint32_t k = 0; k < nu; k++)
        parent[k] = k;
    if (blocks == 0)
        blocks = ln_group_plan_blocks(nu, t);
    if (blocks == 0 || nu < 2 || t == 0)
        return LN_OK; /* distinct values are never within 0 bits of each other */
    if (blocks != 1 && (blocks < 3 || blocks > 64))
        return ln_fail(err, LN_ERR_ARG, "blocks must be 0 (automatic), 1 (all pairs) or 3..64, got %d", blocks);

    search_job job;
    memset(&job, 0, sizeof job);
    job.u = u;
    job.nu = nu;
    job.t = t;
    job.hw = hw_popcount_allowed(hw_popcount);
    job.parent = parent;
    int n_workers = 0, rc = LN_OK;
    size_t n_items = ((size_t)nu + ALL_PAIRS_CHUNK - 1) / ALL_PAIRS_CHUNK;
    if (blocks >= 3) {
        rc = setup_blocks(&job, blocks, &n_items, err);
        if (rc != LN_OK)
            goto done;
        ln_parallel_for(threads, (size_t)job.n_blocks, 1, build_block_task, &job);
    }
    n_workers = ln_resolve_threads(threads, n_items); /* as ln_parallel_for will */
    job.rank = calloc(nu, 1);
    job.workers = calloc((size_t)n_workers, sizeof *job.workers);
    if (!job.rank || !job.workers) {
        rc = ln_fail(err, LN_ERR_NOMEM, "out of memory for the union-find of %u values", nu);
        goto done;
    }
    for (int i = 0; i < n_workers; i++) {
        job.workers[i].edges = malloc(EDGE_BATCH * sizeof *job.workers[i].edges);
        if (!job.workers[i].edges) {
            rc = ln_fail(err, LN_ERR_NOMEM, "out of memory for pair buffers");
            goto done;
        }
    }
    if (pthread_mutex_init(&job.lock, NULL) != 0) {
        rc = ln_fail(err, LN_ERR_INTERNAL, "pthread_mutex_init failed");
        goto done;
    }
    ln_parallel_for(threads, n_items, 1, search_task, &job);
    pthread_mutex_destroy(&job.lock);
    uint64_t total = 0;
    for (int i = 0; i < n_workers; i++) {
        for (size_t e = 0; e < job.workers[i].n_edges; e++)
            uf_union(parent, job.rank, job.workers[i].edges[e][0], job.workers[i].edges[e][1]);
        total += job.workers[i].candidates;
    }
    for (uint32_t k = 0; k < nu; k++)
        parent[k] = uf_find(parent, k);
    if (candidates)
        *candidates = total;
done:
    free_job(&job, n_workers);
    return rc;
}
