/* Perceptual image hashes bit-identical to Python imagehash 4.x (hash_size 8):
 * average_hash, dhash, phash. Bits are packed row-major with the first array element in
 * the most significant bit, so "%016llx" equals str(imagehash.xxx(img)). */
#ifndef LN_HASH_H
#define LN_HASH_H

#include "ln_image.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    uint64_t ahash;
    uint64_t dhash;
    uint64_t phash;
} ln_image_hashes;

/* `img`: 1 channel (L), 3 (RGB) or 4 (RGBA, alpha ignored as Pillow's convert("L") does);
 * converted to L like Pillow first. */
int ln_image_hashes_compute(const ln_image *img, ln_image_hashes *out, const ln_settings *settings,
                            ln_error *err);

/* The same, from an image already converted to L (saves the conversion when the caller has it). */
int ln_image_hashes_from_gray(const ln_image *gray, ln_image_hashes *out, const ln_settings *settings,
                              ln_error *err);

/* ln_image_hashes_compute over n images on up to `threads` threads (<= 0: all cores);
 * out[i] belongs to imgs[i]. Workers reuse resample tables between same-sized images. */
int ln_image_hashes_batch(const ln_image *imgs, size_t n, int threads, const ln_settings *settings,
                          ln_image_hashes *out, ln_error *err);

/* 2-D DCT-II of a 32x32 float64 block exactly as scipy.fftpack.dct(dct(x, axis=0), axis=1)
 * computes it (pocketfft operation order), in place. Exposed for the tests. */
int ln_dct2_32x32(double *block, ln_error *err);

/* 64-bit content hash of arbitrary bytes (XXH64 algorithm, seed given), used as the
 * exact-duplicate key of decoded pixels and of file bytes. */
uint64_t ln_xxh64(const void *data, size_t len, uint64_t seed);

#ifdef __cplusplus
}
#endif
#endif
