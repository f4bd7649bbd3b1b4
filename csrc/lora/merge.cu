// In-place multi-LoRA merge on the GPU: W[rows, cols] += sum_i scale_i * up_i @ down_i.
//
// One pass of the tiled GEMM (gemm.cuh) over W: each block owns a tile of W, loops over every
// term and its rank in chunks of 16 (up rows and down columns converted to fp32 in shared
// memory, the term's scale folded into up), accumulates in fp32 registers, then reads W,
// writes the backup, adds and rounds once. Terms go to the kernel as a small device table.
#include <cmath>
#include <vector>

#include "gemm.cuh"

using namespace ln_lora_cuda;

namespace {

bool mul_fits(int64_t a, int64_t b, int64_t limit)
{
    return a >= 0 && b >= 0 && (a == 0 || b <= limit / a);
}

}  // namespace

extern "C" int ln_lora_merge_cuda(void *w, ln_dtype w_dtype, int64_t rows, int64_t cols, const ln_lora_term *terms,
                                  int nterms, void *backup, void *stream_ptr, ln_error *err)
{
    cudaGetLastError();  // a stale error of an earlier call must not be reported as ours
    if (!dtype_ok(w_dtype))
        return ln_fail(err, LN_ERR_ARG, "lora merge: unknown W dtype %d", (int)w_dtype);
    if (rows < 0 || cols < 0)
        return ln_fail(err, LN_ERR_ARG, "lora merge: negative W shape %lld x %lld", (long long)rows, (long long)cols);
    if (!mul_fits(rows, cols, INT64_MAX / 4))
        return ln_fail(err, LN_ERR_LIMIT, "lora merge: W of %lld x %lld is too large", (long long)rows,
                       (long long)cols);
    if (nterms < 0 || (nterms > 0 && !terms))
        return ln_fail(err, LN_ERR_ARG, "lora merge: %d terms and term array %p", nterms, (const void *)terms);
    const int64_t size = rows * cols;
    if (size > 0 && !w)
        return ln_fail(err, LN_ERR_ARG, "lora merge: W is NULL");
    if (backup && backup == w)
        return ln_fail(err, LN_ERR_ARG, "lora merge: backup must not be W itself");
    int device = -1;
    int rc = check_device_ptr(size > 0 ? w : nullptr, "lora merge: W", &device, err);
    if (rc == LN_OK)
        rc = check_device_ptr(size > 0 ? backup : nullptr, "lora merge: backup", &device, err);
    if (rc != LN_OK)
        return rc;
    for (int t = 0; t < nterms; t++) {
        const ln_lora_term &tm = terms[t];
        char what[64];
        if (!dtype_ok(tm.up_dtype) || !dtype_ok(tm.down_dtype))
            return ln_fail(err, LN_ERR_ARG, "lora merge: term %d has unknown dtypes (up %d, down %d)", t,
                           (int)tm.up_dtype, (int)tm.down_dtype);
        if (tm.rank < 1)
            return ln_fail(err, LN_ERR_ARG, "lora merge: term %d has rank %lld (must be >= 1)", t,
                           (long long)tm.rank);
        if (!mul_fits(rows, tm.rank, INT64_MAX / 4) || !mul_fits(tm.rank, cols, INT64_MAX / 4))
            return ln_fail(err, LN_ERR_LIMIT, "lora merge: term %d of rank %lld is too large", t,
                           (long long)tm.rank);
        if (!std::isfinite(tm.scale))
            return ln_fail(err, LN_ERR_ARG, "lora merge: term %d has a non-finite scale", t);
        if (size == 0)
            continue;
        if (!tm.up || !tm.down)
            return ln_fail(err, LN_ERR_ARG, "lora merge: term %d has a NULL up or down", t);
        std::snprintf(what, sizeof what, "lora merge: term %d up", t);
        if ((rc = check_device_ptr(tm.up, what, &device, err)) != LN_OK)
            return rc;
        std::snprintf(what, sizeof what, "lora merge: term %d down", t);
        if ((rc = check_device_ptr(tm.down, what, &device, err)) != LN_OK)
            return rc;
    }
    if (size == 0)
        return LN_OK;

    DeviceGuard guard;
    if ((rc = guard.set(device, err)) != LN_OK)
        return rc;
    cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);

    if (nterms == 0) {
        if (!backup)
            return LN_OK;
        cudaError_t crc = cudaMemcpyAsync(backup, w, (size_t)size * dtype_size(w_dtype), cudaMemcpyDeviceToDevice,
                                          stream);
        return crc == cudaSuccess ? LN_OK : cuda_fail(err, crc, "lora merge: cudaMemcpyAsync (backup)");
    }

    std::vector<GemmTerm> host((size_t)nterms);
    for (int t = 0; t < nterms; t++) {
        const ln_lora_term &tm = terms[t];
        GemmTerm &g = host[(size_t)t];
        // A(i, k) = up[i * rank + k] * scale
        g.a.p = tm.up;
        g.a.mask = nullptr;
        g.a.s_outer = tm.rank;
        g.a.s_k = 1;
        g.a.scale = tm.scale;
        g.a.dtype = (int)tm.up_dtype;
        // B(k, j) = down[k * cols + j]
        g.b.p = tm.down;
        g.b.mask = nullptr;
        g.b.s_outer = 1;
        g.b.s_k = cols;
        g.b.scale = 1.0f;
        g.b.dtype = (int)tm.down_dtype;
        g.k = tm.rank;
    }

    Epilogue ep;
    ep.p = w;
    ep.backup = backup;
    ep.mask = nullptr;
    ep.ld = cols;
    ep.mask_ld = 0;
    ep.alpha = 1.0f;
    ep.dtype = (int)w_dtype;
    ep.accumulate = 1;

    if (nterms == 1)
        return gemm(host[0], nullptr, 1, rows, cols, ep, stream, "lora merge kernel", err);

    StreamBuffer table(stream);
    const size_t bytes = host.size() * sizeof(GemmTerm);
    if ((rc = table.alloc(bytes, "lora merge: cudaMallocAsync (term table)", err)) != LN_OK)
        return rc;
    // From pageable memory: the runtime stages the source before returning, so `host` may go.
    cudaError_t crc = cudaMemcpyAsync(table.get<GemmTerm>(), host.data(), bytes, cudaMemcpyHostToDevice, stream);
    if (crc != cudaSuccess)
        return cuda_fail(err, crc, "lora merge: cudaMemcpyAsync (term table)");
    if ((rc = gemm(host[0], table.get<GemmTerm>(), nterms, rows, cols, ep, stream, "lora merge kernel", err)) !=
        LN_OK)
        return rc;
    return table.release(err);
}
