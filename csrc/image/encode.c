#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE
#include "ln_encode.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stb_image_write.h>

void ln_buffer_free(ln_buffer *buf)
{
    if (buf) {
        free(buf->data);
        memset(buf, 0, sizeof *buf);
    }
}

static void buffer_append(void *ctx, void *data, int size)
{
    ln_buffer *buf = ctx;
    if (buf->failed || size <= 0)
        return;
    size_t need = buf->len + (size_t)size;
    if (need > buf->cap) {
        size_t cap = buf->cap ? buf->cap : 4096;
        while (cap < need)
            cap *= 2;
        uint8_t *p = realloc(buf->data, cap);
        if (!p) {
            buf->failed = 1;
            return;
        }
        buf->data = p;
        buf->cap = cap;
    }
    memcpy(buf->data + buf->len, data, (size_t)size);
    buf->len = need;
}

static int check_encodable(const ln_image *img, ln_error *err)
{
    if (!img || !img->data || img->width <= 0 || img->height <= 0 || img->channels < 1 || img->channels > 4)
        return ln_fail(err, LN_ERR_ARG, "cannot encode an empty or malformed image");
    if (img->stride > (size_t)0x7fffffff || img->width > 0xffff || img->height > 0xffff)
        return ln_fail(err, LN_ERR_LIMIT, "image %dx%d is too large to encode", img->width, img->height);
    return LN_OK;
}

int ln_encode_png(const ln_image *img, ln_buffer *out, ln_error *err)
{
    memset(out, 0, sizeof *out);
    int rc = check_encodable(img, err);
    if (rc != LN_OK)
        return rc;
    if (!stbi_write_png_to_func(buffer_append, out, img->width, img->height, img->channels, img->data,
                                (int)img->stride) || out->failed) {
        int nomem = out->failed;
        ln_buffer_free(out);
        return nomem ? ln_fail(err, LN_ERR_NOMEM, "out of memory encoding PNG")
                     : ln_fail(err, LN_ERR_INTERNAL, "PNG encoder failed");
    }
    return LN_OK;
}

int ln_encode_jpeg(const ln_image *img, int quality, ln_buffer *out, ln_error *err)
{
    memset(out, 0, sizeof *out);
    int rc = check_encodable(img, err);
    if (rc != LN_OK)
        return rc;
    if (quality < 1 || quality > 100)
        return ln_fail(err, LN_ERR_ARG, "JPEG quality must be 1..100, got %d", quality);
    if (img->channels == 2 || img->channels == 4)
        return ln_fail(err, LN_ERR_ARG, "JPEG has no alpha channel: composite the image to RGB first");
    if (img->stride != (size_t)img->width * (size_t)img->channels)
        return ln_fail(err, LN_ERR_ARG, "JPEG encoder needs contiguous rows");
    if (!stbi_write_jpg_to_func(buffer_append, out, img->width, img->height, img->channels, img->data, quality) ||
        out->failed) {
        int nomem = out->failed;
        ln_buffer_free(out);
        return nomem ? ln_fail(err, LN_ERR_NOMEM, "out of memory encoding JPEG")
                     : ln_fail(err, LN_ERR_INTERNAL, "JPEG encoder failed");
    }
    return LN_OK;
}

static int write_fail(ln_error *err, const char *path, int errnum)
{
    char what[600];
    snprintf(what, sizeof what, "cannot write %s", path);
    return ln_fail_errno(err, what, errnum);
}

int ln_write_file_atomic(const char *path, const uint8_t *data, size_t len, ln_error *err)
{
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    if (!tmp)
        return ln_fail(err, LN_ERR_NOMEM, "out of memory");
    /* Temp name in the same folder so rename(2) is atomic; hidden and recognisable. */
    const char *slash = strrchr(path, '/');
    size_t dir_len = slash ? (size_t)(slash - path) + 1 : 0;
    memcpy(tmp, path, dir_len);
    snprintf(tmp + dir_len, plen + 16 - dir_len, ".%s.XXXXXX", path + dir_len);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        char what[600];
        snprintf(what, sizeof what, "cannot create a file next to %s", path);
        return ln_fail_errno(err, what, e);
    }
    size_t done = 0;
    while (done < len) {
        ssize_t w = write(fd, data + done, len - done);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            close(fd);
            unlink(tmp);
            free(tmp);
            return write_fail(err, path, e);
        }
        done += (size_t)w;
    }
    /* mkstemp creates 0600; outputs are meant to be shared like any created file. Reading
     * the umask is not thread-safe, so use the common default. */
    if (fchmod(fd, 0644) != 0) {
        /* not fatal: the file is still ours and readable */
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        free(tmp);
        return write_fail(err, path, e);
    }
    free(tmp);
    return LN_OK;
}
