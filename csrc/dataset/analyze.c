#include "ln_dataset.h"

#include <stdlib.h>
#include <string.h>

#include "ln_resample.h"

void ln_analyze_opts_init(ln_analyze_opts *opts)
{
    memset(opts, 0, sizeof *opts);
    ln_decode_opts_init(&opts->decode);
    ln_settings_default(&opts->settings);
    opts->thumb_size = 0;
    opts->thumb_quality = 80;
}

void ln_analysis_free(ln_analysis *a)
{
    if (a)
        ln_buffer_free(&a->thumb);
}

static uint64_t pixel_hash(const ln_image *img)
{
    /* Seed with the shape so a 2x8 and a 4x4 image of the same bytes differ; hash rows
     * by chaining so padding in the stride never counts. */
    uint64_t h = ln_xxh64(&img->width, sizeof img->width, 0x6c6e2d706978ULL);
    h = ln_xxh64(&img->height, sizeof img->height, h);
    size_t row = (size_t)img->width * (size_t)img->channels;
    if (img->stride == row)
        return ln_xxh64(img->data, row * (size_t)img->height, h);
    for (int y = 0; y < img->height; y++)
        h = ln_xxh64(img->data + (size_t)y * img->stride, row, h);
    return h;
}

static int make_thumb(const ln_image *rgb, int side, int quality, const ln_settings *settings, ln_buffer *out,
                      ln_error *err)
{
    ln_size fit = ln_fit_within(rgb->width, rgb->height, side);
    ln_image t;
    int rc = ln_image_alloc(&t, fit.width, fit.height, 3, err);
    if (rc != LN_OK)
        return rc;
    rc = ln_resample(rgb, &t, NULL, LN_FILTER_BICUBIC, settings, err);
    if (rc == LN_OK)
        rc = ln_encode_jpeg(&t, quality, out, err);
    ln_image_free(&t);
    return rc;
}

void ln_analyze_file(const char *path, const ln_analyze_opts *opts, ln_analysis *out)
{
    memset(out, 0, sizeof *out);
    ln_error_clear(&out->error);
    uint8_t *bytes = NULL;
    size_t len = 0;
    ln_image img = {0};
    int rc = ln_decode_file_ex(path, &opts->decode, &img, &out->info, &bytes, &len, &out->error);
    if (rc != LN_OK) {
        out->status = rc;
        return;
    }
    if (bytes) {
        out->file_size = len;
        out->file_hash = ln_xxh64(bytes, len, 0);
        free(bytes);
    }
    if (!img.data) {
        /* A header-only pass: the size the decode will have, for planning without pixels. */
        if (opts->decode.header_only && out->info.reason == LN_REASON_OK) {
            int swap = opts->decode.apply_orientation && out->info.orientation >= 5;
            out->width = swap ? out->info.height : out->info.width;
            out->height = swap ? out->info.width : out->info.height;
        }
        return; /* or a reason was recorded */
    }
    out->decoded = 1;
    out->width = img.width;
    out->height = img.height;
    if (opts->hashes_only) {
        out->status = ln_image_hashes_compute(&img, &out->hashes, &opts->settings, &out->error);
        ln_image_free(&img);
        return;
    }
    out->pixel_hash = pixel_hash(&img);
    ln_image small = {0};
    rc = ln_quality_downscale(&img, &small, &opts->settings, &out->error);
    if (rc == LN_OK)
        rc = ln_quality_measure(&small, &out->quality, &opts->settings, &out->error);
    if (rc == LN_OK)
        rc = ln_image_hashes_compute(&img, &out->hashes, &opts->settings, &out->error);
    /* The thumbnail comes from the measuring downscale: cheap whatever the source size. */
    if (rc == LN_OK && opts->thumb_size > 0)
        rc = make_thumb(&small, opts->thumb_size, opts->thumb_quality, &opts->settings, &out->thumb, &out->error);
    out->status = rc;
    ln_image_free(&small);
    ln_image_free(&img);
}

typedef struct {
    const char *const *paths;
    const ln_analyze_opts *opts;
    ln_analysis *results;
} analyze_ctx;

static void analyze_task(void *vctx, size_t i, int worker)
{
    (void)worker;
    analyze_ctx *ctx = vctx;
    ln_analyze_file(ctx->paths[i], ctx->opts, &ctx->results[i]);
}

int ln_analyze_files(const char *const *paths, size_t n, const ln_analyze_opts *opts, int threads,
                     ln_analysis *results, ln_error *err)
{
    if (n && (!paths || !opts || !results))
        return ln_fail(err, LN_ERR_ARG, "ln_analyze_files: NULL argument");
    analyze_ctx ctx = {paths, opts, results};
    ln_parallel_for(threads, n, 1, analyze_task, &ctx);
    return LN_OK;
}
