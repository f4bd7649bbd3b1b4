/* Reading a source file again after an earlier pass measured it (clean's analysis, the
 * training scan): what is decoded now must be what was planned for. */
#include "ln_dataset.h"

#include <stdlib.h>

int ln_decode_unchanged(const char *path, const ln_decode_opts *opts, int expect_width, int expect_height,
                        int check_file_hash, uint64_t expect_file_hash, const char *when, ln_image *out,
                        ln_error *err)
{
    ln_decode_info info;
    uint8_t *bytes = NULL;
    size_t len = 0;
    int rc = ln_decode_file_ex(path, opts, out, &info, &bytes, &len, err);
    if (rc != LN_OK)
        return rc;
    uint64_t file_hash = bytes ? ln_xxh64(bytes, len, 0) : 0;
    free(bytes);
    if (!out->data)
        return ln_fail(err, LN_ERR_FORMAT, "cannot decode %s any more: %s", path, info.message);
    if (check_file_hash && file_hash != expect_file_hash) {
        ln_image_free(out);
        return ln_fail(err, LN_ERR_FORMAT, "%s changed %s (its content is not what was analyzed)", path, when);
    }
    if (out->width != expect_width || out->height != expect_height) {
        int w = out->width, h = out->height;
        ln_image_free(out);
        return ln_fail(err, LN_ERR_FORMAT, "%s changed %s (now %dx%d, was %dx%d)", path, when, w, h, expect_width,
                       expect_height);
    }
    return LN_OK;
}
