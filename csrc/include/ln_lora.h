/* LoRA kernels: in-place multi-LoRA merge, the fused adapter branch (forward/backward) and a
 * multi-tensor AdamW. CPU versions live in csrc/lora/<name>.c, CUDA versions (same math, device
 * pointers, the caller's stream) in csrc/lora/<name>.cu behind LN_WITH_CUDA.
 *
 * Conventions
 * - Every matrix is row-major and contiguous. A conv weight [out, in, kh, kw] is the matrix
 *   [out, in*kh*kw]; a LoCon 3x3 down [r, in, 3, 3] is [r, in*9] and its 1x1 up [out, r].
 * - Accumulation is fp32; a half-precision result is rounded once, to nearest even.
 * - LoRA weights of the fused branch and the AdamW tensors are fp32 (master weights).
 */
#ifndef LN_LORA_H
#define LN_LORA_H

#include "ln_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { LN_DT_F32 = 0, LN_DT_F16 = 1, LN_DT_BF16 = 2 } ln_dtype;

/* One term of a merge: delta = scale * up[rows, rank] @ down[rank, cols]. */
typedef struct {
    const void *up;
    const void *down;
    ln_dtype up_dtype;
    ln_dtype down_dtype;
    int64_t rank;
    float scale;
} ln_lora_term;

/* W[rows, cols] += sum_i scale_i * up_i @ down_i, in one pass over W: the delta of a row
 * block is accumulated in fp32 and added to W (read in fp32), rounded once on store.
 * backup (may be NULL, same dtype and size as W) receives W's previous values in the same
 * pass, for an exact restore. Unmerge = the same terms with negated scales. nterms may be 0
 * (then only the backup is written). */
int ln_lora_merge(void *w, ln_dtype w_dtype, int64_t rows, int64_t cols, const ln_lora_term *terms, int nterms,
                  void *backup, int threads, const ln_settings *settings, ln_error *err);

/* Fused adapter branch of a Linear layer, on M rows:
 *   h[M, r]  = x[M, in] @ down[r, in]^T                (fp32; returned in h when h != NULL)
 *   y[M, out] += scale * (h * mask) @ up[out, r]^T       (added into y, no [M, out] temporary)
 * mask (may be NULL) is [M, r] fp32, already divided by the keep probability (dropout on the
 * down output, as sd-scripts' network_dropout). x and y are fp32, fp16 or bf16. */
int ln_lora_branch_forward(const void *x, ln_dtype x_dtype, int64_t m, int64_t in, int64_t out, int64_t r,
                           const float *down, const float *up, const float *mask, float scale,
                           void *y, ln_dtype y_dtype, float *h, int threads, const ln_settings *settings,
                           ln_error *err);

/* Backward of ln_lora_branch_forward, with h as forward returned it (before the mask):
 *   g      = scale * (dy @ up) * mask                   [M, r]
 *   dup    = scale * dy^T @ (h * mask)                  [out, r]   (overwritten)
 *   ddown  = g^T @ x                                    [r, in]    (overwritten)
 *   dx     = g @ down  (dx_accumulate: dx += ...)       [M, in]    (skipped when dx == NULL)
 * dy is fp32/fp16/bf16; dx has its own dtype. */
int ln_lora_branch_backward(const void *dy, ln_dtype dy_dtype, const void *x, ln_dtype x_dtype, int64_t m, int64_t in,
                            int64_t out, int64_t r, const float *down, const float *up, const float *h,
                            const float *mask, float scale, float *ddown, float *dup, void *dx, ln_dtype dx_dtype,
                            int dx_accumulate, int threads, const ln_settings *settings, ln_error *err);

/* One tensor of a multi-tensor AdamW step (all fp32, n elements each). */
typedef struct {
    float *param;
    const float *grad;
    float *exp_avg;
    float *exp_avg_sq;
    int64_t n;
    float lr;
    float weight_decay;
    int64_t step; /* the step number after this update (1 on the first) */
} ln_adamw_tensor;

/* torch.optim.AdamW's update (decoupled weight decay, bias correction, eps added after the
 * bias-corrected square root) for every tensor in one call. grad_scale: gradients are divided
 * by it first (1 = none), so an fp16 loss scale needs no separate unscale pass. */
int ln_adamw_step(const ln_adamw_tensor *tensors, int ntensors, float beta1, float beta2, float eps,
                  float grad_scale, int threads, const ln_settings *settings, ln_error *err);

#ifdef LN_WITH_CUDA
/* The same operations on device pointers, enqueued on `stream` (a cudaStream_t; NULL = the
 * legacy default stream). They return once the work is enqueued; launch errors are reported,
 * asynchronous faults surface at the caller's next synchronisation. Term arrays and tensor
 * lists are host memory; the pointers inside them are device pointers. */
int ln_lora_merge_cuda(void *w, ln_dtype w_dtype, int64_t rows, int64_t cols, const ln_lora_term *terms, int nterms,
                       void *backup, void *stream, ln_error *err);
int ln_lora_branch_forward_cuda(const void *x, ln_dtype x_dtype, int64_t m, int64_t in, int64_t out, int64_t r,
                                const float *down, const float *up, const float *mask, float scale, void *y,
                                ln_dtype y_dtype, float *h, void *stream, ln_error *err);
int ln_lora_branch_backward_cuda(const void *dy, ln_dtype dy_dtype, const void *x, ln_dtype x_dtype, int64_t m,
                                 int64_t in, int64_t out, int64_t r, const float *down, const float *up,
                                 const float *h, const float *mask, float scale, float *ddown, float *dup, void *dx,
                                 ln_dtype dx_dtype, int dx_accumulate, void *stream, ln_error *err);
int ln_adamw_step_cuda(const ln_adamw_tensor *tensors, int ntensors, float beta1, float beta2, float eps,
                       float grad_scale, void *stream, ln_error *err);
#endif

#ifdef __cplusplus
}
#endif
#endif
