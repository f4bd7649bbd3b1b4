/* EXIF orientation: read tag 0x0112 from IFD0 of a TIFF-structured block (either byte
 * order), and apply it the way Pillow's ImageOps.exif_transpose does. */
#include "decode_internal.h"

#include <stddef.h>
#include <string.h>

int ln_exif_orientation(const uint8_t *t, size_t len)
{
    if (!t || len < 8)
        return 1;
    /* Some writers keep the "Exif\0\0" prefix in WebP/PNG EXIF chunks; Pillow skips it too. */
    if (len >= 14 && !memcmp(t, "Exif\0\0", 6)) {
        t += 6;
        len -= 6;
    }
    int le;
    if (!memcmp(t, "II*\0", 4))
        le = 1;
    else if (!memcmp(t, "MM\0*", 4))
        le = 0;
    else
        return 1;
    uint32_t ifd = le ? ln_rd32le(t + 4) : ln_rd32be(t + 4);
    if (ifd > len || len - ifd < 2)
        return 1;
    unsigned count = le ? ln_rd16le(t + ifd) : ln_rd16be(t + ifd);
    const uint8_t *e = t + ifd + 2;
    size_t room = (len - ifd - 2) / 12;
    if (count > room)
        count = (unsigned)room; /* a cut-off IFD: read the entries that are there */
    for (unsigned i = 0; i < count; i++, e += 12) {
        unsigned tag = le ? ln_rd16le(e) : ln_rd16be(e);
        if (tag != 0x0112)
            continue;
        unsigned type = le ? ln_rd16le(e + 2) : ln_rd16be(e + 2);
        uint32_t n = le ? ln_rd32le(e + 4) : ln_rd32be(e + 4);
        uint32_t v;
        if (n != 1)
            return 1;
        if (type == 3) /* SHORT, left-justified in the value field */
            v = le ? ln_rd16le(e + 8) : ln_rd16be(e + 8);
        else if (type == 4) /* LONG */
            v = le ? ln_rd32le(e + 8) : ln_rd32be(e + 8);
        else
            return 1;
        return v >= 1 && v <= 8 ? (int)v : 1;
    }
    return 1;
}

/* Source coordinates for output pixel (x, y) of the oriented image; w, h are the source size.
 * 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise, 7 transverse,
 * 8 rotate 90 counter-clockwise (Pillow: FLIP_LEFT_RIGHT, ROTATE_180, FLIP_TOP_BOTTOM,
 * TRANSPOSE, ROTATE_270, TRANSVERSE, ROTATE_90). */
static inline void source_of(int o, int x, int y, int w, int h, int *sx, int *sy)
{
    switch (o) {
    case 2: *sx = w - 1 - x; *sy = y; break;
    case 3: *sx = w - 1 - x; *sy = h - 1 - y; break;
    case 4: *sx = x; *sy = h - 1 - y; break;
    case 5: *sx = y; *sy = x; break;
    case 6: *sx = y; *sy = h - 1 - x; break;
    case 7: *sx = w - 1 - y; *sy = h - 1 - x; break;
    case 8: *sx = w - 1 - y; *sy = x; break;
    default: *sx = x; *sy = y; break;
    }
}

int ln_apply_orientation(ln_image *img, int orientation, ln_error *err)
{
    if (orientation < 2 || orientation > 8 || !img->data)
        return LN_OK;
    int w = img->width, h = img->height, c = img->channels;
    int ow = orientation >= 5 ? h : w, oh = orientation >= 5 ? w : h;
    ln_image out;
    int rc = ln_image_alloc(&out, ow, oh, c, err);
    if (rc != LN_OK)
        return rc;
    /* Along an output row the source moves by a fixed step, so walk it with a pointer. */
    int x1, y1, x0, y0;
    source_of(orientation, 1, 0, w, h, &x1, &y1);
    source_of(orientation, 0, 0, w, h, &x0, &y0);
    ptrdiff_t step = (ptrdiff_t)(y1 - y0) * (ptrdiff_t)img->stride + (ptrdiff_t)(x1 - x0) * c;
    /* Tiles keep the column-wise reads of a quarter turn inside the cache. */
    enum { TILE = 64 };
    for (int ty = 0; ty < oh; ty += TILE) {
        for (int tx = 0; tx < ow; tx += TILE) {
            int ye = ty + TILE < oh ? ty + TILE : oh, xe = tx + TILE < ow ? tx + TILE : ow;
            for (int y = ty; y < ye; y++) {
                int sx, sy;
                source_of(orientation, tx, y, w, h, &sx, &sy);
                const uint8_t *s = img->data + (size_t)sy * img->stride + (size_t)sx * c;
                uint8_t *o = out.data + (size_t)y * out.stride + (size_t)tx * c;
                for (int x = tx; x < xe; x++, o += c, s += step)
                    for (int k = 0; k < c; k++)
                        o[k] = s[k];
            }
        }
    }
    ln_image_free(img);
    *img = out;
    return LN_OK;
}
