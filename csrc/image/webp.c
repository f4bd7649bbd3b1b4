/* WebP: RIFF container check (sizes, VP8/VP8L/VP8X, animation) and decoding with libwebp;
 * an animation gives its first frame, composed on the canvas by WebPAnimDecoder. */
#include "decode_internal.h"

#include <stdlib.h>
#include <string.h>

#include <webp/decode.h>
#include <webp/demux.h>

static uint32_t rd24le(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16);
}

/* Dimensions from a VP8 (lossy) or VP8L (lossless) bitstream chunk; 0 when malformed. */
static int bitstream_dims(const uint8_t *fourcc, const uint8_t *c, uint32_t size, int *w, int *h, int *alpha)
{
    if (!memcmp(fourcc, "VP8 ", 4)) {
        /* frame tag (3 bytes, bit 0 clear on a key frame), start code 9d 01 2a, 14-bit sizes */
        if (size < 10 || (c[0] & 1) || c[3] != 0x9d || c[4] != 0x01 || c[5] != 0x2a)
            return 0;
        *w = ln_rd16le(c + 6) & 0x3fff;
        *h = ln_rd16le(c + 8) & 0x3fff;
        return *w > 0 && *h > 0;
    }
    /* VP8L: signature 0x2f, then 14 bits width-1, 14 bits height-1, 1 bit alpha hint */
    if (size < 5 || c[0] != 0x2f)
        return 0;
    uint32_t bits = ln_rd32le(c + 1);
    *w = (int)(bits & 0x3fff) + 1;
    *h = (int)((bits >> 14) & 0x3fff) + 1;
    *alpha = (bits >> 28) & 1;
    return 1;
}

ln_reason ln_check_webp(const uint8_t *d, size_t n, ln_probe *probe, ln_decode_info *info)
{
    uint64_t total = (uint64_t)ln_rd32le(d + 4) + 8;
    if (total < 20)
        return ln_reject(info, LN_REASON_CORRUPT, "WebP RIFF header gives an impossible size");
    if (total > n)
        return ln_reject(info, LN_REASON_TRUNCATED,
                         "WebP data ends early (%zu of the %llu bytes its RIFF header declares); the file was cut short",
                         n, (unsigned long long)total);
    if (total < n)
        info->notes |= LN_NOTE_TRAILING_DATA;
    size_t end = (size_t)total, pos = 12;
    int w = 0, h = 0, alpha = 0, extended = 0, animated = 0, have_image = 0, frames = 0;
    info->bit_depth = 8;
    while (end - pos >= 8) {
        const uint8_t *fourcc = d + pos;
        uint32_t size = ln_rd32le(d + pos + 4);
        const uint8_t *c = d + pos + 8;
        if (size > end - pos - 8)
            return ln_reject(info, LN_REASON_CORRUPT, "WebP chunk '%.4s' runs past the end of its RIFF container",
                             (const char *)fourcc);
        int first = pos == 12;
        pos += 8 + (size_t)size;
        pos += (size & 1) && pos < end; /* chunks are padded to an even size */
        if (first && !memcmp(fourcc, "VP8X", 4)) {
            if (size < 10)
                return ln_reject(info, LN_REASON_CORRUPT, "WebP extended header (VP8X) is too short");
            extended = 1;
            animated = (c[0] & 0x02) != 0;
            alpha = (c[0] & 0x10) != 0;
            w = (int)rd24le(c + 4) + 1;
            h = (int)rd24le(c + 7) + 1;
        } else if (!memcmp(fourcc, "VP8 ", 4) || !memcmp(fourcc, "VP8L", 4)) {
            int bw = 0, bh = 0, balpha = 0;
            if (!bitstream_dims(fourcc, c, size, &bw, &bh, &balpha))
                return ln_reject(info, LN_REASON_CORRUPT, "WebP %.4s bitstream header is invalid",
                                 (const char *)fourcc);
            if (!extended) {
                w = bw;
                h = bh;
                alpha = balpha;
            }
            have_image = 1;
        } else if (first) {
            return ln_reject(info, LN_REASON_CORRUPT, "WebP starts with an unknown chunk '%.4s'", (const char *)fourcc);
        } else if (!memcmp(fourcc, "ANMF", 4)) {
            frames++;
        } else if (!memcmp(fourcc, "ALPH", 4)) {
            alpha = 1;
        } else if (!memcmp(fourcc, "EXIF", 4) && !probe->exif) {
            probe->exif = c;
            probe->exif_len = size;
        }
    }
    if (pos == 12)
        return ln_reject(info, LN_REASON_CORRUPT, "WebP container holds no chunks");
    info->width = w;
    info->height = h;
    info->channels = alpha ? 4 : 3;
    probe->has_alpha = alpha;
    probe->webp_animated = animated;
    if (animated) {
        if (frames == 0)
            return ln_reject(info, LN_REASON_CORRUPT, "animated WebP has no frames");
        info->frames = frames;
        if (frames > 1)
            info->notes |= LN_NOTE_ANIMATED;
    } else {
        if (!have_image)
            return ln_reject(info, LN_REASON_CORRUPT, "WebP has no image data (VP8/VP8L chunk)");
        info->frames = 1;
    }
    return ln_check_dims(info, probe, w, h);
}

static const char *status_text(VP8StatusCode s)
{
    switch (s) {
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "bitstream error";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "not enough data";
    default: return "decoder error";
    }
}

/* First frame of an animation, composed on its canvas, as non-premultiplied RGBA. */
static int decode_animation(const uint8_t *d, size_t n, ln_image *out, ln_decode_info *info, ln_error *err)
{
    WebPAnimDecoderOptions o;
    if (!WebPAnimDecoderOptionsInit(&o))
        return ln_fail(err, LN_ERR_INTERNAL, "libwebp demux version mismatch");
    o.color_mode = MODE_RGBA;
    o.use_threads = 0; /* the pipeline already decodes many files at once */
    WebPData data = {d, n};
    WebPAnimDecoder *dec = WebPAnimDecoderNew(&data, &o);
    if (!dec) {
        ln_reject(info, LN_REASON_CORRUPT, "WebP animation could not be parsed by libwebp");
        return LN_OK;
    }
    WebPAnimInfo ai;
    uint8_t *rgba = NULL;
    int ts = 0, rc = LN_OK;
    if (!WebPAnimDecoderGetInfo(dec, &ai) || ai.canvas_width != (uint32_t)info->width ||
        ai.canvas_height != (uint32_t)info->height || !WebPAnimDecoderGetNext(dec, &rgba, &ts)) {
        ln_reject(info, LN_REASON_CORRUPT, "WebP decoder failed on the first animation frame");
    } else if ((rc = ln_image_alloc(out, info->width, info->height, 3, err)) == LN_OK) {
        if (ln_pixels_to_rgb(rgba, 4, info->width, info->height, out))
            info->notes |= LN_NOTE_ALPHA;
    }
    WebPAnimDecoderDelete(dec);
    return rc;
}

int ln_decode_webp(const uint8_t *d, size_t n, const ln_probe *probe, ln_image *out, ln_decode_info *info,
                   ln_error *err)
{
    if (probe->webp_animated)
        return decode_animation(d, n, out, info, err);

    WebPDecoderConfig cfg;
    if (!WebPInitDecoderConfig(&cfg))
        return ln_fail(err, LN_ERR_INTERNAL, "libwebp version mismatch");
    VP8StatusCode st = WebPGetFeatures(d, n, &cfg.input);
    if (st != VP8_STATUS_OK) {
        ln_reject(info, LN_REASON_CORRUPT, "WebP header rejected by libwebp: %s", status_text(st));
        return LN_OK;
    }
    int w = cfg.input.width, h = cfg.input.height, alpha = cfg.input.has_alpha;
    if (w != info->width || h != info->height) {
        ln_reject(info, LN_REASON_CORRUPT, "WebP canvas %dx%d disagrees with its bitstream %dx%d", info->width,
                  info->height, w, h);
        return LN_OK;
    }
    int rc = ln_image_alloc(out, w, h, 3, err);
    if (rc != LN_OK)
        return rc;
    uint8_t *rgba = NULL;
    size_t rgba_size = 0;
    cfg.output.is_external_memory = 1;
    if (alpha) {
        if (!ln_mul_size((size_t)w * 4, (size_t)h, &rgba_size) || !(rgba = malloc(rgba_size))) {
            ln_image_free(out);
            return ln_fail(err, LN_ERR_NOMEM, "out of memory for a %dx%d WebP image", w, h);
        }
        cfg.output.colorspace = MODE_RGBA;
        cfg.output.u.RGBA.rgba = rgba;
        cfg.output.u.RGBA.stride = w * 4;
        cfg.output.u.RGBA.size = rgba_size;
    } else {
        cfg.output.colorspace = MODE_RGB;
        cfg.output.u.RGBA.rgba = out->data;
        cfg.output.u.RGBA.stride = (int)out->stride;
        cfg.output.u.RGBA.size = out->stride * (size_t)h;
    }
    st = WebPDecode(d, n, &cfg);
    if (st == VP8_STATUS_OK && alpha && ln_pixels_to_rgb(rgba, 4, w, h, out))
        info->notes |= LN_NOTE_ALPHA;
    WebPFreeDecBuffer(&cfg.output);
    free(rgba);
    if (st == VP8_STATUS_OUT_OF_MEMORY) {
        ln_image_free(out);
        return ln_fail(err, LN_ERR_NOMEM, "WebP decoder ran out of memory");
    }
    if (st != VP8_STATUS_OK) {
        ln_image_free(out);
        ln_reject(info, LN_REASON_CORRUPT, "WebP decoder failed: %s", status_text(st));
    }
    return LN_OK;
}
