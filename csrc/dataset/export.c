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

int ln_apply_plan(const ln_image *rgb, const ln_plan *plan, const ln_settings *settings, ln_image *out,
                  ln_error *err)
{
    /* Written as subtractions: offset + inner could overflow int. */
    if (plan->inner_width <= 0 || plan->inner_height <= 0 || plan->out_width < plan->inner_width ||
        plan->out_height < plan->inner_height || plan->offset_x < 0 || plan->offset_y < 0 ||
        plan->offset_x > plan->out_width - plan->inner_width || plan->offset_y > plan->out_height - plan->inner_height)
        return ln_fail(err, LN_ERR_ARG, "malformed resize plan");
    int rc = ln_image_alloc(out, plan->out_width, plan->out_height, rgb->channels, err);
    if (rc != LN_OK)
        return rc;
    if (plan->inner_width == plan->out_width && plan->inner_height == plan->out_height) {
        rc = ln_resample(rgb, out, plan->box, LN_FILTER_LANCZOS, settings, err);
        if (rc != LN_OK)
            ln_image_free(out);
        return rc;
    }
    /* Padding: white canvas, the resampled region pasted at its offset. */
    memset(out->data, 255, out->stride * (size_t)out->height);
    ln_image inner;
    rc = ln_image_alloc(&inner, plan->inner_width, plan->inner_height, rgb->channels, err);
    if (rc == LN_OK)
        rc = ln_resample(rgb, &inner, plan->box, LN_FILTER_LANCZOS, settings, err);
    if (rc == LN_OK) {
        size_t row = (size_t)inner.width * (size_t)inner.channels;
        for (int y = 0; y < inner.height; y++)
            memcpy(out->data + (size_t)(y + plan->offset_y) * out->stride + (size_t)plan->offset_x * out->channels,
                   inner.data + (size_t)y * inner.stride, row);
    }
    ln_image_free(&inner);
    if (rc != LN_OK)
        ln_image_free(out);
    return rc;
}

int ln_export_file(const ln_export_job *job, const ln_export_opts *opts, ln_error *err)
{
    ln_image img = {0}, resized = {0};
    ln_decode_info info;
    uint8_t *bytes = NULL;
    size_t len = 0;
    int rc = ln_decode_file_ex(job->src, &opts->decode, &img, &info, &bytes, &len, err);
    if (rc != LN_OK)
        return rc;
    uint64_t file_hash = bytes ? ln_xxh64(bytes, len, 0) : 0;
    free(bytes);
    if (!img.data)
        return ln_fail(err, LN_ERR_FORMAT, "cannot decode %s any more: %s", job->src, info.message);
    if (job->check_file_hash && file_hash != job->expect_file_hash) {
        ln_image_free(&img);
        return ln_fail(err, LN_ERR_FORMAT, "%s changed while cleaning (its content is not what was analyzed)",
                       job->src);
    }
    if (img.width != job->expect_width || img.height != job->expect_height) {
        ln_image_free(&img);
        return ln_fail(err, LN_ERR_FORMAT, "%s changed while cleaning (now %dx%d, was %dx%d)", job->src, img.width,
                       img.height, job->expect_width, job->expect_height);
    }
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
