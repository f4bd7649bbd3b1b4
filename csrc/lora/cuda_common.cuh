// Shared helpers of the LoRA CUDA kernels: error reporting, fp32 <-> f16/bf16 element access,
// pointer/device checks and stream-ordered temporaries. Header-only; each .cu includes it.
#ifndef LN_LORA_CUDA_COMMON_CUH
#define LN_LORA_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>

#include "ln_common.h"
#include "ln_lora.h"

namespace ln_lora_cuda {

// ---- errors ----

inline int cuda_fail(ln_error *err, cudaError_t rc, const char *what)
{
    int code;
    switch (rc) {
    case cudaErrorMemoryAllocation:
        code = LN_ERR_NOMEM;
        break;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorNoKernelImageForDevice:
        code = LN_ERR_UNSUPPORTED;
        break;
    default:
        code = LN_ERR_INTERNAL;
        break;
    }
    if (err) {
        err->code = code;
        std::snprintf(err->msg, sizeof err->msg, "%s: %s (%s)", what, cudaGetErrorString(rc), cudaGetErrorName(rc));
    }
    return code;
}

// After a launch: the launch error, if any (configuration, missing kernel image, ...).
inline int check_launch(ln_error *err, const char *what)
{
    cudaError_t rc = cudaGetLastError();
    return rc == cudaSuccess ? LN_OK : cuda_fail(err, rc, what);
}

inline bool dtype_ok(int dt) { return dt == LN_DT_F32 || dt == LN_DT_F16 || dt == LN_DT_BF16; }

inline size_t dtype_size(int dt) { return dt == LN_DT_F32 ? 4 : 2; }

inline const char *dtype_name(int dt)
{
    switch (dt) {
    case LN_DT_F32:
        return "float32";
    case LN_DT_F16:
        return "float16";
    case LN_DT_BF16:
        return "bfloat16";
    default:
        return "unknown";
    }
}

// ---- the device of the pointers ----

// Checks that p (when non-NULL) is device (or managed) memory and on the same device as the
// pointers seen before; *device is -1 until the first pointer fixes it.
inline int check_device_ptr(const void *p, const char *name, int *device, ln_error *err)
{
    if (!p)
        return LN_OK;
    cudaPointerAttributes attr;
    cudaError_t rc = cudaPointerGetAttributes(&attr, p);
    if (rc != cudaSuccess) {
        cudaGetLastError();
        return cuda_fail(err, rc, name);
    }
    if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
        return ln_fail(err, LN_ERR_ARG, "%s is not CUDA device memory (a CPU tensor?)", name);
    if (*device < 0)
        *device = attr.device;
    else if (attr.device != *device)
        return ln_fail(err, LN_ERR_ARG, "%s is on cuda:%d, other arguments on cuda:%d", name, attr.device, *device);
    return LN_OK;
}

// Makes `device` current for the duration of a call and restores the previous one.
class DeviceGuard {
  public:
    DeviceGuard() = default;
    DeviceGuard(const DeviceGuard &) = delete;
    DeviceGuard &operator=(const DeviceGuard &) = delete;
    int set(int device, ln_error *err)
    {
        if (device < 0)
            return LN_OK;
        cudaError_t rc = cudaGetDevice(&prev_);
        if (rc != cudaSuccess)
            return cuda_fail(err, rc, "cudaGetDevice");
        if (prev_ != device) {
            if ((rc = cudaSetDevice(device)) != cudaSuccess)
                return cuda_fail(err, rc, "cudaSetDevice");
            changed_ = true;
        }
        return LN_OK;
    }
    ~DeviceGuard()
    {
        if (changed_)
            cudaSetDevice(prev_);
    }

  private:
    int prev_ = -1;
    bool changed_ = false;
};

// ---- stream-ordered temporaries ----

// A device buffer allocated and freed on the caller's stream (cudaMallocAsync/cudaFreeAsync).
class StreamBuffer {
  public:
    explicit StreamBuffer(cudaStream_t stream) : stream_(stream) {}
    StreamBuffer(const StreamBuffer &) = delete;
    StreamBuffer &operator=(const StreamBuffer &) = delete;
    int alloc(size_t bytes, const char *what, ln_error *err)
    {
        if (bytes == 0)
            return LN_OK;
        cudaError_t rc = cudaMallocAsync(&ptr_, bytes, stream_);
        if (rc != cudaSuccess) {
            ptr_ = nullptr;
            cudaGetLastError();
            return cuda_fail(err, rc, what);
        }
        return LN_OK;
    }
    // Frees on the stream (after the work enqueued so far); reports an error once.
    int release(ln_error *err)
    {
        if (!ptr_)
            return LN_OK;
        cudaError_t rc = cudaFreeAsync(ptr_, stream_);
        ptr_ = nullptr;
        return rc == cudaSuccess ? LN_OK : cuda_fail(err, rc, "cudaFreeAsync");
    }
    ~StreamBuffer()
    {
        if (ptr_)
            cudaFreeAsync(ptr_, stream_);
    }
    template <typename T> T *get() const { return static_cast<T *>(ptr_); }

  private:
    cudaStream_t stream_;
    void *ptr_ = nullptr;
};

inline int sm_count(int *out, ln_error *err)
{
    int dev = 0;
    cudaError_t rc = cudaGetDevice(&dev);
    if (rc == cudaSuccess)
        rc = cudaDeviceGetAttribute(out, cudaDevAttrMultiProcessorCount, dev);
    if (rc != cudaSuccess)
        return cuda_fail(err, rc, "cudaDeviceGetAttribute(multiProcessorCount)");
    if (*out < 1)
        *out = 1;
    return LN_OK;
}

// ---- element access (device) ----

// Element idx of a f32/f16/bf16 array, in fp32 (exact).
__device__ __forceinline__ float load_f32(const void *p, int dtype, int64_t idx)
{
    switch (dtype) {
    case LN_DT_F16:
        return __half2float(static_cast<const __half *>(p)[idx]);
    case LN_DT_BF16:
        return __bfloat162float(static_cast<const __nv_bfloat16 *>(p)[idx]);
    default:
        return static_cast<const float *>(p)[idx];
    }
}

template <typename T> __device__ __forceinline__ float to_f32(T v);
template <> __device__ __forceinline__ float to_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_f32<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f32<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

// fp32 -> T, rounded to nearest even.
template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

}  // namespace ln_lora_cuda

#endif
