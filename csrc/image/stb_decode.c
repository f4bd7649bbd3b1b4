/* PNG, BMP, GIF (first frame), TGA, and the comparison JPEG path, through stb_image.
 * stb's failure reason is thread-local in C11 builds, so this is safe on many threads. */
#include "decode_internal.h"

#include <limits.h>
#include <string.h>

#define STBI_NO_STDIO
#include <stb_image.h>

/* Samples per pixel to ask stb for, so transparency survives and nothing else is invented. */
static int wanted_channels(const ln_decode_info *info, const ln_probe *probe)
{
    switch (info->format) {
    case LN_FORMAT_JPEG:
        return 3;
    case LN_FORMAT_GIF:
        return 4;
    case LN_FORMAT_PNG: {
        static const int base[7] = {1, 0, 3, 3, 2, 0, 4};
        int c = base[probe->png_color_type];
        if (probe->has_alpha && (c == 1 || c == 3))
            c++; /* tRNS: a colour key or palette alpha */
        return c;
    }
    default:
        return info->channels >= 1 && info->channels <= 4 ? info->channels : 3;
    }
}

int ln_decode_stb(const uint8_t *d, size_t n, const ln_probe *probe, ln_image *out, ln_decode_info *info,
                  ln_error *err)
{
    static const char *const names[LN_FORMAT_COUNT] = {
        [LN_FORMAT_JPEG] = "JPEG", [LN_FORMAT_PNG] = "PNG", [LN_FORMAT_GIF] = "GIF",
        [LN_FORMAT_BMP] = "BMP",   [LN_FORMAT_TGA] = "TGA",
    };
    const char *name = names[info->format] ? names[info->format] : "image";
    if (n > INT_MAX) {
        ln_reject(info, LN_REASON_TOO_LARGE, "%s file of %zu bytes is over stb_image's 2 GiB limit", name, n);
        return LN_OK;
    }
    int req = wanted_channels(info, probe);
    int sixteen = info->format == LN_FORMAT_PNG && info->bit_depth == 16;
    int w = 0, h = 0, in_file = 0;
    void *px = sixteen ? (void *)stbi_load_16_from_memory(d, (int)n, &w, &h, &in_file, req)
                       : (void *)stbi_load_from_memory(d, (int)n, &w, &h, &in_file, req);
    if (!px) {
        const char *why = stbi_failure_reason();
        if (why && !strcmp(why, "outofmem"))
            return ln_fail(err, LN_ERR_NOMEM, "out of memory decoding a %dx%d %s image", info->width, info->height,
                           name);
        ln_reject(info, LN_REASON_CORRUPT, "%s decoder failed: %s", name, why ? why : "unknown error");
        return LN_OK;
    }
    if (ln_check_dims(info, probe, w, h) != LN_REASON_OK) {
        stbi_image_free(px);
        return LN_OK;
    }
    int rc = ln_image_alloc(out, w, h, 3, err);
    if (rc == LN_OK) {
        int translucent = sixteen ? ln_pixels16_to_rgb(px, req, w, h, out) : ln_pixels_to_rgb(px, req, w, h, out);
        if (translucent)
            info->notes |= LN_NOTE_ALPHA;
        if (sixteen)
            info->notes |= LN_NOTE_16BIT;
        if (info->format == LN_FORMAT_JPEG && probe->jpeg_components == 4)
            info->notes |= LN_NOTE_CMYK;
    }
    stbi_image_free(px);
    return rc;
}
