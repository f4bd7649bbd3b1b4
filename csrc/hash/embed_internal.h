/* Internal interface between embed_search.c and its AVX2 kernels (embed_avx2.c). The fp32 GEMM,
 * the packing and the exact fp16 conversions come from csrc/lora (lora_internal.h). */
#ifndef LN_EMBED_INTERNAL_H
#define LN_EMBED_INTERNAL_H

#include "ln_embed.h"

#include "../lora/lora_internal.h"

/* The candidates of one row of fp32 dots: writes to hits[] the index c of every x[c] that is not
 * certainly below the threshold, i.e. not (-inf < x[c] < lo) (NaN and -inf from an fp32 overflow
 * are candidates), and returns how many. hits has room for n. */
typedef size_t (*ln_embed_scan_fn)(const float *x, size_t n, float lo, uint32_t *hits);

size_t ln_embed_scan_scalar(const float *x, size_t n, float lo, uint32_t *hits);
#ifdef LN_LORA_X86
size_t ln_embed_scan_avx2(const float *x, size_t n, float lo, uint32_t *hits);
#endif

#endif
