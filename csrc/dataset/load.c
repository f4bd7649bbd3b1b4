/* Training batches: decode each file, check it is the one the scan measured, and resample its
 * plan straight into its slot of the caller's [n, H, W, 3] array, one file per task. */
#include "ln_dataset.h"

#include <string.h>

void ln_load_opts_init(ln_load_opts *opts)
{
    memset(opts, 0, sizeof *opts);
    ln_decode_opts_init(&opts->decode);
    ln_settings_default(&opts->settings);
}

typedef struct {
    const ln_load_job *jobs;
    const ln_load_opts *opts;
    uint8_t *pixels;
    size_t slot_bytes;
    int width, height;
    int *status;
    ln_error *errors;
} load_ctx;

static int load_one(const load_ctx *ctx, size_t i, ln_error *err)
{
    const ln_load_job *job = &ctx->jobs[i];
    ln_image img = {0};
    int rc = ln_decode_unchanged(job->path, &ctx->opts->decode, job->expect_width, job->expect_height,
                                 job->check_file_hash, job->expect_file_hash, "since it was scanned", &img, err);
    if (rc != LN_OK)
        return rc;
    ln_image slot = ln_image_view(ctx->pixels + i * ctx->slot_bytes, ctx->width, ctx->height, 3,
                                  (size_t)ctx->width * 3);
    rc = ln_apply_plan_into(&img, &job->plan, &ctx->opts->settings, &slot, err);
    ln_image_free(&img);
    return rc;
}

static void load_task(void *vctx, size_t i, int worker)
{
    (void)worker;
    load_ctx *ctx = vctx;
    ln_error local;
    ln_error *e = ctx->errors ? &ctx->errors[i] : &local;
    ln_error_clear(e);
    ctx->status[i] = load_one(ctx, i, e);
    if (ctx->status[i] != LN_OK) /* never half a picture: a failed slot is black */
        memset(ctx->pixels + i * ctx->slot_bytes, 0, ctx->slot_bytes);
}

int ln_load_batch(const ln_load_job *jobs, size_t n, const ln_load_opts *opts, int threads, uint8_t *out_pixels,
                  int *status, ln_error *errors, ln_error *err)
{
    if (n == 0)
        return LN_OK;
    if (!jobs || !opts || !out_pixels || !status)
        return ln_fail(err, LN_ERR_ARG, "ln_load_batch: NULL argument");
    int w = jobs[0].plan.out_width, h = jobs[0].plan.out_height;
    if (w <= 0 || h <= 0)
        return ln_fail(err, LN_ERR_ARG, "ln_load_batch: plan output %dx%d", w, h);
    for (size_t i = 1; i < n; i++)
        if (jobs[i].plan.out_width != w || jobs[i].plan.out_height != h)
            return ln_fail(err, LN_ERR_ARG, "one batch needs one output size: job %zu is %dx%d, job 0 is %dx%d", i,
                           jobs[i].plan.out_width, jobs[i].plan.out_height, w, h);
    size_t slot, total;
    if (!ln_mul_size((size_t)w * 3, (size_t)h, &slot) || !ln_mul_size(slot, n, &total))
        return ln_fail(err, LN_ERR_LIMIT, "a batch of %zu images of %dx%d is too large", n, w, h);
    load_ctx ctx = {jobs, opts, out_pixels, slot, w, h, status, errors};
    ln_parallel_for(threads, n, 1, load_task, &ctx);
    return LN_OK;
}
