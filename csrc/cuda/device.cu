// Device discovery and a fatbin self-test. Links against the static CUDA runtime, so the
// module imports on machines without a driver; calls then report "no device" cleanly.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>

#include "ln_common.h"
#include "ln_cuda.h"

namespace {

int cuda_fail(ln_error *err, cudaError_t rc, const char *what)
{
    if (err) {
        err->code = LN_ERR_UNSUPPORTED;
        std::snprintf(err->msg, sizeof err->msg, "%s: %s (%s)", what, cudaGetErrorString(rc), cudaGetErrorName(rc));
    }
    return LN_ERR_UNSUPPORTED;
}

__global__ void axpy_kernel(int n, float a, const float *x, float *y)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] = a * x[i] + y[i];
}

}  // namespace

extern "C" int ln_cuda_device_count(int *count, ln_error *why)
{
    int n = 0;
    cudaError_t rc = cudaGetDeviceCount(&n);
    if (rc != cudaSuccess) {
        cudaGetLastError();  // clear the sticky "no driver" state for later calls
        *count = 0;
        cuda_fail(why, rc, "cudaGetDeviceCount");
        return LN_OK;
    }
    *count = n;
    return LN_OK;
}

extern "C" int ln_cuda_device_info(int index, char *name, size_t name_size, int *major, int *minor, ln_error *err)
{
    cudaDeviceProp prop;
    cudaError_t rc = cudaGetDeviceProperties(&prop, index);
    if (rc != cudaSuccess)
        return cuda_fail(err, rc, "cudaGetDeviceProperties");
    std::snprintf(name, name_size, "%s", prop.name);
    *major = prop.major;
    *minor = prop.minor;
    return LN_OK;
}

extern "C" int ln_cuda_selftest(int index, ln_error *err)
{
    const int n = 4099;  // not a multiple of the block size on purpose
    float host_x[n], host_y[n];
    for (int i = 0; i < n; i++) {
        host_x[i] = (float)i;
        host_y[i] = 1.0f;
    }
    float *dx = nullptr, *dy = nullptr;
    cudaError_t rc = cudaSetDevice(index);
    if (rc != cudaSuccess)
        return cuda_fail(err, rc, "cudaSetDevice");
    if ((rc = cudaMalloc(&dx, n * sizeof(float))) != cudaSuccess)
        return cuda_fail(err, rc, "cudaMalloc");
    if ((rc = cudaMalloc(&dy, n * sizeof(float))) != cudaSuccess) {
        cudaFree(dx);
        return cuda_fail(err, rc, "cudaMalloc");
    }
    int result = LN_OK;
    if ((rc = cudaMemcpy(dx, host_x, sizeof host_x, cudaMemcpyHostToDevice)) != cudaSuccess ||
        (rc = cudaMemcpy(dy, host_y, sizeof host_y, cudaMemcpyHostToDevice)) != cudaSuccess) {
        result = cuda_fail(err, rc, "cudaMemcpy to device");
    } else {
        axpy_kernel<<<(n + 255) / 256, 256>>>(n, 2.0f, dx, dy);
        if ((rc = cudaGetLastError()) != cudaSuccess || (rc = cudaDeviceSynchronize()) != cudaSuccess) {
            result = cuda_fail(err, rc, "self-test kernel launch (is this GPU's architecture in LORA_NATIVE_CUDA_ARCHS?)");
        } else if ((rc = cudaMemcpy(host_y, dy, sizeof host_y, cudaMemcpyDeviceToHost)) != cudaSuccess) {
            result = cuda_fail(err, rc, "cudaMemcpy to host");
        } else {
            for (int i = 0; i < n; i++) {
                if (host_y[i] != 2.0f * (float)i + 1.0f) {
                    result = ln_fail(err, LN_ERR_INTERNAL, "self-test kernel gave %g at %d, expected %g", host_y[i], i,
                                     2.0 * i + 1.0);
                    break;
                }
            }
        }
    }
    cudaFree(dx);
    cudaFree(dy);
    return result;
}
