// A generic tiled fp32-accumulating GEMM for the LoRA kernels (merge and the fused branch):
//
//   C[i, j] (=|+=) alpha * sum_terms sum_k A_t(i, k) * B_t(k, j)   (then * cmask[i, j])
//
// Each operand is addressed through strides, so transposes cost nothing:
//   A(i, k) = a.p[i * a.s_outer + k * a.s_k] * a.scale (* a.mask[same index])
//   B(k, j) = b.p[j * b.s_outer + k * b.s_k] * b.scale (* b.mask[same index])
// and has its own element type (f32/f16/bf16, converted to fp32 exactly when staged in shared
// memory). C has its own type; the fp32 result is rounded once (RNE) on store; with
// `accumulate` C is read in fp32 first, and `backup` (same type) receives its old value.
//
// Block tiles of BM x BN outputs, 256 threads, TM x TN outputs per thread (rows ty + k*BM/TM,
// columns tx + k*BN/TN), K staged BK at a time. Split-K (grid.z > 1, one term only) writes
// fp32 partial sums that a second kernel adds in a fixed order: results are deterministic
// for a given device.
#ifndef LN_LORA_GEMM_CUH
#define LN_LORA_GEMM_CUH

#include "cuda_common.cuh"

#include <climits>

namespace ln_lora_cuda {
// Internal linkage: merge.cu and branch.cu each get their own copy of the kernels.
namespace {

struct Operand {
    const void *p;
    const float *mask;  // optional, indexed like p
    int64_t s_outer;    // stride of i (A) or j (B)
    int64_t s_k;        // stride of k
    float scale;
    int dtype;
};

struct GemmTerm {
    Operand a, b;
    int64_t k;
};

struct Epilogue {
    void *p;
    void *backup;       // optional (accumulate only): old values of C, same dtype
    const float *mask;  // optional [M, N] fp32, row stride mask_ld
    int64_t ld;
    int64_t mask_ld;
    float alpha;
    int dtype;
    int accumulate;
};

struct GemmArgs {
    GemmTerm term0;          // used when terms == nullptr
    const GemmTerm *terms;   // device table of nterms terms, or nullptr
    int nterms;
    int64_t m, n;
    int64_t kper;            // K range of one split (multiple of BK); only with nterms == 1
    float *partial;          // split-K: [splits, m, n] fp32, or nullptr
    Epilogue ep;
};

constexpr int kThreads = 256;
constexpr int kBK = 16;
constexpr int kPad = 2;  // shared rows of BO + 2 floats: conflict-free transposed stores

template <typename T> __device__ __forceinline__ void store_one(const Epilogue &e, int64_t idx, float v)
{
    T *p = static_cast<T *>(e.p);
    if (e.accumulate) {
        T old = p[idx];
        if (e.backup)
            static_cast<T *>(e.backup)[idx] = old;
        v = to_f32(old) + v;
    }
    p[idx] = from_f32<T>(v);
}

__device__ __forceinline__ void epilogue_store(const Epilogue &e, int64_t i, int64_t j, float acc)
{
    float v = e.alpha * acc;
    if (e.mask)
        v *= e.mask[i * e.mask_ld + j];
    int64_t idx = i * e.ld + j;
    switch (e.dtype) {
    case LN_DT_F16:
        store_one<__half>(e, idx, v);
        break;
    case LN_DT_BF16:
        store_one<__nv_bfloat16>(e, idx, v);
        break;
    default:
        store_one<float>(e, idx, v);
        break;
    }
}

// Stages rows [o0, o0 + BO) x k [k0, k0 + BK) of an operand into S[k][o] (zero outside
// o < no, k < kend). Consecutive threads walk the operand's contiguous dimension: along k
// when s_k == 1 (then each thread keeps its k and steps over o), else along o (each thread
// keeps its o and steps over k).
template <int BO>
__device__ __forceinline__ void stage(const Operand &op, int64_t o0, int64_t no, int64_t k0, int64_t kend,
                                      float (*S)[BO + kPad])
{
    constexpr int kIters = BO * kBK / kThreads;
    static_assert(kIters * kThreads == BO * kBK, "tile elements must be a multiple of the block size");
    static_assert(kThreads % BO == 0 && kThreads % kBK == 0, "the block size must be a multiple of the tile sides");
    const int tid = (int)threadIdx.x;
    if (op.s_k == 1) {
        const int kk = tid % kBK;
        const int oo0 = tid / kBK;
        constexpr int kStep = kThreads / kBK;  // rows of o per iteration
        const int64_t k = k0 + kk;
        const bool k_in = k < kend;
#pragma unroll
        for (int it = 0; it < kIters; it++) {
            const int oo = oo0 + it * kStep;
            const int64_t o = o0 + oo;
            float v = 0.0f;
            if (k_in && o < no) {
                const int64_t idx = o * op.s_outer + k;
                v = load_f32(op.p, op.dtype, idx) * op.scale;
                if (op.mask)
                    v *= op.mask[idx];
            }
            S[kk][oo] = v;
        }
    } else {
        const int oo = tid % BO;
        const int kk0 = tid / BO;
        constexpr int kStep = kThreads / BO;  // rows of k per iteration
        const int64_t o = o0 + oo;
        const bool o_in = o < no;
#pragma unroll
        for (int it = 0; it < kIters; it++) {
            const int kk = kk0 + it * kStep;
            const int64_t k = k0 + kk;
            float v = 0.0f;
            if (o_in && k < kend) {
                const int64_t idx = o * op.s_outer + k * op.s_k;
                v = load_f32(op.p, op.dtype, idx) * op.scale;
                if (op.mask)
                    v *= op.mask[idx];
            }
            S[kk][oo] = v;
        }
    }
}

template <int BM, int BN, int TM, int TN>
__global__ void __launch_bounds__(kThreads) gemm_kernel(GemmArgs args)
{
    static_assert((BM / TM) * (BN / TN) == kThreads, "thread layout must cover the tile");
    constexpr int RS = BM / TM;  // row step between a thread's outputs
    constexpr int CS = BN / TN;  // column step
    __shared__ float sa[kBK][BM + kPad];
    __shared__ float sb[kBK][BN + kPad];

    const int tx = (int)threadIdx.x % CS;
    const int ty = (int)threadIdx.x / CS;
    const int64_t i0 = (int64_t)blockIdx.x * BM;
    const int64_t j0 = (int64_t)blockIdx.y * BN;

    float acc[TM][TN];
#pragma unroll
    for (int a = 0; a < TM; a++)
#pragma unroll
        for (int b = 0; b < TN; b++)
            acc[a][b] = 0.0f;

    const int nterms = args.terms ? args.nterms : 1;
    for (int t = 0; t < nterms; t++) {
        const GemmTerm term = args.terms ? args.terms[t] : args.term0;
        int64_t kbeg = 0, kend = term.k;
        if (gridDim.z > 1) {
            kbeg = (int64_t)blockIdx.z * args.kper;
            kend = kbeg + args.kper < term.k ? kbeg + args.kper : term.k;
        }
        for (int64_t k0 = kbeg; k0 < kend; k0 += kBK) {
            __syncthreads();  // the previous chunk is consumed
            stage<BM>(term.a, i0, args.m, k0, kend, sa);
            stage<BN>(term.b, j0, args.n, k0, kend, sb);
            __syncthreads();
#pragma unroll
            for (int kk = 0; kk < kBK; kk++) {
                float av[TM], bv[TN];
#pragma unroll
                for (int a = 0; a < TM; a++)
                    av[a] = sa[kk][ty + a * RS];
#pragma unroll
                for (int b = 0; b < TN; b++)
                    bv[b] = sb[kk][tx + b * CS];
#pragma unroll
                for (int a = 0; a < TM; a++)
#pragma unroll
                    for (int b = 0; b < TN; b++)
                        acc[a][b] = fmaf(av[a], bv[b], acc[a][b]);
            }
        }
    }

#pragma unroll
    for (int a = 0; a < TM; a++) {
        int64_t i = i0 + ty + a * RS;
        if (i >= args.m)
            continue;
#pragma unroll
        for (int b = 0; b < TN; b++) {
            int64_t j = j0 + tx + b * CS;
            if (j >= args.n)
                continue;
            if (args.partial)
                args.partial[((int64_t)blockIdx.z * args.m + i) * args.n + j] = acc[a][b];
            else
                epilogue_store(args.ep, i, j, acc[a][b]);
        }
    }
}

// Adds the split-K partial sums in split order and applies the epilogue.
__global__ void __launch_bounds__(kThreads) splitk_reduce_kernel(const float *partial, int splits, int64_t m,
                                                                  int64_t n, Epilogue ep)
{
    const int64_t total = m * n;
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (int64_t)gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int z = 0; z < splits; z++)
            s += partial[(int64_t)z * total + e];
        epilogue_store(ep, e / n, e % n, s);
    }
}

// Shapes of the block tile.
enum class Tile { Square, Tall, Flat };

inline Tile pick_tile(int64_t m, int64_t n)
{
    if (n <= 16 && m > n)
        return Tile::Tall;  // 256 x 16: narrow outputs such as h [M, r] or dup [out, r]
    if (m <= 16)
        return Tile::Flat;  // 16 x 256: short outputs such as ddown [r, in]
    return Tile::Square;    // 64 x 64
}

inline void tile_dims(Tile t, int *bm, int *bn)
{
    switch (t) {
    case Tile::Tall:
        *bm = 256;
        *bn = 16;
        break;
    case Tile::Flat:
        *bm = 16;
        *bn = 256;
        break;
    default:
        *bm = 64;
        *bn = 64;
        break;
    }
}

inline void launch_tile(Tile t, dim3 grid, cudaStream_t stream, const GemmArgs &args)
{
    switch (t) {
    case Tile::Tall:
        gemm_kernel<256, 16, 4, 4><<<grid, kThreads, 0, stream>>>(args);
        break;
    case Tile::Flat:
        gemm_kernel<16, 256, 4, 4><<<grid, kThreads, 0, stream>>>(args);
        break;
    default:
        gemm_kernel<64, 64, 4, 4><<<grid, kThreads, 0, stream>>>(args);
        break;
    }
}

// Enqueues C = epilogue(sum of the terms) for an m x n output. terms_dev: a device table of
// nterms terms (nullptr: the single host term `term`). Split-K is used for one term with a
// long K and too few output tiles to fill the GPU.
inline int gemm(const GemmTerm &term, const GemmTerm *terms_dev, int nterms, int64_t m, int64_t n,
                const Epilogue &ep, cudaStream_t stream, const char *what, ln_error *err)
{
    if (m <= 0 || n <= 0)
        return LN_OK;
    Tile tile = pick_tile(m, n);
    int bm, bn;
    tile_dims(tile, &bm, &bn);
    int64_t gx = (m + bm - 1) / bm, gy = (n + bn - 1) / bn;
    if (gx > INT_MAX || gy > 65535)
        return ln_fail(err, LN_ERR_LIMIT, "%s: output of %lld x %lld is too large for one launch", what,
                       (long long)m, (long long)n);

    GemmArgs args;
    args.term0 = term;
    args.terms = terms_dev;
    args.nterms = terms_dev ? nterms : 1;
    args.m = m;
    args.n = n;
    args.kper = term.k;
    args.partial = nullptr;
    args.ep = ep;

    int64_t splits = 1;
    const int64_t k = term.k;
    if (!terms_dev && k >= 256) {
        int sms = 0;
        int rc = sm_count(&sms, err);
        if (rc != LN_OK)
            return rc;
        int64_t blocks = gx * gy, want = 2 * (int64_t)sms;
        if (blocks < want) {
            splits = (want + blocks - 1) / blocks;
            if (splits > k / 128)
                splits = k / 128;  // at least 128 of K per split
            if (splits > 64)
                splits = 64;
            // workspace at most 256 MiB
            int64_t per_split = m * n * (int64_t)sizeof(float);
            if (per_split > 0 && splits * per_split > ((int64_t)256 << 20))
                splits = ((int64_t)256 << 20) / per_split;
            if (splits < 1)
                splits = 1;
        }
        if (splits > 1) {
            int64_t kper = (k + splits - 1) / splits;
            kper = (kper + kBK - 1) / kBK * kBK;
            splits = (k + kper - 1) / kper;
            args.kper = kper;
        }
    }

    if (splits <= 1) {
        launch_tile(tile, dim3((unsigned)gx, (unsigned)gy, 1), stream, args);
        return check_launch(err, what);
    }

    StreamBuffer ws(stream);
    int rc = ws.alloc((size_t)splits * (size_t)m * (size_t)n * sizeof(float), "cudaMallocAsync (split-K workspace)",
                      err);
    if (rc != LN_OK)
        return rc;
    args.partial = ws.get<float>();
    launch_tile(tile, dim3((unsigned)gx, (unsigned)gy, (unsigned)splits), stream, args);
    if ((rc = check_launch(err, what)) != LN_OK)
        return rc;
    int64_t total = m * n;
    int64_t blocks = (total + kThreads - 1) / kThreads;
    if (blocks > 65536)
        blocks = 65536;
    splitk_reduce_kernel<<<(unsigned)blocks, kThreads, 0, stream>>>(args.partial, (int)splits, m, n, ep);
    if ((rc = check_launch(err, what)) != LN_OK)
        return rc;
    return ws.release(err);
}

}  // namespace
}  // namespace ln_lora_cuda

#endif
