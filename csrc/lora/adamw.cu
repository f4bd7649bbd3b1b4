// Multi-tensor AdamW on the GPU, torch.optim.AdamW's math (foreach=False, amsgrad=False):
//
//   g = grad / grad_scale
//   param *= 1 - lr * weight_decay
//   m = lerp(m, g, 1 - beta1)                  (torch's lerp formula)
//   v = v * beta2 + (1 - beta2) * g * g
//   param -= (lr / (1 - beta1^step)) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
//
// The per-tensor scalars are computed on the host in double, as torch does in Python, and
// rounded to fp32 as torch's scalar arguments are. Tensors go to the kernel by value in
// chunks of kMaxTensors (like torch's multi_tensor_apply): one launch per chunk, each block
// serving one tensor with a grid stride over it.
#include <cmath>

#include "cuda_common.cuh"

using namespace ln_lora_cuda;

namespace {

constexpr int kMaxTensors = 32;
constexpr int kAdamThreads = 256;
constexpr int kUnroll = 4;
constexpr int64_t kBlockElems = (int64_t)kAdamThreads * kUnroll;
constexpr int kMaxBlocksPerTensor = 1 << 16;

struct AdamTensor {
    float *param;
    const float *grad;
    float *exp_avg;
    float *exp_avg_sq;
    int64_t n;
    float decay;      // 1 - lr * weight_decay
    float step_size;  // lr / (1 - beta1^step)
    float bc2_sqrt;   // sqrt(1 - beta2^step)
    int first_block;  // blocks [first_block, first_block + nblocks) of the launch serve this tensor
    int nblocks;
};

struct AdamChunk {
    AdamTensor t[kMaxTensors];
    int ntensors;
    float beta1_weight;  // 1 - beta1 (the lerp weight)
    float beta2;
    float one_minus_beta2;
    float eps;
    float grad_scale;
};

__device__ __forceinline__ void adam_one(const AdamTensor &t, const AdamChunk &c, int64_t i)
{
    float g = t.grad[i] / c.grad_scale;
    float p = t.param[i] * t.decay;
    float m = t.exp_avg[i];
    float v = t.exp_avg_sq[i];
    // torch lerp: weight < 0.5 ? self + weight * (end - self) : end - (end - self) * (1 - weight)
    const float w = c.beta1_weight;
    float diff = g - m;
    m = fabsf(w) < 0.5f ? m + w * diff : g - diff * (1.0f - w);
    v = v * c.beta2;
    v = v + c.one_minus_beta2 * g * g;
    float denom = sqrtf(v) / t.bc2_sqrt + c.eps;
    p = p + (-t.step_size) * (m / denom);
    t.param[i] = p;
    t.exp_avg[i] = m;
    t.exp_avg_sq[i] = v;
}

__global__ void __launch_bounds__(kAdamThreads) adamw_kernel(AdamChunk c)
{
    const int b = (int)blockIdx.x;
    int ti = 0;
    while (ti + 1 < c.ntensors && b >= c.t[ti + 1].first_block)
        ti++;
    const AdamTensor &t = c.t[ti];
    const int64_t local = b - t.first_block;
    for (int64_t base = local * kBlockElems; base < t.n; base += (int64_t)t.nblocks * kBlockElems) {
#pragma unroll
        for (int u = 0; u < kUnroll; u++) {
            int64_t i = base + (int64_t)u * kAdamThreads + threadIdx.x;
            if (i < t.n)
                adam_one(t, c, i);
        }
    }
}

int launch(AdamChunk &c, int blocks, cudaStream_t stream, ln_error *err)
{
    if (c.ntensors == 0 || blocks == 0)
        return LN_OK;
    adamw_kernel<<<(unsigned)blocks, kAdamThreads, 0, stream>>>(c);
    int rc = check_launch(err, "adamw step kernel");
    c.ntensors = 0;
    return rc;
}

}  // namespace

extern "C" int ln_adamw_step_cuda(const ln_adamw_tensor *tensors, int ntensors, float beta1, float beta2, float eps,
                                  float grad_scale, void *stream_ptr, ln_error *err)
{
    cudaGetLastError();
    if (ntensors < 0 || (ntensors > 0 && !tensors))
        return ln_fail(err, LN_ERR_ARG, "adamw step (cuda): %d tensors and tensor array %p", ntensors,
                       (const void *)tensors);
    if (!(beta1 >= 0.0f && beta1 < 1.0f) || !(beta2 >= 0.0f && beta2 < 1.0f))
        return ln_fail(err, LN_ERR_ARG, "adamw step (cuda): betas must be in [0, 1), got %g and %g", (double)beta1,
                       (double)beta2);
    if (!(eps >= 0.0f) || !std::isfinite(eps))
        return ln_fail(err, LN_ERR_ARG, "adamw step (cuda): eps must be finite and >= 0, got %g", (double)eps);
    if (!(grad_scale > 0.0f) || !std::isfinite(grad_scale))
        return ln_fail(err, LN_ERR_ARG, "adamw step (cuda): grad_scale must be finite and > 0, got %g",
                       (double)grad_scale);
    int first = -1;
    for (int i = 0; i < ntensors; i++) {
        const ln_adamw_tensor &t = tensors[i];
        if (t.n < 0)
            return ln_fail(err, LN_ERR_ARG, "adamw step (cuda): tensor %d has %lld elements", i, (long long)t.n);
        if (t.step < 1)
            return ln_fail(err, LN_ERR_ARG, "adamw step (cuda): tensor %d has step %lld (must be >= 1)", i,
                           (long long)t.step);
        if (!std::isfinite(t.lr) || !std::isfinite(t.weight_decay))
            return ln_fail(err, LN_ERR_ARG, "adamw step (cuda): tensor %d has a non-finite lr or weight decay", i);
        if (t.n > 0 && (!t.param || !t.grad || !t.exp_avg || !t.exp_avg_sq))
            return ln_fail(err, LN_ERR_ARG, "adamw step (cuda): tensor %d has a NULL pointer", i);
        if (t.n > 0 && first < 0)
            first = i;
    }
    if (first < 0)
        return LN_OK;
    // One pointer decides the device (checking all of them would cost a driver call each).
    int device = -1;
    int rc = check_device_ptr(tensors[first].param, "adamw step (cuda): param", &device, err);
    if (rc != LN_OK)
        return rc;
    DeviceGuard guard;
    if ((rc = guard.set(device, err)) != LN_OK)
        return rc;
    cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);

    AdamChunk c;
    c.ntensors = 0;
    c.beta1_weight = (float)(1.0 - (double)beta1);
    c.beta2 = beta2;
    c.one_minus_beta2 = (float)(1.0 - (double)beta2);
    c.eps = eps;
    c.grad_scale = grad_scale;
    int blocks = 0;
    for (int i = 0; i < ntensors; i++) {
        const ln_adamw_tensor &src = tensors[i];
        if (src.n == 0)
            continue;
        if (c.ntensors == kMaxTensors && (rc = launch(c, blocks, stream, err)) != LN_OK)
            return rc;
        if (c.ntensors == 0)
            blocks = 0;
        AdamTensor &t = c.t[c.ntensors++];
        t.param = src.param;
        t.grad = src.grad;
        t.exp_avg = src.exp_avg;
        t.exp_avg_sq = src.exp_avg_sq;
        t.n = src.n;
        const double step = (double)src.step;
        const double bc1 = 1.0 - std::pow((double)beta1, step);
        const double bc2 = 1.0 - std::pow((double)beta2, step);
        t.decay = (float)(1.0 - (double)src.lr * (double)src.weight_decay);
        t.step_size = (float)((double)src.lr / bc1);
        t.bc2_sqrt = (float)std::sqrt(bc2);
        int64_t nb = (src.n + kBlockElems - 1) / kBlockElems;
        t.nblocks = (int)(nb < kMaxBlocksPerTensor ? nb : kMaxBlocksPerTensor);
        t.first_block = blocks;
        blocks += t.nblocks;
    }
    return launch(c, blocks, stream, err);
}
