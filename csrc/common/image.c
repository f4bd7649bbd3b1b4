#include "ln_image.h"

#include <stdlib.h>
#include <string.h>

int ln_image_alloc(ln_image *img, int width, int height, int channels, ln_error *err)
{
    size_t row, total;
    memset(img, 0, sizeof *img);
    if (width <= 0 || height <= 0 || channels < 1 || channels > 4)
        return ln_fail(err, LN_ERR_ARG, "invalid image shape %dx%dx%d", width, height, channels);
    if (!ln_mul_size((size_t)width, (size_t)channels, &row) || !ln_mul_size(row, (size_t)height, &total))
        return ln_fail(err, LN_ERR_LIMIT, "image %dx%dx%d is too large", width, height, channels);
    img->data = malloc(total ? total : 1);
    if (!img->data)
        return ln_fail(err, LN_ERR_NOMEM, "out of memory allocating %zu bytes for a %dx%d image", total, width, height);
    img->width = width;
    img->height = height;
    img->channels = channels;
    img->stride = row;
    return LN_OK;
}

void ln_image_free(ln_image *img)
{
    if (img) {
        free(img->data);
        memset(img, 0, sizeof *img);
    }
}

ln_image ln_image_view(uint8_t *data, int width, int height, int channels, size_t stride)
{
    ln_image v;
    v.width = width;
    v.height = height;
    v.channels = channels;
    v.stride = stride;
    v.data = data;
    return v;
}
