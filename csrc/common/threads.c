/* A thread pool that lives for one call: no global state, joined before returning. */
#define _GNU_SOURCE
#include "ln_common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#define LN_MAX_THREADS 256

int ln_cpu_count(void)
{
#ifdef _SC_NPROCESSORS_ONLN
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n > 0)
        return n > LN_MAX_THREADS ? LN_MAX_THREADS : (int)n;
#endif
    return 1;
}

int ln_resolve_threads(int threads, size_t n_items)
{
    int t = threads > 0 ? threads : ln_cpu_count();
    if (t > LN_MAX_THREADS)
        t = LN_MAX_THREADS;
    if (n_items < (size_t)t)
        t = n_items == 0 ? 1 : (int)n_items;
    return t;
}

typedef struct {
    ln_task_fn fn;
    void *ctx;
    size_t n;
    size_t chunk;
    atomic_size_t next;
} pool_job;

typedef struct {
    pool_job *job;
    int worker;
} pool_worker;

static void run_worker(pool_job *job, int worker)
{
    for (;;) {
        size_t start = atomic_fetch_add(&job->next, job->chunk);
        if (start >= job->n)
            break;
        size_t end = start + job->chunk;
        if (end > job->n || end < start)
            end = job->n;
        for (size_t i = start; i < end; i++)
            job->fn(job->ctx, i, worker);
    }
}

static void *thread_main(void *arg)
{
    pool_worker *w = arg;
    run_worker(w->job, w->worker);
    return NULL;
}

void ln_parallel_for(int threads, size_t n, size_t chunk, ln_task_fn fn, void *ctx)
{
    if (n == 0)
        return;
    int t = ln_resolve_threads(threads, n);
    pool_job job;
    job.fn = fn;
    job.ctx = ctx;
    job.n = n;
    job.chunk = chunk ? chunk : 1;
    atomic_init(&job.next, 0);
    if (t == 1) {
        run_worker(&job, 0);
        return;
    }
    pthread_t tids[LN_MAX_THREADS];
    pool_worker workers[LN_MAX_THREADS];
    int started = 0;
    for (int i = 1; i < t; i++) {
        workers[i].job = &job;
        workers[i].worker = i;
        if (pthread_create(&tids[i], NULL, thread_main, &workers[i]) != 0)
            break; /* run with the threads we got; the caller's thread always works */
        started = i;
    }
    run_worker(&job, 0);
    for (int i = 1; i <= started; i++)
        pthread_join(tids[i], NULL);
}
