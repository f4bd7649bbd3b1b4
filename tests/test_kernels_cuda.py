"""The CUDA LoRA kernels (csrc/lora/*.cu) against float64 torch references.

Every GPU test is skipped, with the reason, when torch sees no GPU or lora_native was built
without CUDA. Results in float16/bfloat16 must be within 1 ulp of the float64 reference rounded
to that type; float32 results within 1 ulp of it. Both get a slack for the fp32 accumulation:
8 * sqrt(K) * 2^-24 * sum |terms| (the reference of the same sum with absolute values).
"""
import math
import random

import pytest

import lora_native
from lora_native import _native

try:
    import torch
except ImportError:  # pragma: no cover - torch is a dependency of training only
    torch = None

CUDA_FUNCS = ("lora_merge_cuda", "lora_branch_forward_cuda", "lora_branch_backward_cuda", "adamw_step_cuda")
DEVICE = "cuda"


def _gpu_skip_reason():
    info = lora_native.build_info()
    if not info["cuda"]:
        return "lora_native was built without CUDA: %s" % info["cuda_off_reason"]
    if torch is None:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no GPU: torch.cuda.is_available() is False"
    return None


_WHY_NO_GPU = _gpu_skip_reason()


def needs_gpu(fn):
    fn = pytest.mark.skipif(_WHY_NO_GPU is not None, reason=_WHY_NO_GPU or "")(fn)
    return pytest.mark.cuda(fn)


def _dtypes():
    return (torch.float32, torch.float16, torch.bfloat16) if torch is not None else ()


DTYPE_IDS = ("f32", "f16", "bf16")


def code(dtype):
    return {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}[dtype]


def ptr(t):
    return 0 if t is None else t.data_ptr()


def stream_handle():
    return torch.cuda.current_stream().cuda_stream


def sync():
    torch.cuda.synchronize()


# ---- the calls, tensors in (so the argument plumbing is in one place) ----

def call_merge(w, terms, backup=None, stream=None):
    """terms: [(up, down, scale)]."""
    rows, cols = w.shape
    spec = [(ptr(up), code(up.dtype), ptr(down), code(down.dtype), up.shape[1], float(s)) for up, down, s in terms]
    _native.lora_merge_cuda(ptr(w), code(w.dtype), rows, cols, spec, ptr(backup),
                            stream_handle() if stream is None else stream)


def call_forward(x, down, up, mask, scale, y, h=None, stream=None):
    m, n_in = x.shape
    r = down.shape[0]
    _native.lora_branch_forward_cuda(ptr(x), code(x.dtype), m, n_in, up.shape[0], r, ptr(down), ptr(up), ptr(mask),
                                     scale, ptr(y), code(y.dtype), ptr(h),
                                     stream_handle() if stream is None else stream)


def call_backward(dy, x, down, up, h, mask, scale, ddown, dup, dx=None, dx_accumulate=False, stream=None):
    m, n_in = x.shape
    out, r = up.shape
    _native.lora_branch_backward_cuda(ptr(dy), code(dy.dtype), ptr(x), code(x.dtype), m, n_in, out, r, ptr(down),
                                      ptr(up), ptr(h), ptr(mask), scale, ptr(ddown), ptr(dup), ptr(dx),
                                      code(dx.dtype) if dx is not None else 0, dx_accumulate,
                                      stream_handle() if stream is None else stream)


def call_adamw(tensors, beta1, beta2, eps, grad_scale, stream=None):
    """tensors: [(param, grad, exp_avg, exp_avg_sq, lr, weight_decay, step)]."""
    spec = [(ptr(p), ptr(g), ptr(m), ptr(v), p.numel(), lr, wd, step) for p, g, m, v, lr, wd, step in tensors]
    _native.adamw_step_cuda(spec, beta1, beta2, eps, grad_scale, stream_handle() if stream is None else stream)


# ---- references and tolerances ----

_MANT_EMIN = {}


def ulp(r, dtype):
    """The spacing of `dtype` values at r (float64 tensor of values of that dtype), the larger
    one at a power of two; the smallest subnormal at 0."""
    if not _MANT_EMIN:
        _MANT_EMIN.update({torch.float32: (23, -126), torch.float16: (10, -14), torch.bfloat16: (7, -126)})
    mant, emin = _MANT_EMIN[dtype]
    _, e = torch.frexp(r)  # r = f * 2^e with 0.5 <= |f| < 1, so floor(log2|r|) = e - 1
    e = torch.where(r != 0, e.to(torch.float64) - 1, torch.full_like(r, float(emin)))
    e = torch.clamp(e, min=float(emin))
    return torch.pow(2.0, e - mant)


def assert_within_ulp(out, ref, absref, k, what):
    """out (any dtype) against the float64 reference rounded once to out's dtype."""
    r = ref.to(out.dtype).to(torch.float64)
    slack = absref * (8.0 * math.sqrt(k + 1) * 2.0 ** -24)
    err = (out.to(torch.float64) - r).abs()
    tol = ulp(r, out.dtype) + slack
    bad = err > tol
    if bool(bad.any()):
        idx = int(torch.argmax((err - tol).flatten()))
        pytest.fail("%s (%s): %d of %d elements off by more than 1 ulp; worst at flat index %d: got %r, "
                    "reference %r (rounded %r), tolerance %r"
                    % (what, out.dtype, int(bad.sum()), bad.numel(), idx, float(out.flatten()[idx]),
                       float(ref.flatten()[idx]), float(r.flatten()[idx]), float(tol.flatten()[idx])))
    if out.dtype != torch.float32 and out.numel() >= 256:
        # 1 ulp would also pass a truncating store: most results must be the reference rounded to
        # nearest even (only fp32 sums next to a rounding boundary may land on the other side).
        exact = float((err == 0).to(torch.float64).mean())
        assert exact >= 0.9, "%s (%s): only %.1f%% of the results are the correctly rounded reference" % (
            what, out.dtype, 100 * exact)


def randn(*shape, dtype=None, scale=1.0):
    t = torch.randn(*shape, dtype=torch.float64, device=DEVICE) * scale
    return t.to(dtype or torch.float32)


def make_mask(m, r, keep=0.7):
    return (torch.rand(m, r, device=DEVICE) < keep).to(torch.float32) / keep


def bits(t):
    return t.view(torch.int32 if t.dtype == torch.float32 else torch.int16)


# ---- merge ----

MERGE_CASES = [
    (1, 1, [1]),
    (7, 33, [1]),
    (33, 7, [128]),
    (1000, 33, [4, 1, 7]),
    (33, 1000, [128]),
    (65, 129, [256, 3]),
    (33, 65, [1024]),  # one term with a long rank and few tiles: the split-K path
    (100, 70, [3] * 60),  # many terms (a device table)
]


@needs_gpu
@pytest.mark.parametrize("w_dtype", _dtypes(), ids=DTYPE_IDS)
@pytest.mark.parametrize("case", MERGE_CASES, ids=lambda c: "%dx%d-r%s" % (c[0], c[1], "+".join(map(str, c[2][:3]))))
def test_merge(case, w_dtype):
    torch.manual_seed(1)
    rows, cols, ranks = case
    dts = _dtypes()
    w = randn(rows, cols, dtype=w_dtype)
    w0 = w.clone()
    backup = torch.full_like(w, 7.0)
    terms = []
    for i, rank in enumerate(ranks):
        up = randn(rows, rank, dtype=dts[(i + code(w_dtype)) % 3], scale=0.3)
        down = randn(rank, cols, dtype=dts[(2 * i + 1) % 3], scale=0.3)
        terms.append((up, down, (0.5, -1.25, 2.0, 0.0625)[i % 4]))
    call_merge(w, terms, backup)
    sync()
    assert torch.equal(bits(backup), bits(w0)), "backup must be W's old values, bit for bit"
    ref = w0.to(torch.float64)
    absref = w0.to(torch.float64).abs()
    for up, down, s in terms:
        ref = ref + s * (up.to(torch.float64) @ down.to(torch.float64))
        absref = absref + abs(s) * (up.to(torch.float64).abs() @ down.to(torch.float64).abs())
    assert_within_ulp(w, ref, absref, sum(ranks), "merged W")


@needs_gpu
@pytest.mark.parametrize("w_dtype", _dtypes(), ids=DTYPE_IDS)
def test_merge_without_terms_writes_only_the_backup(w_dtype):
    torch.manual_seed(2)
    w = randn(37, 53, dtype=w_dtype)
    w0 = w.clone()
    backup = torch.zeros_like(w)
    call_merge(w, [], backup)
    sync()
    assert torch.equal(bits(w), bits(w0))
    assert torch.equal(bits(backup), bits(w0))


@needs_gpu
@pytest.mark.parametrize("w_dtype", _dtypes(), ids=DTYPE_IDS)
def test_merge_then_unmerge_is_bounded_and_the_backup_restores_exactly(w_dtype):
    torch.manual_seed(3)
    rows, cols = 300, 1000
    w = randn(rows, cols, dtype=w_dtype)
    w0 = w.clone()
    terms = [(randn(rows, 16, scale=0.5), randn(16, cols, dtype=torch.float16, scale=0.5), 0.8),
             (randn(rows, 4, dtype=torch.bfloat16, scale=0.5), randn(4, cols, scale=0.5), -0.3)]
    backup = torch.empty_like(w)
    call_merge(w, terms, backup)
    w1 = w.clone()
    call_merge(w, [(up, down, -s) for up, down, s in terms])
    sync()
    absd = torch.zeros(rows, cols, dtype=torch.float64, device=DEVICE)
    for up, down, s in terms:
        absd += abs(s) * (up.to(torch.float64).abs() @ down.to(torch.float64).abs())
    w0d, w1d = w0.to(torch.float64), w1.to(torch.float64)
    # two roundings (merge, unmerge) of at most half an ulp each plus the fp32 sums
    tol = ulp(w0d, w_dtype) + ulp(w1d, w_dtype) + 2 * (absd + w1d.abs()) * 8 * math.sqrt(21) * 2.0 ** -24
    err = (w.to(torch.float64) - w0d).abs()
    assert bool((err <= tol).all()), "merge+unmerge drifted by %g (tolerance there %g)" % (
        float(err.max()), float(tol.flatten()[int(torch.argmax(err - tol))]))
    w.copy_(backup)
    assert torch.equal(bits(w), bits(w0))


# ---- branch forward ----

BRANCH_CASES = [
    # m, in, out, r
    (1, 1, 1, 1),
    (7, 33, 7, 1),
    (33, 1000, 7, 128),
    (1, 1000, 33, 128),
    (4096, 33, 1000, 7),
    (4096, 320, 33, 16),
    (1000, 7, 1000, 33),
]


def _case_id(c):
    return "m%d-in%d-out%d-r%d" % c


def forward_reference(x, down, up, mask, scale, y0):
    x64, d64, u64 = x.to(torch.float64), down.to(torch.float64), up.to(torch.float64)
    h = x64 @ d64.T
    habs = x64.abs() @ d64.abs().T
    hm, hmabs = (h, habs) if mask is None else (h * mask, habs * mask)
    y = y0.to(torch.float64) + scale * (hm @ u64.T)
    yabs = y0.to(torch.float64).abs() + abs(scale) * (hmabs @ u64.abs().T)
    return h, habs, y, yabs


@needs_gpu
@pytest.mark.parametrize("with_h", [True, False], ids=["h", "no-h"])
@pytest.mark.parametrize("with_mask", [False, True], ids=["no-mask", "mask"])
@pytest.mark.parametrize("dtype", _dtypes(), ids=DTYPE_IDS)
@pytest.mark.parametrize("case", BRANCH_CASES, ids=_case_id)
def test_branch_forward(case, dtype, with_mask, with_h):
    torch.manual_seed(4)
    m, n_in, out, r = case
    x = randn(m, n_in, dtype=dtype)
    down = randn(r, n_in, scale=0.2)
    up = randn(out, r, scale=0.2)
    mask = make_mask(m, r) if with_mask else None
    y0 = randn(m, out, dtype=dtype)
    y = y0.clone()
    h = torch.full((m, r), float("nan"), device=DEVICE) if with_h else None
    scale = 0.75
    call_forward(x, down, up, mask, scale, y, h)
    sync()
    h_ref, habs, y_ref, yabs = forward_reference(x, down, up, mask, scale, y0)
    if with_h:
        assert_within_ulp(h, h_ref, habs, n_in, "h")
    assert_within_ulp(y, y_ref, yabs, n_in + r, "y")


@needs_gpu
def test_branch_forward_mixed_dtypes():
    torch.manual_seed(5)
    m, n_in, out, r = 129, 77, 65, 8
    x = randn(m, n_in, dtype=torch.bfloat16)
    down, up = randn(r, n_in, scale=0.2), randn(out, r, scale=0.2)
    y0 = randn(m, out, dtype=torch.float32)
    y = y0.clone()
    call_forward(x, down, up, None, -1.5, y)
    sync()
    _, _, y_ref, yabs = forward_reference(x, down, up, None, -1.5, y0)
    assert_within_ulp(y, y_ref, yabs, n_in + r, "y")


# ---- branch backward ----

def backward_reference(dy, x, down, up, h, mask, scale, dx0):
    dy64, x64, d64, u64, h64 = (t.to(torch.float64) for t in (dy, x, down, up, h))
    mk = torch.ones_like(h64) if mask is None else mask.to(torch.float64)
    g = scale * (dy64 @ u64) * mk
    gabs = abs(scale) * (dy64.abs() @ u64.abs()) * mk
    ref = {
        "dup": (scale * dy64.T @ (h64 * mk), abs(scale) * dy64.abs().T @ (h64.abs() * mk)),
        "ddown": (g.T @ x64, gabs.T @ x64.abs()),
    }
    dx = g @ d64
    dxabs = gabs @ d64.abs()
    if dx0 is not None:
        dx = dx + dx0.to(torch.float64)
        dxabs = dxabs + dx0.to(torch.float64).abs()
    ref["dx"] = (dx, dxabs)
    return ref


@needs_gpu
@pytest.mark.parametrize("dx_mode", ["store", "accumulate", "none"])
@pytest.mark.parametrize("with_mask", [False, True], ids=["no-mask", "mask"])
@pytest.mark.parametrize("dtype", _dtypes(), ids=DTYPE_IDS)
@pytest.mark.parametrize("case", BRANCH_CASES, ids=_case_id)
def test_branch_backward(case, dtype, with_mask, dx_mode):
    torch.manual_seed(6)
    m, n_in, out, r = case
    dy = randn(m, out, dtype=dtype)
    x = randn(m, n_in, dtype=dtype)
    down, up = randn(r, n_in, scale=0.2), randn(out, r, scale=0.2)
    h = randn(m, r)
    mask = make_mask(m, r) if with_mask else None
    scale = 0.5
    ddown = torch.full((r, n_in), float("nan"), device=DEVICE)
    dup = torch.full((out, r), float("nan"), device=DEVICE)
    dx0 = randn(m, n_in, dtype=dtype) if dx_mode == "accumulate" else None
    dx = None if dx_mode == "none" else (dx0.clone() if dx0 is not None else torch.full_like(x, float("nan")))
    call_backward(dy, x, down, up, h, mask, scale, ddown, dup, dx, dx_accumulate=dx_mode == "accumulate")
    sync()
    ref = backward_reference(dy, x, down, up, h, mask, scale, dx0)
    assert_within_ulp(dup, *ref["dup"], m, "dup")
    assert_within_ulp(ddown, *ref["ddown"], out + m, "ddown")
    if dx is not None:
        assert_within_ulp(dx, *ref["dx"], out + r, "dx")


@needs_gpu
def test_branch_backward_mixed_dtypes():
    torch.manual_seed(7)
    m, n_in, out, r = 300, 40, 50, 4
    dy = randn(m, out, dtype=torch.float16)
    x = randn(m, n_in, dtype=torch.bfloat16)
    down, up, h = randn(r, n_in, scale=0.2), randn(out, r, scale=0.2), randn(m, r)
    ddown, dup = torch.empty(r, n_in, device=DEVICE), torch.empty(out, r, device=DEVICE)
    dx = torch.empty(m, n_in, device=DEVICE, dtype=torch.float32)
    call_backward(dy, x, down, up, h, None, 2.0, ddown, dup, dx)
    sync()
    ref = backward_reference(dy, x, down, up, h, None, 2.0, None)
    assert_within_ulp(dup, *ref["dup"], m, "dup")
    assert_within_ulp(ddown, *ref["ddown"], out + m, "ddown")
    assert_within_ulp(dx, *ref["dx"], out + r, "dx")


@needs_gpu
def test_branch_backward_without_rows_zeroes_the_weight_gradients():
    n_in, out, r = 33, 17, 4
    down, up = randn(r, n_in), randn(out, r)
    ddown = torch.full((r, n_in), float("nan"), device=DEVICE)
    dup = torch.full((out, r), float("nan"), device=DEVICE)
    empty = torch.empty(0, n_in, device=DEVICE)
    call_backward(torch.empty(0, out, device=DEVICE), empty, down, up, torch.empty(0, r, device=DEVICE), None, 1.0,
                  ddown, dup, torch.empty(0, n_in, device=DEVICE))
    sync()
    assert bool((ddown == 0).all()) and bool((dup == 0).all())


@needs_gpu
def test_branch_is_deterministic():
    torch.manual_seed(8)
    m, n_in, out, r = 4096, 320, 320, 8  # split-K for dup and ddown
    dy, x = randn(m, out), randn(m, n_in)
    down, up, h = randn(r, n_in, scale=0.2), randn(out, r, scale=0.2), randn(m, r)
    results = []
    for _ in range(3):
        ddown, dup = torch.empty(r, n_in, device=DEVICE), torch.empty(out, r, device=DEVICE)
        call_backward(dy, x, down, up, h, None, 1.0, ddown, dup)
        sync()
        results.append((bits(ddown).clone(), bits(dup).clone()))
    for ddown_bits, dup_bits in results[1:]:
        assert torch.equal(ddown_bits, results[0][0]) and torch.equal(dup_bits, results[0][1])


# ---- streams ----

@needs_gpu
def test_non_default_stream():
    torch.manual_seed(9)
    m, n_in, out, r = 2048, 320, 640, 16
    x = randn(m, n_in, dtype=torch.float16)
    down, up = randn(r, n_in, scale=0.2), randn(out, r, scale=0.2)
    y0 = randn(m, out, dtype=torch.float16)
    y = y0.clone()
    w = randn(out, n_in, dtype=torch.bfloat16)
    w0 = w.clone()
    backup = torch.empty_like(w)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())  # the inputs were made on the current stream
    call_forward(x, down, up, None, 1.0, y, stream=side.cuda_stream)
    call_merge(w, [(up, down, 0.5)], backup, stream=side.cuda_stream)
    side.synchronize()
    _, _, y_ref, yabs = forward_reference(x, down, up, None, 1.0, y0)
    assert_within_ulp(y, y_ref, yabs, n_in + r, "y (side stream)")
    assert torch.equal(bits(backup), bits(w0))
    ref = w0.to(torch.float64) + 0.5 * (up.to(torch.float64) @ down.to(torch.float64))
    absref = w0.to(torch.float64).abs() + 0.5 * (up.to(torch.float64).abs() @ down.to(torch.float64).abs())
    assert_within_ulp(w, ref, absref, r, "merged W (side stream)")


# ---- AdamW ----

@needs_gpu
@pytest.mark.parametrize("grad_scale", [1.0, 1024.0])
@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.875, 1 - 2.0 ** -10)], ids=["default", "exact"])
def test_adamw_matches_torch(betas, grad_scale):
    """Against torch.optim.AdamW(foreach=False). The betas reach the kernel as fp32, so with
    beta2 = 0.999 its 1 - beta2 differs from torch's (double, then fp32) by 1.3e-5 relative:
    exp_avg_sq gets that much room; betas exact in fp32 get the tight bound."""
    torch.manual_seed(10)
    rng = random.Random(10)
    sizes = [1, 7, 1000, 4096 * 33 + 5, 0] + [rng.randint(1, 3000) for _ in range(70)]  # > 32: several launches
    lrs = [rng.choice([1e-3, 3e-4, 1e-2, 5e-5]) for _ in sizes]
    wds = [rng.choice([0.0, 0.01, 0.1]) for _ in sizes]
    (beta1, beta2), eps = betas, 1e-8
    sq_rtol = 1e-5 if float(torch.tensor(beta2, dtype=torch.float32)) == beta2 else 3e-5
    ref_params = [torch.nn.Parameter(randn(n)) for n in sizes]
    ours = [p.detach().clone() for p in ref_params]
    exp_avg = [torch.zeros_like(p) for p in ours]
    exp_avg_sq = [torch.zeros_like(p) for p in ours]
    opt = torch.optim.AdamW([{"params": [p], "lr": lr, "weight_decay": wd}
                             for p, lr, wd in zip(ref_params, lrs, wds)],
                            betas=(beta1, beta2), eps=eps, foreach=False)
    for step in range(1, 11):
        grads = [randn(n) for n in sizes]
        for p, g in zip(ref_params, grads):
            p.grad = g.clone()
        opt.step()
        scaled = [g * grad_scale for g in grads]
        call_adamw([(p, g, m, v, lr, wd, step)
                    for p, g, m, v, lr, wd in zip(ours, scaled, exp_avg, exp_avg_sq, lrs, wds)],
                   beta1, beta2, eps, grad_scale)
        sync()
    for i, p in enumerate(ref_params):
        if sizes[i] == 0:
            continue
        st = opt.state[p]
        torch.testing.assert_close(exp_avg[i], st["exp_avg"], rtol=1e-5, atol=1e-7, msg=lambda s: "exp_avg: " + s)
        torch.testing.assert_close(exp_avg_sq[i], st["exp_avg_sq"], rtol=sq_rtol, atol=1e-9,
                                   msg=lambda s: "exp_avg_sq: " + s)
        torch.testing.assert_close(ours[i], p.detach(), rtol=1e-6, atol=lrs[i] * 1e-4,
                                   msg=lambda s: "param: " + s)


# ---- errors ----

@needs_gpu
def test_cpu_tensors_are_refused():
    w = torch.zeros(4, 4)
    with pytest.raises(ValueError, match="not CUDA device memory"):
        _native.lora_merge_cuda(w.data_ptr(), 0, 4, 4, [], 0, 0)


def test_cuda_functions_exist_when_built_with_cuda():
    info = lora_native.build_info()
    if not info["cuda"]:
        pytest.skip("lora_native was built without CUDA: %s" % info["cuda_off_reason"])
    for name in CUDA_FUNCS:
        assert callable(getattr(_native, name, None)), "%s is missing from a CUDA build" % name


def test_cuda_argument_errors_before_any_device_call():
    """Argument checks that come before any CUDA call: they hold on machines without a GPU."""
    if not lora_native.build_info()["cuda"]:
        pytest.skip("lora_native was built without CUDA")
    with pytest.raises(ValueError, match="dtype"):
        _native.lora_merge_cuda(0, 3, 0, 0, [], 0, 0)
    with pytest.raises(ValueError, match="rank"):
        _native.lora_merge_cuda(0, 0, 0, 5, [(16, 0, 16, 0, 0, 1.0)], 0, 0)
    with pytest.raises(ValueError, match="shape"):
        _native.lora_branch_forward_cuda(0, 0, 1, 0, 1, 1, 0, 0, 0, 1.0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="betas"):
        _native.adamw_step_cuda([], 1.5, 0.999, 1e-8, 1.0, 0)
    with pytest.raises(ValueError, match="step"):
        _native.adamw_step_cuda([(16, 16, 16, 16, 0, 1e-3, 0.0, 0)], 0.9, 0.999, 1e-8, 1.0, 0)
    with pytest.raises(TypeError):
        _native.lora_merge_cuda("not a pointer", 0, 0, 0, [], 0, 0)
    # nothing to do: no device call at all
    _native.lora_merge_cuda(0, 0, 0, 0, [], 0, 0)
    _native.adamw_step_cuda([(16, 16, 16, 16, 0, 1e-3, 0.0, 1)], 0.9, 0.999, 1e-8, 1.0, 0)
    # the tables are parsed by the glue the CPU functions share: null pointers are refused there
    with pytest.raises(ValueError, match="up_ptr"):
        _native.lora_merge_cuda(0, 0, 0, 5, [(0, 0, 16, 0, 1, 1.0)], 0, 0)
