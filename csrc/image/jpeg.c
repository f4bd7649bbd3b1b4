/* JPEG decoding with libjpeg-turbo, set up as Pillow sets it up (JDCT_ISLOW, fancy
 * upsampling, RGB out; CMYK/YCCK read raw and converted with Pillow's Adobe-inverted
 * formula) so the pixels match Pillow's. Errors come back through a per-call error manager
 * with setjmp/longjmp: no global state, safe on many threads. */
#include "decode_internal.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <jerror.h>

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    int warnings;
} error_ctx;

/* Everything that must survive a longjmp lives here, outside the function that calls setjmp
 * (its own locals would be indeterminate after the jump). */
typedef struct {
    struct jpeg_decompress_struct cinfo;
    error_ctx jerr;
    ln_image img;
    uint8_t *row;
    int cmyk;
    int created;
    int nomem;
    char msg[LN_ERRMSG_SIZE]; /* >= JMSG_LENGTH_MAX */
} jpeg_job;

static void on_error_exit(j_common_ptr cinfo)
{
    error_ctx *e = (error_ctx *)cinfo->err;
    longjmp(e->jump, 1);
}

static void on_emit_message(j_common_ptr cinfo, int level)
{
    if (level < 0) /* a warning: libjpeg recovered from damaged data */
        ((error_ctx *)cinfo->err)->warnings++;
}

static void on_output_message(j_common_ptr cinfo)
{
    (void)cinfo; /* never print to stderr from a library */
}

/* Smallest scale_num/8 whose short side is at least min_side (8/8 when none is). */
static void choose_scale(j_decompress_ptr cinfo, int min_side)
{
    for (unsigned num = 1; num <= 8; num++) {
        cinfo->scale_num = num;
        cinfo->scale_denom = 8;
        jpeg_calc_output_dimensions(cinfo);
        JDIMENSION s = cinfo->output_width < cinfo->output_height ? cinfo->output_width : cinfo->output_height;
        if (s >= (JDIMENSION)min_side)
            return;
    }
}

/* Runs the decompression; returns 0 on success, 1 when libjpeg raised an error. */
static int run(jpeg_job *job, const uint8_t *d, size_t n, const ln_decode_opts *opts)
{
    j_decompress_ptr cinfo = &job->cinfo;
    cinfo->err = jpeg_std_error(&job->jerr.pub);
    job->jerr.pub.error_exit = on_error_exit;
    job->jerr.pub.emit_message = on_emit_message;
    job->jerr.pub.output_message = on_output_message;
    if (setjmp(job->jerr.jump)) {
        job->jerr.pub.format_message((j_common_ptr)cinfo, job->msg);
        job->nomem = job->jerr.pub.msg_code == JERR_OUT_OF_MEMORY;
        return 1;
    }
    jpeg_create_decompress(cinfo);
    job->created = 1;
    jpeg_mem_src(cinfo, d, (unsigned long)n);
    jpeg_read_header(cinfo, TRUE);
    cinfo->dct_method = JDCT_ISLOW;
    cinfo->do_fancy_upsampling = TRUE;
    job->cmyk = cinfo->jpeg_color_space == JCS_CMYK || cinfo->jpeg_color_space == JCS_YCCK;
    cinfo->out_color_space = job->cmyk ? JCS_CMYK : JCS_RGB;
    if (opts->jpeg_draft_min_side > 0)
        choose_scale(cinfo, opts->jpeg_draft_min_side);
    jpeg_start_decompress(cinfo);

    ln_error aerr;
    if (ln_image_alloc(&job->img, (int)cinfo->output_width, (int)cinfo->output_height, 3, &aerr) != LN_OK) {
        job->nomem = 1;
        snprintf(job->msg, sizeof job->msg, "%s", aerr.msg);
        return 1;
    }
    if (job->cmyk) {
        size_t row_bytes;
        if (!ln_mul_size(cinfo->output_width, 4, &row_bytes) || !(job->row = malloc(row_bytes))) {
            job->nomem = 1;
            snprintf(job->msg, sizeof job->msg, "out of memory for a JPEG row");
            return 1;
        }
    }
    while (cinfo->output_scanline < cinfo->output_height) {
        uint8_t *dst = job->img.data + (size_t)cinfo->output_scanline * job->img.stride;
        JSAMPROW rows[1] = {job->cmyk ? job->row : dst};
        if (jpeg_read_scanlines(cinfo, rows, 1) != 1)
            break; /* cannot happen with a memory source; stop rather than spin */
        if (job->cmyk)
            ln_inverted_cmyk_row_to_rgb(job->row, dst, (int)cinfo->output_width);
    }
    jpeg_finish_decompress(cinfo);
    return 0;
}

int ln_decode_jpeg_libjpeg(const uint8_t *d, size_t n, const ln_decode_opts *opts, const ln_probe *probe,
                           ln_image *out, ln_decode_info *info, ln_error *err)
{
    (void)probe;
    jpeg_job *job = calloc(1, sizeof *job);
    if (!job)
        return ln_fail(err, LN_ERR_NOMEM, "out of memory for the JPEG decoder");
    int failed = run(job, d, n, opts);
    int cmyk = job->cmyk, warnings = job->jerr.warnings, status = LN_OK;
    if (job->created)
        jpeg_destroy_decompress(&job->cinfo);
    free(job->row);
    if (failed) {
        ln_image_free(&job->img);
        if (job->nomem)
            status = ln_fail(err, LN_ERR_NOMEM, "JPEG decoder: %s", job->msg);
        else
            ln_reject(info, LN_REASON_CORRUPT, "JPEG decoder failed: %s", job->msg);
    } else {
        *out = job->img;
        if (cmyk)
            info->notes |= LN_NOTE_CMYK;
        if (warnings)
            info->notes |= LN_NOTE_DECODER_WARNING;
    }
    free(job);
    return status;
}
