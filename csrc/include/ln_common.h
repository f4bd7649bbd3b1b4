/* Shared conventions of the C core: status codes, the caller's error buffer,
 * and the per-call thread pool. No Python types below csrc/python/. */
#ifndef LN_COMMON_H
#define LN_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    LN_OK = 0,
    LN_ERR_NOMEM = 1,   /* an allocation failed */
    LN_ERR_ARG = 2,     /* invalid argument from the caller */
    LN_ERR_IO = 3,      /* a file could not be read or written */
    LN_ERR_FORMAT = 4,  /* input data is malformed */
    LN_ERR_LIMIT = 5,   /* input exceeds a configured limit */
    LN_ERR_UNSUPPORTED = 6,
    LN_ERR_INTERNAL = 7
} ln_status;

#define LN_ERRMSG_SIZE 512

/* Every fallible core function takes one of these; the glue turns it into an exception. */
typedef struct {
    int code;
    char msg[LN_ERRMSG_SIZE];
} ln_error;

/* Fills err (if non-NULL) and returns code, so callers can `return ln_fail(...)`. */
int ln_fail(ln_error *err, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

void ln_error_clear(ln_error *err);

/* ln_fail(err, LN_ERR_IO, "<what>: <OS message for errnum>") with a thread-safe strerror. */
int ln_fail_errno(ln_error *err, const char *what, int errnum);

/* Checked size arithmetic: return 0 on overflow. */
int ln_mul_size(size_t a, size_t b, size_t *out);

/* ---- per-call thread pool ----
 * ln_parallel_for runs fn(ctx, i, worker) for i in [0, n) on up to `threads` threads
 * (<= 0 means all online cores). Work is handed out dynamically in chunks. Threads live
 * only for the duration of the call: there is no global pool and no global state. It
 * cannot fail: when threads cannot be started, the calling thread does the work. Tasks
 * report their own errors through ctx. */
typedef void (*ln_task_fn)(void *ctx, size_t index, int worker);

int ln_cpu_count(void);
int ln_resolve_threads(int threads, size_t n_items);
void ln_parallel_for(int threads, size_t n, size_t chunk, ln_task_fn fn, void *ctx);

/* ---- CPU features, detected at run time ---- */
typedef enum { LN_SIMD_SCALAR = 0, LN_SIMD_SSE41 = 1, LN_SIMD_AVX2 = 2, LN_SIMD_AVX512 = 3 } ln_simd_level;
/* What the CPU supports (no environment). */
ln_simd_level ln_simd_detect(void);
const char *ln_simd_name(ln_simd_level level);

/* ---- run-time settings, passed down explicitly ----
 * Worker threads never read the environment (getenv races with a concurrent setenv):
 * the glue reads it once per call, holding the GIL, and hands the result down. */
typedef struct {
    ln_simd_level simd; /* highest vector level to use */
    int pillow_compat;  /* Pillow major version whose resample pass order to reproduce (>= 13: new order) */
} ln_settings;

/* The CPU's SIMD level and the Pillow >= 13 pass order. */
void ln_settings_default(ln_settings *s);
/* The defaults, capped by LORA_NATIVE_SIMD=scalar|sse4.1|avx2|avx512 and changed by
 * LORA_NATIVE_PILLOW_COMPAT=12 (Pillow < 13 pass order). Reads the environment. */
void ln_settings_from_env(ln_settings *s);
/* s itself, or the defaults in *fallback when s is NULL. */
const ln_settings *ln_settings_or_default(const ln_settings *s, ln_settings *fallback);

#ifdef __cplusplus
}
#endif
#endif
