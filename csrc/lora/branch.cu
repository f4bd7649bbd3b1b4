// Fused LoRA branch of a Linear layer on the GPU, forward and backward, as products of the
// tiled GEMM in gemm.cuh (fp32 accumulation, strided operands, one rounding on store):
//
//   forward   h     = x @ down^T                 A = x [M,in]        B(k,j) = down[j,k]   K = in
//             y    += scale * (h*mask) @ up^T    A = h*mask [M,r]    B(k,j) = up[j,k]     K = r
//   backward  g     = scale * (dy @ up) * mask   A = dy [M,out]      B = up [out,r]       K = out
//             dup   = scale * dy^T @ (h*mask)    A(i,k) = dy[k,i]    B = h*mask [M,r]     K = M
//             ddown = g^T @ x                    A(i,k) = g[k,i]     B = x [M,in]         K = M
//             dx  (+)= g @ down                  A = g [M,r]         B = down [r,in]      K = r
//
// The products with K = M (the weight gradients) use split-K when their outputs are small;
// partial sums are added in a fixed order, so results are deterministic (no atomics).
#include <cmath>

#include "gemm.cuh"

using namespace ln_lora_cuda;

namespace {

Operand operand(const void *p, int dtype, int64_t s_outer, int64_t s_k, const float *mask = nullptr)
{
    Operand o;
    o.p = p;
    o.mask = mask;
    o.s_outer = s_outer;
    o.s_k = s_k;
    o.scale = 1.0f;
    o.dtype = dtype;
    return o;
}

GemmTerm term(const Operand &a, const Operand &b, int64_t k)
{
    GemmTerm t;
    t.a = a;
    t.b = b;
    t.k = k;
    return t;
}

Epilogue epilogue(void *p, int dtype, int64_t ld, float alpha, int accumulate, const float *mask = nullptr)
{
    Epilogue e;
    e.p = p;
    e.backup = nullptr;
    e.mask = mask;
    e.ld = ld;
    e.mask_ld = ld;
    e.alpha = alpha;
    e.dtype = dtype;
    e.accumulate = accumulate;
    return e;
}

bool fits(int64_t a, int64_t b)
{
    return a >= 0 && b >= 0 && (a == 0 || b <= (INT64_MAX / 4) / a);
}

int check_shapes(const char *fn, int64_t m, int64_t in, int64_t out, int64_t r, float scale, ln_error *err)
{
    if (m < 0 || in < 1 || out < 1 || r < 1)
        return ln_fail(err, LN_ERR_ARG, "%s: bad shape m=%lld in=%lld out=%lld r=%lld (m >= 0, others >= 1)", fn,
                       (long long)m, (long long)in, (long long)out, (long long)r);
    if (!fits(m, in) || !fits(m, out) || !fits(m, r) || !fits(r, in) || !fits(out, r))
        return ln_fail(err, LN_ERR_LIMIT, "%s: shape m=%lld in=%lld out=%lld r=%lld is too large", fn, (long long)m,
                       (long long)in, (long long)out, (long long)r);
    if (!std::isfinite(scale))
        return ln_fail(err, LN_ERR_ARG, "%s: scale is not finite", fn);
    return LN_OK;
}

// A required pointer (when its array is not empty) on the common device.
int need(const void *p, int64_t elems, const char *fn, const char *name, int *device, ln_error *err)
{
    if (elems == 0)
        return LN_OK;
    if (!p)
        return ln_fail(err, LN_ERR_ARG, "%s: %s is NULL", fn, name);
    char what[96];
    std::snprintf(what, sizeof what, "%s: %s", fn, name);
    return check_device_ptr(p, what, device, err);
}

int optional(const void *p, int64_t elems, const char *fn, const char *name, int *device, ln_error *err)
{
    return p ? need(p, elems, fn, name, device, err) : LN_OK;
}

}  // namespace

extern "C" int ln_lora_branch_forward_cuda(const void *x, ln_dtype x_dtype, int64_t m, int64_t in, int64_t out,
                                           int64_t r, const float *down, const float *up, const float *mask,
                                           float scale, void *y, ln_dtype y_dtype, float *h, void *stream_ptr,
                                           ln_error *err)
{
    static const char fn[] = "lora branch forward (cuda)";
    cudaGetLastError();
    if (!dtype_ok(x_dtype) || !dtype_ok(y_dtype))
        return ln_fail(err, LN_ERR_ARG, "%s: unknown dtype (x %d, y %d)", fn, (int)x_dtype, (int)y_dtype);
    int rc = check_shapes(fn, m, in, out, r, scale, err);
    if (rc != LN_OK)
        return rc;
    int device = -1;
    if ((rc = need(x, m * in, fn, "x", &device, err)) != LN_OK || (rc = need(down, r * in, fn, "down", &device, err)) ||
        (rc = need(up, out * r, fn, "up", &device, err)) || (rc = need(y, m * out, fn, "y", &device, err)) ||
        (rc = optional(mask, m * r, fn, "mask", &device, err)) || (rc = optional(h, m * r, fn, "h", &device, err)))
        return rc;
    if (m == 0)
        return LN_OK;

    DeviceGuard guard;
    if ((rc = guard.set(device, err)) != LN_OK)
        return rc;
    cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
    StreamBuffer tmp(stream);
    if (!h) {
        if ((rc = tmp.alloc((size_t)(m * r) * sizeof(float), "lora branch forward: cudaMallocAsync (h)", err)) != LN_OK)
            return rc;
        h = tmp.get<float>();
    }
    // h[M, r] = x @ down^T
    rc = gemm(term(operand(x, x_dtype, in, 1), operand(down, LN_DT_F32, in, 1), in), nullptr, 1, m, r,
              epilogue(h, LN_DT_F32, r, 1.0f, 0), stream, "lora branch forward: h = x @ down^T", err);
    if (rc != LN_OK)
        return rc;
    // y[M, out] += scale * (h * mask) @ up^T
    rc = gemm(term(operand(h, LN_DT_F32, r, 1, mask), operand(up, LN_DT_F32, r, 1), r), nullptr, 1, m, out,
              epilogue(y, y_dtype, out, scale, 1), stream, "lora branch forward: y += scale * (h*mask) @ up^T", err);
    if (rc != LN_OK)
        return rc;
    return tmp.release(err);
}

extern "C" int ln_lora_branch_backward_cuda(const void *dy, ln_dtype dy_dtype, const void *x, ln_dtype x_dtype,
                                            int64_t m, int64_t in, int64_t out, int64_t r, const float *down,
                                            const float *up, const float *h, const float *mask, float scale,
                                            float *ddown, float *dup, void *dx, ln_dtype dx_dtype, int dx_accumulate,
                                            void *stream_ptr, ln_error *err)
{
    static const char fn[] = "lora branch backward (cuda)";
    cudaGetLastError();
    if (!dtype_ok(dy_dtype) || !dtype_ok(x_dtype) || (dx && !dtype_ok(dx_dtype)))
        return ln_fail(err, LN_ERR_ARG, "%s: unknown dtype (dy %d, x %d, dx %d)", fn, (int)dy_dtype, (int)x_dtype,
                       (int)dx_dtype);
    int rc = check_shapes(fn, m, in, out, r, scale, err);
    if (rc != LN_OK)
        return rc;
    int device = -1;
    if ((rc = need(dy, m * out, fn, "dy", &device, err)) != LN_OK || (rc = need(x, m * in, fn, "x", &device, err)) ||
        (rc = need(down, r * in, fn, "down", &device, err)) || (rc = need(up, out * r, fn, "up", &device, err)) ||
        (rc = need(h, m * r, fn, "h", &device, err)) || (rc = optional(mask, m * r, fn, "mask", &device, err)) ||
        (rc = need(ddown, r * in, fn, "ddown", &device, err)) || (rc = need(dup, out * r, fn, "dup", &device, err)) ||
        (rc = optional(dx, m * in, fn, "dx", &device, err)))
        return rc;

    DeviceGuard guard;
    if ((rc = guard.set(device, err)) != LN_OK)
        return rc;
    cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
    StreamBuffer gbuf(stream);
    if ((rc = gbuf.alloc((size_t)(m * r) * sizeof(float), "lora branch backward: cudaMallocAsync (g)", err)) != LN_OK)
        return rc;
    float *g = gbuf.get<float>();

    // g[M, r] = scale * (dy @ up) * mask
    rc = gemm(term(operand(dy, dy_dtype, out, 1), operand(up, LN_DT_F32, 1, r), out), nullptr, 1, m, r,
              epilogue(g, LN_DT_F32, r, scale, 0, mask), stream, "lora branch backward: g = scale * (dy @ up) * mask",
              err);
    if (rc != LN_OK)
        return rc;
    // dup[out, r] = scale * dy^T @ (h * mask)   (K = M; zeros when M == 0)
    rc = gemm(term(operand(dy, dy_dtype, 1, out), operand(h, LN_DT_F32, 1, r, mask), m), nullptr, 1, out, r,
              epilogue(dup, LN_DT_F32, r, scale, 0), stream, "lora branch backward: dup = scale * dy^T @ (h*mask)",
              err);
    if (rc != LN_OK)
        return rc;
    // ddown[r, in] = g^T @ x   (K = M)
    rc = gemm(term(operand(g, LN_DT_F32, 1, r), operand(x, x_dtype, 1, in), m), nullptr, 1, r, in,
              epilogue(ddown, LN_DT_F32, in, 1.0f, 0), stream, "lora branch backward: ddown = g^T @ x", err);
    if (rc != LN_OK)
        return rc;
    // dx[M, in] (+)= g @ down
    if (dx) {
        rc = gemm(term(operand(g, LN_DT_F32, r, 1), operand(down, LN_DT_F32, 1, in), r), nullptr, 1, m, in,
                  epilogue(dx, dx_dtype, in, 1.0f, dx_accumulate ? 1 : 0), stream,
                  "lora branch backward: dx = g @ down", err);
        if (rc != LN_OK)
            return rc;
    }
    return gbuf.release(err);
}
