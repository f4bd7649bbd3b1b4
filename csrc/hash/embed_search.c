/* Exact semantic-duplicate search: every pair i < j of n embeddings whose dot product reaches a
 * threshold, the same set as a float64 brute force over the stored values.
 *
 * Search. The upper triangle is computed in fp32 by the packed GEMM core of csrc/lora (its 6x16
 * micro-kernel; FMA under AVX2). A task takes one tile of EMB_TJ rows j, packs it once into
 * 16-column panels, and runs row blocks of LN_MC rows i < j against it (rows are read in place
 * when fp32, converted a block at a time when fp16); each block of dots is scanned against the
 * threshold as soon as it is produced, so nothing larger than LN_MC x EMB_TJ is ever stored.
 * Tasks are handed out largest first (tiles further down hold more rows i); each worker keeps
 * its own pair list, merged and sorted at the end.
 *
 * Exactness. For rows a, b with exact dot e = sum a_k b_k (the stored values), the fp32 result s
 * of any summation order satisfies |s - e| <= gamma32 * sum|a_k b_k| + eta, and any float64
 * evaluation d satisfies |d - e| <= gamma64 * sum|a_k b_k| (fp32 products are exact in float64),
 * with gamma_p = dim*u_p / (1 - dim*u_p), u32 = 2^-24, u64 = 2^-53, eta = dim * 2^-147 covering
 * fp32 underflow, and sum|a_k b_k| <= |a| |b| (Cauchy-Schwarz; norms computed in float64 per row).
 * So s < t - (gamma32 + gamma64) |a| |b| - eta implies d < t for every float64 evaluation: such
 * pairs are dropped; every other pair (NaN/-inf from an fp32 overflow included) is decided with
 * a float64 dot, whose value rounded to float is the reported similarity. */
#include "embed_internal.h"

#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>

#define EMB_TJ 256           /* rows j per tile: one packed B block, the width of a block of dots */
#define EMB_MIN_ROWS 2048    /* rows i per task at least: packing the tile costs ~1/EMB_MIN_ROWS of it */
#define EMB_NORM_ROWS 1024   /* rows per task of the validation pass */
#define EMB_MAX_DIM (1u << 22) /* dim * 2^-24 <= 1/4: the error bound stays meaningful */

size_t ln_embed_scan_scalar(const float *x, size_t n, float lo, uint32_t *hits)
{
    size_t k = 0;
    for (size_t c = 0; c < n; c++)
        if (!(x[c] < lo && x[c] > -INFINITY))
            hits[k++] = (uint32_t)c;
    return k;
}

/* ---- validation and norms ---- */

typedef struct {
    const void *emb;
    ln_dtype dt;
    size_t n, dim;
    double *norm;      /* out: float64 L2 norm of each row */
    size_t *first_bad; /* out: per block, the first row holding NaN/Inf, or SIZE_MAX */
} norm_job;

static inline float row_value(const void *emb, ln_dtype dt, size_t dim, size_t row, size_t k)
{
    return dt == LN_DT_F32 ? ((const float *)emb)[row * dim + k] : ln_f16_to_f32(((const uint16_t *)emb)[row * dim + k]);
}

static void norm_task(void *ctx, size_t index, int worker)
{
    (void)worker;
    norm_job *job = ctx;
    size_t r0 = index * EMB_NORM_ROWS, r1 = r0 + EMB_NORM_ROWS < job->n ? r0 + EMB_NORM_ROWS : job->n;
    job->first_bad[index] = SIZE_MAX;
    for (size_t r = r0; r < r1; r++) {
        /* a sum of squares of finite floats cannot overflow a double (< 2^256 * 2^22) */
        double sq = 0.0;
        for (size_t k = 0; k < job->dim; k++) {
            double v = row_value(job->emb, job->dt, job->dim, r, k);
            sq += v * v;
        }
        if (!isfinite(sq)) {
            job->first_bad[index] = r;
            return;
        }
        job->norm[r] = sqrt(sq);
    }
}

/* ---- the search ---- */

typedef struct {
    int64_t jt, i0, i1; /* tile of rows j, and the rows i it is run against */
} emb_task;

typedef struct {
    ln_pair *pairs;
    size_t count, cap;
    int nomem;
    float *scratch, *bp, *acc;
    uint32_t *hits;
} emb_worker;

typedef struct {
    const void *emb;
    ln_dtype dt;
    int64_t n, dim;
    double t, coef, eta;
    const double *norm;
    ln_kern kn;
    ln_embed_scan_fn scan;
    const emb_task *tasks;
    emb_worker *workers;
    atomic_int failed;
} emb_job;

/* The float64 dot of the stored values of rows i and j (products exact, fixed order). */
static double dot64(const emb_job *job, int64_t i, int64_t j)
{
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    size_t dim = (size_t)job->dim, k = 0;
    if (job->dt == LN_DT_F32) {
        const float *a = (const float *)job->emb + (size_t)i * dim, *b = (const float *)job->emb + (size_t)j * dim;
        for (; k + 4 <= dim; k += 4) {
            s0 += (double)a[k] * b[k];
            s1 += (double)a[k + 1] * b[k + 1];
            s2 += (double)a[k + 2] * b[k + 2];
            s3 += (double)a[k + 3] * b[k + 3];
        }
        for (; k < dim; k++)
            s0 += (double)a[k] * b[k];
    } else {
        const uint16_t *a = (const uint16_t *)job->emb + (size_t)i * dim;
        const uint16_t *b = (const uint16_t *)job->emb + (size_t)j * dim;
        for (; k < dim; k++)
            s0 += (double)ln_f16_to_f32(a[k]) * ln_f16_to_f32(b[k]);
    }
    return (s0 + s1) + (s2 + s3);
}

/* The largest float <= x, one step lower still: that step absorbs the rounding of the double
 * arithmetic that produced x (at most half a double ulp, far below a float step). */
static float float_below(double x)
{
    if (!(x > -(double)FLT_MAX))
        return -INFINITY; /* nothing is certainly below: every pair is a candidate */
    if (x >= (double)FLT_MAX)
        return FLT_MAX;
    float f = (float)x;
    if ((double)f > x)
        f = nextafterf(f, -INFINITY);
    return nextafterf(f, -INFINITY);
}

/* d rounded to float; beyond float's range, the infinity of its sign (not left to the cast). */
static float to_float(double d)
{
    if (d > (double)FLT_MAX || d < -(double)FLT_MAX) {
        float f = (float)(d > 0 ? FLT_MAX : -FLT_MAX);
        /* values up to FLT_MAX + half an ulp round down to FLT_MAX, as the cast would */
        if (fabs(d) < (double)FLT_MAX + 0x1p103)
            return f;
        return d > 0 ? INFINITY : -INFINITY;
    }
    return (float)d;
}

static void push_pair(emb_worker *w, int64_t i, int64_t j, float sim)
{
    if (w->count == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 256;
        ln_pair *p = cap > SIZE_MAX / sizeof *p ? NULL : realloc(w->pairs, cap * sizeof *p);
        if (!p) {
            w->nomem = 1;
            return;
        }
        w->pairs = p;
        w->cap = cap;
    }
    ln_pair *p = &w->pairs[w->count++];
    p->i = i;
    p->j = j;
    p->sim = sim;
}

static inline const void *row_ptr(const emb_job *job, int64_t row)
{
    return (const char *)job->emb + (size_t)row * (size_t)job->dim * (job->dt == LN_DT_F32 ? 4 : 2);
}

static void search_task(void *ctx, size_t index, int worker)
{
    emb_job *job = ctx;
    emb_worker *w = &job->workers[worker];
    if (atomic_load_explicit(&job->failed, memory_order_relaxed))
        return;
    const emb_task *tk = &job->tasks[index];
    const int64_t dim = job->dim, j0 = tk->jt * EMB_TJ;
    const int64_t nj = job->n - j0 < EMB_TJ ? job->n - j0 : EMB_TJ;
    /* B[k][c] = row (j0 + c), column k: the tile's rows as the columns of 16-wide panels. */
    ln_mat tile = {row_ptr(job, j0), job->dt, 1, dim, NULL};
    ln_pack_b(w->bp, dim, 0, &tile, dim, nj, 1.0f);
    double norm_j = 0.0;
    for (int64_t c = 0; c < nj; c++)
        norm_j = job->norm[j0 + c] > norm_j ? job->norm[j0 + c] : norm_j;
    const ln_out out = {w->acc, LN_DT_F32, EMB_TJ, 1, NULL, 0, 1.0f};
    for (int64_t r0 = tk->i0; r0 < tk->i1; r0 += LN_MC) {
        const int64_t mc = tk->i1 - r0 < LN_MC ? tk->i1 - r0 : LN_MC;
        /* columns c with j0 + c > r0 only, from a panel boundary (rows i < i1 <= j0 + nj - 1) */
        int64_t c0 = r0 + 1 - j0;
        c0 = c0 <= 0 ? 0 : c0 / LN_NR * LN_NR;
        const int64_t nc = nj - c0;
        ln_mat a = {row_ptr(job, r0), job->dt, dim, 1, NULL};
        ln_gemm_rows(&job->kn, &a, mc, dim, w->bp + (size_t)c0 * (size_t)dim, nc, &out, w->scratch);
        for (int64_t r = 0; r < mc; r++) {
            const int64_t i = r0 + r;
            int64_t cs = i + 1 - j0 - c0; /* first column with j > i */
            if (cs < 0)
                cs = 0;
            if (cs >= nc)
                continue;
            float lo = float_below(job->t - (job->coef * job->norm[i] * norm_j + job->eta));
            size_t hits = job->scan(w->acc + r * EMB_TJ + cs, (size_t)(nc - cs), lo, w->hits);
            for (size_t h = 0; h < hits; h++) {
                int64_t j = j0 + c0 + cs + (int64_t)w->hits[h];
                double d = dot64(job, i, j);
                if (d >= job->t)
                    push_pair(w, i, j, to_float(d));
            }
            if (w->nomem) {
                atomic_store(&job->failed, 1);
                return;
            }
        }
    }
}

static int pair_order(const void *x, const void *y)
{
    const ln_pair *a = x, *b = y;
    if (a->i != b->i)
        return a->i < b->i ? -1 : 1;
    return (a->j > b->j) - (a->j < b->j);
}

/* Tasks, largest first: tile jt (rows j in [jt*EMB_TJ, ...)) against rows i below its last row,
 * cut into chunks of `rows` rows. Returns the count; *out NULL on failure. */
static size_t make_tasks(int64_t n, int64_t rows, emb_task **out)
{
    int64_t tiles = (n + EMB_TJ - 1) / EMB_TJ;
    size_t count = 0;
    for (int64_t jt = 0; jt < tiles; jt++) {
        int64_t i1 = (jt + 1) * EMB_TJ < n ? (jt + 1) * EMB_TJ - 1 : n - 1;
        count += (size_t)((i1 + rows - 1) / rows);
    }
    emb_task *t = count ? malloc(count * sizeof *t) : NULL;
    *out = t;
    if (!t)
        return 0;
    size_t k = 0;
    for (int64_t jt = tiles - 1; jt >= 0; jt--) {
        int64_t i1 = (jt + 1) * EMB_TJ < n ? (jt + 1) * EMB_TJ - 1 : n - 1;
        for (int64_t i0 = 0; i0 < i1; i0 += rows) {
            t[k].jt = jt;
            t[k].i0 = i0;
            t[k].i1 = i0 + rows < i1 ? i0 + rows : i1;
            k++;
        }
    }
    return count;
}

static void free_workers(emb_worker *w, int count)
{
    for (int k = 0; w && k < count; k++) {
        free(w[k].pairs);
        free(w[k].scratch);
        free(w[k].bp);
        free(w[k].acc);
        free(w[k].hits);
    }
    free(w);
}

/* Worker lists -> one array sorted by (i, j); frees the lists. */
static int merge_pairs(emb_worker *w, int count, ln_pair **pairs, size_t *total, ln_error *err)
{
    size_t n = 0;
    for (int k = 0; k < count; k++)
        n += w[k].count;
    *pairs = NULL;
    *total = 0;
    if (n == 0)
        return LN_OK;
    /* grow the first non-empty list in place: the peak is the result plus one other list */
    int first = 0;
    while (w[first].count == 0)
        first++;
    ln_pair *all = n > SIZE_MAX / sizeof *all ? NULL : realloc(w[first].pairs, n * sizeof *all);
    if (!all)
        return ln_fail(err, LN_ERR_NOMEM, "out of memory merging %zu similar pairs", n);
    w[first].pairs = NULL;
    size_t at = w[first].count;
    for (int k = first + 1; k < count; k++) {
        if (w[k].count)
            memcpy(all + at, w[k].pairs, w[k].count * sizeof *all);
        at += w[k].count;
        free(w[k].pairs);
        w[k].pairs = NULL;
    }
    qsort(all, n, sizeof *all, pair_order);
    *pairs = all;
    *total = n;
    return LN_OK;
}

static int check_rows(const void *emb, ln_dtype dt, size_t n, size_t dim, int threads, double *norm, ln_error *err)
{
    size_t blocks = (n + EMB_NORM_ROWS - 1) / EMB_NORM_ROWS;
    norm_job job = {emb, dt, n, dim, norm, malloc((blocks ? blocks : 1) * sizeof(size_t))};
    if (!job.first_bad)
        return ln_fail(err, LN_ERR_NOMEM, "out of memory checking %zu embeddings", n);
    ln_parallel_for(threads, blocks, 1, norm_task, &job);
    for (size_t b = 0; b < blocks; b++) {
        size_t r = job.first_bad[b];
        if (r == SIZE_MAX)
            continue;
        size_t k = 0;
        while (k < dim && isfinite(row_value(emb, dt, dim, r, k)))
            k++;
        float v = row_value(emb, dt, dim, r, k);
        free(job.first_bad);
        return ln_fail(err, LN_ERR_ARG, "embedding row %zu is not finite (%s in column %zu)", r,
                       isnan(v) ? "NaN" : "Inf", k);
    }
    free(job.first_bad);
    return LN_OK;
}

int ln_similar_pairs(const void *emb, int dtype, size_t n, size_t dim, double threshold, int threads,
                     const ln_settings *settings, ln_pair **pairs, size_t *count, ln_error *err)
{
    if (!pairs || !count)
        return ln_fail(err, LN_ERR_ARG, "similar_pairs: no place for the result");
    *pairs = NULL;
    *count = 0;
    if (dtype != LN_EMBED_F32 && dtype != LN_EMBED_F16)
        return ln_fail(err, LN_ERR_ARG, "embeddings must be float32 or float16 (dtype code %d)", dtype);
    if (isnan(threshold))
        return ln_fail(err, LN_ERR_ARG, "the similarity threshold is NaN");
    if (n == 0)
        return LN_OK;
    if (dim == 0)
        return ln_fail(err, LN_ERR_ARG, "embeddings have 0 columns");
    if (!emb)
        return ln_fail(err, LN_ERR_ARG, "embeddings: NULL data for %zu rows", n);
    size_t elems, bytes;
    if (dim > EMB_MAX_DIM)
        return ln_fail(err, LN_ERR_LIMIT, "embedding dimension %zu is above the supported %u", dim,
                       (unsigned)EMB_MAX_DIM);
    if (n > (size_t)INT64_MAX / 2 || !ln_mul_size(n, dim, &elems) || !ln_mul_size(elems, 4, &bytes) ||
        !ln_mul_size(n, sizeof(double), &bytes))
        return ln_fail(err, LN_ERR_LIMIT, "%zu x %zu embeddings overflow the address space", n, dim);
    ln_dtype dt = dtype == LN_EMBED_F32 ? LN_DT_F32 : LN_DT_F16;
    ln_settings fallback;
    settings = ln_settings_or_default(settings, &fallback);

    double *norm = malloc(n * sizeof *norm);
    if (!norm)
        return ln_fail(err, LN_ERR_NOMEM, "out of memory for %zu embedding norms", n);
    int rc = check_rows(emb, dt, n, dim, threads, norm, err);
    if (rc != LN_OK || n < 2) {
        free(norm);
        return rc;
    }

    emb_job job;
    memset(&job, 0, sizeof job);
    job.emb = emb;
    job.dt = dt;
    job.n = (int64_t)n;
    job.dim = (int64_t)dim;
    job.t = threshold;
    const double g32 = (double)dim * 0x1p-24 / (1.0 - (double)dim * 0x1p-24);
    const double g64 = (double)dim * 0x1p-53 / (1.0 - (double)dim * 0x1p-53);
    job.coef = (g32 + g64) * (1.0 + 0x1p-20); /* the slack covers the rounding of the norms and of this */
    job.eta = (double)dim * 0x1p-147;
    job.norm = norm;
    ln_kern_select(&job.kn, settings);
    job.scan = ln_embed_scan_scalar;
#ifdef LN_LORA_X86
    if (settings->simd >= LN_SIMD_AVX2)
        job.scan = ln_embed_scan_avx2;
#endif
    atomic_init(&job.failed, 0);

    /* Rows per task: at least EMB_MIN_ROWS, more when there are few threads for the work. */
    int t_all = ln_resolve_threads(threads, SIZE_MAX);
    int64_t tiles = ((int64_t)n + EMB_TJ - 1) / EMB_TJ, total_rows = 0;
    for (int64_t jt = 0; jt < tiles; jt++)
        total_rows += (jt + 1) * EMB_TJ < (int64_t)n ? (jt + 1) * EMB_TJ - 1 : (int64_t)n - 1;
    int64_t rows = total_rows / (16 * (int64_t)t_all) + 1;
    rows = rows < EMB_MIN_ROWS ? EMB_MIN_ROWS : (rows + LN_MC - 1) / LN_MC * LN_MC;
    emb_task *tasks;
    size_t ntasks = make_tasks((int64_t)n, rows, &tasks);
    job.tasks = tasks;
    int nw = ln_resolve_threads(threads, ntasks);
    size_t bp_floats;
    emb_worker *w = tasks ? calloc((size_t)nw, sizeof *w) : NULL;
    rc = w && ln_packed_b_size((int64_t)dim, EMB_TJ, &bp_floats) ? LN_OK : LN_ERR_NOMEM;
    for (int k = 0; rc == LN_OK && k < nw; k++) {
        w[k].scratch = ln_falloc(LN_SCRATCH_FLOATS);
        w[k].bp = ln_falloc(bp_floats);
        w[k].acc = ln_falloc((size_t)LN_MC * EMB_TJ);
        w[k].hits = malloc(EMB_TJ * sizeof(uint32_t));
        if (!w[k].scratch || !w[k].bp || !w[k].acc || !w[k].hits)
            rc = LN_ERR_NOMEM;
    }
    if (rc != LN_OK) {
        free_workers(w, w ? nw : 0);
        free(tasks);
        free(norm);
        return ln_fail(err, LN_ERR_NOMEM, "out of memory for the similarity search buffers (%d threads, dim %zu)",
                       nw, dim);
    }
    job.workers = w;
    ln_parallel_for(threads, ntasks, 1, search_task, &job);
    free(tasks);
    free(norm);
    if (atomic_load(&job.failed)) {
        size_t found = 0;
        for (int k = 0; k < nw; k++)
            found += w[k].count;
        free_workers(w, nw);
        return ln_fail(err, LN_ERR_NOMEM, "out of memory for the list of similar pairs (%zu found so far)", found);
    }
    rc = merge_pairs(w, nw, pairs, count, err);
    free_workers(w, nw);
    return rc;
}
