#include "ln_dataset.h"

#include <stdlib.h>
#include <string.h>

#include "ln_resample.h"

void ln_export_opts_init(ln_export_opts *opts)
{
    memset(opts, 0, sizeof *opts);
    ln_decode_opts_init(&opts->decode);
    ln_settings_default(&opts->settings);
    opts->format = LN_OUTPUT_PNG;
    opts->quality = 95;
}

int ln_apply_plan_into(const ln_image *rgb, const ln_plan *plan, const ln_settings *settings, ln_image *out,
                       ln_error *err)
{
    /* Written as subtractions: offset + inner could overflow int. */
    if (plan->inner_width <= 0 || plan->inner_height <= 0 || plan->out_width < plan->inner_width ||
        plan->out_height < plan->inner_height || plan->offset_x < 0 || plan->offset_y < 0 ||
        plan->offset_x > plan->out_width - plan->inner_width || plan->offset_y > plan->out_height - plan->inner_height)
        return ln_fail(err, LN_ERR_ARG, "malformed resize plan");
    if (!out->data || out->width != plan->out_width || out->height != plan->out_height ||
        out->channels != rgb->channels)
        return ln_fail(err, LN_ERR_ARG, "plan output is %dx%d, the destination %dx%dx%d", plan->out_width,
                       plan->out_height, out->width, out->height, out->channels);
    if (plan->inner_width == plan->out_width && plan->inner_height == plan->out_height)
        return ln_resample(rgb, out, plan->box, LN_FILTER_LANCZOS, settings, err);
    /* Padding: white canvas, the resampled region pasted at its offset. */
    size_t out_row = (size_t)out->width * (size_t)out->channels;
    for (int y = 0; y < out->height; y++)
        memset(out->data + (size_t)y * out->stride, 255, out_row);
    ln_image inner;
    int rc = ln_image_alloc(&inner, plan->inner_width, plan->inner_height, rgb->channels, err);
    if (rc == LN_OK)
        rc = ln_resample(rgb, &inner, plan->box, LN_FILTER_LANCZOS, settings, err);
    if (rc == LN_OK) {
        size_t row = (size_t)inner.width * (size_t)inner.channels;
        for (int y = 0; y < inner.height; y++)
            memcpy(out->data + (size_t)(y + plan->offset_y) * out->stride + (size_t)plan->offset_x * out->channels,
                   inner.data + (size_t)y * inner.stride, row);
    }
    ln_image_free(&inner);
    return rc;
}

int ln_apply_plan(const ln_image *rgb, const ln_plan *plan, const ln_settings *settings, ln_image *out,
                  ln_error *err)
{
    if (plan->out_width <= 0 || plan->out_height <= 0)
        return ln_fail(err, LN_ERR_ARG, "malformed resize plan");
    int rc = ln_image_alloc(out, plan->out_width, plan->out_height, rgb->channels, err);
    if (rc != LN_OK)
        return rc;
    rc = ln_apply_plan_into(rgb, plan, settings, out, err);
    if (rc != LN_OK)
        ln_image_free(out);
    return rc;
}

int ln_export_file(const ln_export_job *job, const ln_export_opts *opts, ln_error *err)
{
    ln_image img = {0}, resized = {0};
    int rc = ln_decode_unchanged(job->src, &opts->decode, job->expect_width, job->expect_height,
                                 job->check_file_hash, job->expect_file_hash, "while cleaning", &img, err);
    if (rc != LN_OK)
        return rc;
    rc = ln_apply_plan(&img, &job->plan, &opts->settings, &resized, err);
    ln_image_free(&img);
    if (rc != LN_OK)
        return rc;
    ln_buffer buf;
    rc = opts->format == LN_OUTPUT_JPEG ? ln_encode_jpeg(&resized, opts->quality, &buf, err)
                                        : ln_encode_png(&resized, &buf, err);
    ln_image_free(&resized);
    if (rc != LN_OK)
        return rc;
    rc = ln_write_file_atomic(job->dst, buf.data, buf.len, err);
    ln_buffer_free(&buf);
    return rc;
}

typedef struct {
    const ln_export_job *jobs;
    const ln_export_opts *opts;
    int *status;
    ln_error *errors;
} export_ctx;

static void export_task(void *vctx, size_t i, int worker)
{
    (void)worker;
    export_ctx *ctx = vctx;
    ln_error local;
    ln_error *e = ctx->errors ? &ctx->errors[i] : &local;
    ln_error_clear(e);
    ctx->status[i] = ln_export_file(&ctx->jobs[i], ctx->opts, e);
}

int ln_export_files(const ln_export_job *jobs, size_t n, const ln_export_opts *opts, int threads, int *status,
                    ln_error *errors, ln_error *err)
{
    if (n && (!jobs || !opts || !status))
        return ln_fail(err, LN_ERR_ARG, "ln_export_files: NULL argument");
    export_ctx ctx = {jobs, opts, status, errors};
    ln_parallel_for(threads, n, 1, export_task, &ctx);
    return LN_OK;
}
