/* Conversions into the one output layout: 8-bit RGB, alpha composited on white. */
#include "decode_internal.h"

/* a*b/255 rounded, the way Pillow computes it (libImaging MULDIV255). */
static inline unsigned muldiv255(unsigned a, unsigned b)
{
    unsigned t = a * b + 128;
    return ((t >> 8) + t) >> 8;
}

void ln_inverted_cmyk_row_to_rgb(const uint8_t *cmyk, uint8_t *rgb, int width)
{
    /* Adobe writes CMYK inverted (0 = full ink); Pillow un-inverts ("CMYK;I") and then
     * computes channel = (255-k) - c*(255-k)/255, which never leaves 0..255. */
    for (int x = 0; x < width; x++, cmyk += 4, rgb += 3) {
        unsigned nk = cmyk[3];
        rgb[0] = (uint8_t)(nk - muldiv255(255u - cmyk[0], nk));
        rgb[1] = (uint8_t)(nk - muldiv255(255u - cmyk[1], nk));
        rgb[2] = (uint8_t)(nk - muldiv255(255u - cmyk[2], nk));
    }
}

/* One pixel of 1..4 samples (already 8-bit) to RGB; returns 1 when it is not opaque. */
static inline int put_rgb(uint8_t *o, const unsigned *s, int channels)
{
    switch (channels) {
    case 1:
        o[0] = o[1] = o[2] = (uint8_t)s[0];
        return 0;
    case 2:
        o[0] = o[1] = o[2] = ln_over_white(s[0], s[1]);
        return s[1] != 255;
    case 3:
        o[0] = (uint8_t)s[0];
        o[1] = (uint8_t)s[1];
        o[2] = (uint8_t)s[2];
        return 0;
    default:
        o[0] = ln_over_white(s[0], s[3]);
        o[1] = ln_over_white(s[1], s[3]);
        o[2] = ln_over_white(s[2], s[3]);
        return s[3] != 255;
    }
}

/* One loop for both sample widths; `wide` is loop-invariant, so the compiler splits it. */
static int to_rgb(const void *src, int wide, int channels, int width, int height, ln_image *dst)
{
    const uint8_t *s8 = src;
    const uint16_t *s16 = src;
    size_t i = 0;
    int translucent = 0;
    for (int y = 0; y < height; y++) {
        uint8_t *o = dst->data + (size_t)y * dst->stride;
        for (int x = 0; x < width; x++, o += 3) {
            unsigned s[4];
            for (int c = 0; c < channels; c++, i++)
                s[c] = wide ? s16[i] >> 8u : s8[i]; /* the high byte, as Pillow's ;16B unpackers */
            translucent |= put_rgb(o, s, channels);
        }
    }
    return translucent;
}

int ln_pixels_to_rgb(const uint8_t *src, int channels, int width, int height, ln_image *dst)
{
    return to_rgb(src, 0, channels, width, height, dst);
}

int ln_pixels16_to_rgb(const uint16_t *src, int channels, int width, int height, ln_image *dst)
{
    return to_rgb(src, 1, channels, width, height, dst);
}
