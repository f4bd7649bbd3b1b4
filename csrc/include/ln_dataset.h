/* The per-file work of `lora-native clean` and of training, batched on the thread pool:
 * analyze = read, check, decode, measure, hash, thumbnail; export = decode, crop/resize,
 * encode, write atomically; load = decode, crop/resize into one batch array. Per-file
 * problems are records, never errors of the batch. */
#ifndef LN_DATASET_H
#define LN_DATASET_H

#include "ln_checks.h"
#include "ln_decode.h"
#include "ln_encode.h"
#include "ln_geometry.h"
#include "ln_hash.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    ln_decode_opts decode;
    int thumb_size;     /* long side of the JPEG thumbnail; 0 = none */
    int thumb_quality;  /* 1..100 */
    int hashes_only;    /* decode and hash only: no metrics, pixel hash or thumbnail */
    ln_settings settings;
} ln_analyze_opts;

typedef struct {
    ln_decode_info info;
    int status;          /* LN_OK, or the code of an internal failure (out of memory) in `error` */
    ln_error error;
    uint64_t file_size;
    uint64_t file_hash;  /* XXH64 of the file bytes */
    int decoded;         /* pixels were decoded: the fields below are valid */
    int width, height;   /* decoded, after EXIF orientation; with decode.header_only (decoded == 0) the
                          * header's size after orientation, when the structure checks passed */
    ln_quality quality;
    ln_image_hashes hashes;
    uint64_t pixel_hash; /* XXH64 of width, height and the RGB rows: the exact-duplicate key */
    ln_buffer thumb;     /* JPEG bytes; empty when thumb_size is 0 or nothing was decoded */
} ln_analysis;

void ln_analyze_opts_init(ln_analyze_opts *opts);
void ln_analyze_file(const char *path, const ln_analyze_opts *opts, ln_analysis *out);
void ln_analysis_free(ln_analysis *a);
/* Analyze n files on `threads` threads; results[i] for paths[i]. */
int ln_analyze_files(const char *const *paths, size_t n, const ln_analyze_opts *opts, int threads,
                     ln_analysis *results, ln_error *err);

enum { LN_OUTPUT_PNG = 0, LN_OUTPUT_JPEG = 1 };

typedef struct {
    ln_decode_opts decode;
    int format;   /* LN_OUTPUT_PNG / LN_OUTPUT_JPEG */
    int quality;  /* JPEG quality */
    ln_settings settings;
} ln_export_opts;

typedef struct {
    const char *src;
    const char *dst;
    int expect_width, expect_height; /* from the analysis: a changed file is refused */
    int check_file_hash;             /* also refuse when the bytes' XXH64 differs from expect_file_hash */
    uint64_t expect_file_hash;
    ln_plan plan;
} ln_export_job;

void ln_export_opts_init(ln_export_opts *opts);
int ln_export_file(const ln_export_job *job, const ln_export_opts *opts, ln_error *err);
/* status[i] / errors[i] per job (errors may be NULL). */
int ln_export_files(const ln_export_job *jobs, size_t n, const ln_export_opts *opts, int threads, int *status,
                    ln_error *errors, ln_error *err);

/* Apply a plan: resample plan->box of `rgb` into a new out_width x out_height image. */
int ln_apply_plan(const ln_image *rgb, const ln_plan *plan, const ln_settings *settings, ln_image *out,
                  ln_error *err);
/* The same into caller memory: `out` (a view is fine) must be plan->out_width x out_height with
 * rgb->channels channels. */
int ln_apply_plan_into(const ln_image *rgb, const ln_plan *plan, const ln_settings *settings, ln_image *out,
                       ln_error *err);

/* Decode a source file that must be what an earlier pass measured: refused (LN_ERR_FORMAT, the
 * path in the message) when it no longer decodes, when its size after EXIF orientation is not
 * expect_width x expect_height, or, with check_file_hash, when the XXH64 of its bytes differs.
 * `when` completes "<path> changed ..." ("while cleaning", "since it was scanned"). */
int ln_decode_unchanged(const char *path, const ln_decode_opts *opts, int expect_width, int expect_height,
                        int check_file_hash, uint64_t expect_file_hash, const char *when, ln_image *out,
                        ln_error *err);

/* ---- training batches: decode + crop/resize many files into one array ---- */

typedef struct {
    ln_decode_opts decode;
    ln_settings settings;
} ln_load_opts;

typedef struct {
    const char *path;
    int expect_width, expect_height; /* after EXIF orientation, from the scan: a changed file is refused */
    int check_file_hash;             /* also refuse when the bytes' XXH64 differs from expect_file_hash */
    uint64_t expect_file_hash;
    ln_plan plan;                    /* every job of a batch has the same out size */
} ln_load_job;

void ln_load_opts_init(ln_load_opts *opts);
/* Decode jobs[i] and apply its plan straight into slot i of `out_pixels`, a caller-allocated
 * uint8 buffer [n, H, W, 3] (H, W = the plans' common out size), on `threads` threads.
 * status[i] / errors[i] per job (errors may be NULL); a failed slot is zero-filled. Returns
 * LN_ERR_ARG when the plans' out sizes differ; per-file problems never fail the batch. */
int ln_load_batch(const ln_load_job *jobs, size_t n, const ln_load_opts *opts, int threads, uint8_t *out_pixels,
                  int *status, ln_error *errors, ln_error *err);

#ifdef __cplusplus
}
#endif
#endif
