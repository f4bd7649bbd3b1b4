/* libFuzzer target for the decoder: every input must give a valid record, with pixels exactly
 * when the reason is ok, under ASan and UBSan. Built by tests/fuzz/build.sh. */
#include "ln_decode.h"

#include <stdlib.h>

/* Keeps each run fast: a crafted header cannot make us decode a huge picture. */
#define FUZZ_MAX_PIXELS (1u << 20)

static void check(const ln_image *img, const ln_decode_info *info, const ln_decode_opts *o, int rc)
{
    if (rc != LN_OK)
        abort(); /* only out-of-memory may fail, and the limit rules that out */
    if ((unsigned)info->reason >= LN_REASON_COUNT || (unsigned)info->format >= LN_FORMAT_COUNT)
        abort();
    int want_pixels = info->reason == LN_REASON_OK && !o->header_only;
    if (want_pixels != (img->data != NULL))
        abort();
    if (img->data) {
        if (img->channels != 3 || img->width <= 0 || img->height <= 0 ||
            (uint64_t)img->width * (uint64_t)img->height > FUZZ_MAX_PIXELS)
            abort();
        /* touch the first and the last byte so ASan sees the whole buffer is ours */
        volatile uint8_t a = img->data[0], b = img->data[img->stride * (size_t)(img->height - 1) + 3u * (size_t)img->width - 1];
        (void)a;
        (void)b;
    }
    if (info->reason != LN_REASON_OK && !info->message[0])
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const exts[4] = {NULL, ".tga", ".png", ".jpg"};
    for (int run = 0; run < 4; run++) {
        ln_decode_opts o;
        ln_decode_opts_init(&o);
        o.max_pixels = FUZZ_MAX_PIXELS;
        o.ext = exts[size & 3]; /* the name varies with the input, so the TGA path gets its share */
        o.jpeg_decoder = run == 1 ? LN_JPEG_STB : LN_JPEG_LIBJPEG;
        o.header_only = run == 2;
        if (run == 3) {
            o.jpeg_draft_min_side = 16;
            o.apply_orientation = 0;
        }
        ln_image img;
        ln_decode_info info;
        ln_error err;
        int rc = ln_decode_memory(data, size, &o, &img, &info, &err);
        check(&img, &info, &o, rc);
        ln_image_free(&img);
    }
    return 0;
}
