"""CPU LoRA kernels of lora_native._native (merge, fused branch, AdamW) against float64 torch.

Tolerances (`b` is the element's magnitude bound: the same sums taken over absolute values):
- fp32 results: |out - ref| <= 1e-5 * b (fp32 accumulation, any order).
- fp16/bf16 results: out equals ref rounded to nearest even in that dtype, or differs from it by
  1 ulp (accumulation order moves a value across a rounding boundary); more only where the fp32
  accumulation error itself (2e-6 * b) is larger than an ulp (cancellation to near zero).
- threads=1 and threads=2 give bit-identical results (every output has one summation order).
- LORA_NATIVE_SIMD=scalar (mul+add) vs AVX2 (FMA): fp32 within 1e-5 * b, halves within 1 ulp.
- AdamW: within 1e-6 of torch.optim.AdamW(foreach=False), relative to each tensor's largest value
  (torch's lerp uses FMA); scalar, AVX2, 1 and 2 threads are bit-identical.
"""

import pytest

torch = pytest.importorskip("torch")
from lora_native import _native as N  # noqa: E402

DT = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
HALF = {torch.float16: (10, -14), torch.bfloat16: (7, -126)}  # mantissa bits, min normal exponent
DTYPES = [torch.float32, torch.float16, torch.bfloat16]

def ulp(x, dt):
    """ulp of dt at |x| (float64 tensor), subnormals included."""
    mant, emin = HALF[dt]
    e = torch.floor(torch.log2(x.abs().clamp_min(2.0 ** emin)))
    return torch.exp2(e.clamp_min(emin) - mant)

def check(out, ref, bound, what=""):
    """out (any dtype) against the float64 reference ref, bound = elementwise magnitude."""
    dt = out.dtype
    o = out.double()
    if dt == torch.float32:
        err = (o - ref).abs()
        assert (err <= 1e-5 * bound + 1e-30).all(), "%s: fp32 error %g > 1e-5 * bound" % (what, err.max().item())
        return
    rounded = ref.to(dt).double()
    diff = (o - rounded).abs()
    allowed = torch.maximum(ulp(torch.maximum(o.abs(), rounded.abs()), dt), 2e-6 * bound)
    bad = diff > allowed
    assert not bad.any(), "%s: %d elements beyond 1 ulp of the rounded reference (max diff %g)" % (
        what, int(bad.sum()), diff.max().item())

def close_1ulp(a, b):
    """a and b (same dtype) within 1e-5 relative (fp32) or 1 ulp (halves)."""
    if a.dtype == torch.float32:
        scale = max(a.abs().max().item(), 1e-30)
        assert (a - b).abs().max().item() <= 1e-5 * scale
    else:
        d = (a.double() - b.double()).abs()
        assert (d <= ulp(torch.maximum(a.double().abs(), b.double().abs()), a.dtype)).all()

def rnd(*shape, dtype=torch.float32, scale=1.0, gen=None):
    return (torch.randn(*shape, generator=gen) * scale).to(dtype)

# ---------------------------------------------------------------- merge

def merge_terms(rows, cols, specs, gen):
    """specs: (rank, up dtype, down dtype, scale) -> [(up, down, scale)]."""
    return [(rnd(rows, r, dtype=ud, scale=0.3, gen=gen), rnd(r, cols, dtype=dd, scale=0.3, gen=gen), s)
            for r, ud, dd, s in specs]

def native_merge(w, terms, backup=None, threads=None):
    args = [(u.data_ptr(), DT[u.dtype], d.data_ptr(), DT[d.dtype], u.shape[1], s) for u, d, s in terms]
    N.lora_merge(w.data_ptr(), DT[w.dtype], w.shape[0], w.shape[1], args,
                 0 if backup is None else backup.data_ptr(), threads=threads)

def merge_ref(w0, terms):
    ref = w0.double().clone()
    bound = w0.double().abs()
    for u, d, s in terms:
        s32 = float(torch.tensor(s, dtype=torch.float32))
        ref += s32 * (u.double() @ d.double())
        bound += abs(s32) * (u.double().abs() @ d.double().abs())
    return ref, bound

MERGE_SHAPES = [(1, 1), (7, 17), (17, 33), (6, 16), (33, 7), (320, 320), (320, 768), (130, 1280)]

@pytest.mark.parametrize("wdt", DTYPES)
@pytest.mark.parametrize("rows,cols", MERGE_SHAPES)
def test_merge_matches_float64(wdt, rows, cols):
    gen = torch.Generator().manual_seed(rows * 1000 + cols)
    terms = merge_terms(rows, cols, [(1, torch.float32, torch.float32, 0.75), (32, torch.float16, torch.bfloat16, -1.5),
                                     (5, torch.bfloat16, torch.float16, 2.0)], gen)
    w = rnd(rows, cols, dtype=wdt, gen=gen)
    w0 = w.clone()
    backup = torch.full_like(w, 7)
    native_merge(w, terms, backup)
    assert torch.equal(backup.view(torch.int16 if wdt != torch.float32 else torch.int32),
                       w0.view(torch.int16 if wdt != torch.float32 else torch.int32))
    ref, bound = merge_ref(w0, terms)
    check(w, ref, bound, "merge %s %dx%d" % (wdt, rows, cols))

@pytest.mark.parametrize("wdt", DTYPES)
def test_merge_long_rank_and_rank128(wdt):
    # Total rank 128 + 300 + 200 > the K block (512): fp32 partial sums across K blocks.
    gen = torch.Generator().manual_seed(1)
    terms = merge_terms(70, 45, [(128, torch.float32, torch.float32, 0.5), (300, torch.float16, torch.float16, 0.25),
                                 (200, torch.bfloat16, torch.float32, -0.1)], gen)
    w = rnd(70, 45, dtype=wdt, gen=gen)
    w0 = w.clone()
    native_merge(w, terms)
    ref, bound = merge_ref(w0, terms)
    check(w, ref, bound, "merge long rank")

@pytest.mark.parametrize("wdt", DTYPES)
def test_merge_no_terms_copies_backup(wdt):
    w = rnd(9, 13, dtype=wdt)
    w0 = w.clone()
    backup = torch.zeros_like(w)
    native_merge(w, [], backup)
    assert torch.equal(w, w0) and torch.equal(backup, w0)

@pytest.mark.parametrize("wdt", DTYPES)
def test_merge_unmerge_and_restore(wdt):
    gen = torch.Generator().manual_seed(3)
    terms = merge_terms(320, 768, [(32, torch.float16, torch.float16, 0.8)] * 3, gen)
    w = rnd(320, 768, dtype=wdt, gen=gen)
    w0 = w.clone()
    backup = torch.empty_like(w)
    native_merge(w, terms, backup)
    merged = w.clone()
    native_merge(w, [(u, d, -s) for u, d, s in terms])
    _, bound = merge_ref(w0, terms)
    # One rounding at merge and one at unmerge (plus fp32 accumulation).
    eps = {torch.float32: 2.0 ** -23, torch.float16: 2.0 ** -10, torch.bfloat16: 2.0 ** -7}[wdt]
    assert ((w.double() - w0.double()).abs() <= 2 * eps * bound + 1e-5 * bound).all()
    assert not torch.equal(merged, w0)
    w.copy_(backup)
    assert torch.equal(w, w0)

def test_merge_threads_identical():
    gen = torch.Generator().manual_seed(4)
    terms = merge_terms(250, 333, [(32, torch.float32, torch.float32, 0.7), (17, torch.float16, torch.float16, 1.1)], gen)
    w = rnd(250, 333, dtype=torch.float16, gen=gen)
    a, b = w.clone(), w.clone()
    native_merge(a, terms, threads=1)
    native_merge(b, terms, threads=2)
    assert torch.equal(a, b)

@pytest.mark.parametrize("wdt", DTYPES)
def test_merge_scalar_matches_simd(wdt, monkeypatch):
    gen = torch.Generator().manual_seed(5)
    terms = merge_terms(67, 129, [(32, torch.float16, torch.float16, 0.7), (9, torch.bfloat16, torch.float32, -2.0)],
                        gen)
    w = rnd(67, 129, dtype=wdt, gen=gen)
    w0 = w.clone()
    a = w.clone()
    native_merge(a, terms)
    monkeypatch.setenv("LORA_NATIVE_SIMD", "scalar")
    b = w.clone()
    native_merge(b, terms)
    close_1ulp(a, b)
    ref, bound = merge_ref(w0, terms)
    check(b, ref, bound, "scalar merge")

def test_half_conversions_exact_at_edges():
    # fp32 values around fp16 rounding edges (ties, subnormals, overflow, NaN): W = 0 plus
    # a rank-1 term up=1, down=v gives exactly round(v).
    v = torch.tensor([0.0, -0.0, 1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11, 65504.0, 65519.99, 65520.0, 1e6, -1e6,
                      2.0 ** -24, 2.0 ** -25, 3 * 2.0 ** -26, 2.0 ** -26, 5.9e-8, 6.1e-5, 1.0000001, 3.14159,
                      float("inf"), float("-inf"), 1.0 + 2.0 ** -8, 1.0 + 3 * 2.0 ** -8, 3.4e38],
                     dtype=torch.float32)
    for dt in (torch.float16, torch.bfloat16):
        for simd in ("scalar", None):
            w = torch.zeros(1, v.numel(), dtype=dt)
            up = torch.ones(1, 1)
            import os
            old = os.environ.pop("LORA_NATIVE_SIMD", None)
            if simd:
                os.environ["LORA_NATIVE_SIMD"] = simd
            try:
                native_merge(w, [(up, v.view(1, -1).clone(), 1.0)])
            finally:
                os.environ.pop("LORA_NATIVE_SIMD", None)
                if old is not None:
                    os.environ["LORA_NATIVE_SIMD"] = old
            assert torch.equal(w.view(-1), v.to(dt)), (dt, simd, w.view(-1), v.to(dt))
    w = torch.zeros(1, 3, dtype=torch.bfloat16)
    native_merge(w, [(torch.ones(1, 1), torch.tensor([[float("nan"), 1.0, float("nan")]]), 1.0)])
    assert torch.isnan(w[0, 0]) and torch.isnan(w[0, 2]) and w[0, 1] == 1

# ---------------------------------------------------------------- fused branch

def branch_ref(x, y0, down, up, mask, scale, dy):
    s = float(torch.tensor(scale, dtype=torch.float32))
    xd, dd, ud = x.double(), down.double(), up.double()
    md = mask.double() if mask is not None else torch.ones(x.shape[0], down.shape[0], dtype=torch.float64)
    h = xd @ dd.T
    hb = xd.abs() @ dd.abs().T
    y = y0.double() + s * (h * md) @ ud.T
    yb = y0.double().abs() + abs(s) * (hb * md.abs()) @ ud.abs().T
    out = {"h": (h, hb), "y": (y, yb)}
    if dy is not None:
        dyd = dy.double()
        g = s * (dyd @ ud) * md
        gb = abs(s) * (dyd.abs() @ ud.abs()) * md.abs()
        out["dup"] = (s * dyd.T @ (h * md), abs(s) * dyd.abs().T @ (hb * md.abs()))
        out["ddown"] = (g.T @ xd, gb.T @ xd.abs())
        out["dx"] = (g @ dd, gb @ dd.abs())
    return out

def run_forward(x, y, down, up, mask, scale, h=None, threads=None):
    m, fin = x.shape
    N.lora_branch_forward(x.data_ptr(), DT[x.dtype], m, fin, up.shape[0], down.shape[0], down.data_ptr(),
                          up.data_ptr(), 0 if mask is None else mask.data_ptr(), scale, y.data_ptr(), DT[y.dtype],
                          0 if h is None else h.data_ptr(), threads=threads)

def run_backward(dy, x, down, up, h, mask, scale, dx=None, acc=False, threads=None):
    m, fin = x.shape
    out, r = up.shape
    ddown = torch.full((r, fin), float("nan"))
    dup = torch.full((out, r), float("nan"))
    N.lora_branch_backward(dy.data_ptr(), DT[dy.dtype], x.data_ptr(), DT[x.dtype], m, fin, out, r, down.data_ptr(),
                           up.data_ptr(), h.data_ptr(), 0 if mask is None else mask.data_ptr(), scale,
                           ddown.data_ptr(), dup.data_ptr(), 0 if dx is None else dx.data_ptr(),
                           DT[dx.dtype] if dx is not None else 0, acc, threads=threads)
    return ddown, dup

BRANCH_CASES = [
    # m, in, out, rank, mask
    (1, 1, 1, 1, False),
    (1, 7, 17, 4, True),
    (5, 17, 33, 1, False),
    (33, 33, 7, 128, True),
    (100, 600, 40, 8, True),   # in > the K block
    (4096, 320, 320, 32, True),
    (4096, 320, 320, 128, False),
]

@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("m,fin,fout,r,use_mask", BRANCH_CASES)
def test_branch_forward_backward(dt, m, fin, fout, r, use_mask):
    gen = torch.Generator().manual_seed(m + fin + fout + r)
    x = rnd(m, fin, dtype=dt, gen=gen)
    y = rnd(m, fout, dtype=dt, gen=gen)
    down = rnd(r, fin, scale=0.2, gen=gen)
    up = rnd(fout, r, scale=0.2, gen=gen)
    mask = ((torch.rand(m, r, generator=gen) > 0.25).float() / 0.75) if use_mask else None
    dy = rnd(m, fout, dtype=dt, gen=gen)
    scale = 0.7
    y0 = y.clone()
    h = torch.empty(m, r)
    run_forward(x, y, down, up, mask, scale, h)
    ref = branch_ref(x, y0, down, up, mask, scale, dy)
    check(h, *ref["h"], what="h")
    check(y, *ref["y"], what="y")
    # Without h: the same y.
    y2 = y0.clone()
    run_forward(x, y2, down, up, mask, scale)
    assert torch.equal(y2, y)

    dx0 = rnd(m, fin, dtype=dt, gen=gen)
    dx = dx0.clone()
    ddown, dup = run_backward(dy, x, down, up, h, mask, scale, dx, acc=True)
    # The reference takes h as the kernel returned it (backward's contract).
    s = float(torch.tensor(scale, dtype=torch.float32))
    md = mask.double() if mask is not None else 1.0
    hd = h.double()
    check(dup, s * dy.double().T @ (hd * md), ref["dup"][1], "dup")
    check(ddown, *ref["ddown"], what="ddown")
    check(dx, dx0.double() + ref["dx"][0], dx0.double().abs() + ref["dx"][1], "dx accumulate")
    dx2 = torch.full_like(dx0, 5)
    ddown2, dup2 = run_backward(dy, x, down, up, h, mask, scale, dx2, acc=False)
    check(dx2, *ref["dx"], what="dx")
    assert torch.equal(ddown2, ddown) and torch.equal(dup2, dup)
    ddown3, dup3 = run_backward(dy, x, down, up, h, mask, scale, None)
    assert torch.equal(ddown3, ddown) and torch.equal(dup3, dup)

def test_branch_mixed_dtypes():
    gen = torch.Generator().manual_seed(11)
    m, fin, fout, r = 77, 19, 45, 6
    x = rnd(m, fin, dtype=torch.bfloat16, gen=gen)
    y = rnd(m, fout, dtype=torch.float16, gen=gen)
    down, up = rnd(r, fin, gen=gen), rnd(fout, r, gen=gen)
    y0, h = y.clone(), torch.empty(m, r)
    run_forward(x, y, down, up, None, -1.25, h)
    ref = branch_ref(x, y0, down, up, None, -1.25, None)
    check(y, *ref["y"], what="y mixed")
    dy = rnd(m, fout, dtype=torch.float32, gen=gen)
    dx = torch.empty(m, fin, dtype=torch.float16)
    ddown, dup = run_backward(dy, x, down, up, h, None, -1.25, dx)
    ref = branch_ref(x, y0, down, up, None, -1.25, dy)
    check(dx, *ref["dx"], what="dx mixed")
    check(ddown, *ref["ddown"], what="ddown mixed")

@pytest.mark.parametrize("dt", [torch.float32, torch.bfloat16])
def test_branch_threads_identical(dt):
    gen = torch.Generator().manual_seed(12)
    m, fin, fout, r = 1000, 130, 90, 20
    x, y = rnd(m, fin, dtype=dt, gen=gen), rnd(m, fout, dtype=dt, gen=gen)
    down, up = rnd(r, fin, gen=gen), rnd(fout, r, gen=gen)
    mask = (torch.rand(m, r, generator=gen) > 0.5).float() * 2
    dy = rnd(m, fout, dtype=dt, gen=gen)
    res = []
    for t in (1, 2):
        yy, h, dx = y.clone(), torch.empty(m, r), torch.empty(m, fin, dtype=dt)
        run_forward(x, yy, down, up, mask, 0.5, h, threads=t)
        ddown, dup = run_backward(dy, x, down, up, h, mask, 0.5, dx, threads=t)
        res.append((yy, h, dx, ddown, dup))
    for a, b in zip(*res):
        assert torch.equal(a, b)

@pytest.mark.parametrize("dt", DTYPES)
def test_branch_scalar_matches_simd(dt, monkeypatch):
    gen = torch.Generator().manual_seed(13)
    m, fin, fout, r = 203, 37, 70, 12
    x, y = rnd(m, fin, dtype=dt, gen=gen), rnd(m, fout, dtype=dt, gen=gen)
    down, up = rnd(r, fin, gen=gen), rnd(fout, r, gen=gen)
    dy = rnd(m, fout, dtype=dt, gen=gen)
    res = []
    for simd in (None, "scalar"):
        if simd:
            monkeypatch.setenv("LORA_NATIVE_SIMD", simd)
        yy, h, dx = y.clone(), torch.empty(m, r), torch.zeros(m, fin, dtype=dt)
        run_forward(x, yy, down, up, None, 0.5, h)
        ddown, dup = run_backward(dy, x, down, up, h, None, 0.5, dx)
        res.append((yy, h, dx, ddown, dup))
    for a, b in zip(*res):
        close_1ulp(a, b)

# ---------------------------------------------------------------- AdamW

def test_adamw_matches_torch():
    gen = torch.Generator().manual_seed(21)
    sizes = [1, 7, 1000, 40000]
    params = [torch.randn(n, generator=gen) for n in sizes]
    ref = [p.clone().requires_grad_(True) for p in params]
    groups = [{"params": ref[:2], "lr": 1e-3, "weight_decay": 0.01},
              {"params": ref[2:], "lr": 3e-4, "weight_decay": 0.1}]
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8, foreach=False)
    lrs = [1e-3, 1e-3, 3e-4, 3e-4]
    wds = [0.01, 0.01, 0.1, 0.1]
    ours = [p.clone() for p in params]
    m = [torch.zeros(n) for n in sizes]
    v = [torch.zeros(n) for n in sizes]
    grad_scale = 3.0
    for step in range(1, 6):
        scaled = [torch.randn(n, generator=gen) * grad_scale for n in sizes]
        for p, g in zip(ref, scaled):
            p.grad = g / grad_scale
        opt.step()
        N.adamw_step([(ours[i].data_ptr(), scaled[i].data_ptr(), m[i].data_ptr(), v[i].data_ptr(), sizes[i], lrs[i],
                       wds[i], step) for i in range(len(sizes))], 0.9, 0.999, 1e-8, grad_scale)
        for i, p in enumerate(ref):
            st = opt.state[p]
            for a, b in ((ours[i], p.detach()), (m[i], st["exp_avg"]), (v[i], st["exp_avg_sq"])):
                # torch's lerp uses FMA: errors scale with the operands, not the (cancelling) result.
                tol = 1e-6 * max(b.abs().max().item(), 1e-30)
                assert (a - b).abs().max().item() <= tol, (step, sizes[i], (a - b).abs().max())

def test_adamw_threads_and_simd_identical(monkeypatch):
    gen = torch.Generator().manual_seed(22)
    n = 70001
    base = [torch.randn(n, generator=gen) for _ in range(4)]
    base[3] = base[3].abs()
    res = []
    for threads, simd in ((1, None), (2, None), (2, "scalar")):
        if simd:
            monkeypatch.setenv("LORA_NATIVE_SIMD", simd)
        p, g, mm, vv = (t.clone() for t in base)
        N.adamw_step([(p.data_ptr(), g.data_ptr(), mm.data_ptr(), vv.data_ptr(), n, 1e-3, 0.05, 3)], 0.9, 0.99, 1e-6,
                     1.0, threads=threads)
        res.append((p, mm, vv))
    for other in res[1:]:
        for a, b in zip(res[0], other):
            assert torch.equal(a, b)

# ---------------------------------------------------------------- invalid arguments

def test_invalid_arguments():
    w = torch.zeros(4, 4)
    up, down = torch.zeros(4, 2), torch.zeros(2, 4)
    t = (up.data_ptr(), 0, down.data_ptr(), 0, 2, 1.0)
    with pytest.raises(ValueError, match="rows and cols must be positive"):
        N.lora_merge(w.data_ptr(), 0, 0, 4, [t], 0)
    with pytest.raises(ValueError, match="rank 0"):
        N.lora_merge(w.data_ptr(), 0, 4, 4, [(up.data_ptr(), 0, down.data_ptr(), 0, 0, 1.0)], 0)
    with pytest.raises(ValueError, match="w_dtype must be 0"):
        N.lora_merge(w.data_ptr(), 5, 4, 4, [t], 0)
    with pytest.raises(ValueError, match="w_ptr must be a non-null address"):
        N.lora_merge(0, 0, 4, 4, [t], 0)
    with pytest.raises(ValueError, match="up_ptr must be an address"):
        N.lora_merge(w.data_ptr(), 0, 4, 4, [(-1, 0, down.data_ptr(), 0, 2, 1.0)], 0)
    with pytest.raises(TypeError, match=r"terms\[0\] must be a tuple"):
        N.lora_merge(w.data_ptr(), 0, 4, 4, [(1, 2)], 0)
    with pytest.raises(ValueError, match="overflows"):
        N.lora_merge(w.data_ptr(), 0, 2 ** 40, 2 ** 40, [t], 0)
    with pytest.raises(ValueError, match="threads must be between"):
        N.lora_merge(w.data_ptr(), 0, 4, 4, [t], 0, threads=-1)
    x, y, h = torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(3, 2)
    with pytest.raises(ValueError, match="m, in, out and rank must be positive"):
        N.lora_branch_forward(x.data_ptr(), 0, 3, 4, 4, 0, down.data_ptr(), up.data_ptr(), 0, 1.0, y.data_ptr(), 0, 0)
    with pytest.raises(ValueError, match="m, in, out and rank must be positive"):
        N.lora_branch_forward(x.data_ptr(), 0, -3, 4, 4, 2, down.data_ptr(), up.data_ptr(), 0, 1.0, y.data_ptr(), 0, 0)
    with pytest.raises(ValueError, match="y_dtype must be 0"):
        N.lora_branch_forward(x.data_ptr(), 0, 3, 4, 4, 2, down.data_ptr(), up.data_ptr(), 0, 1.0, y.data_ptr(), 3, 0)
    with pytest.raises(ValueError, match="overflow"):
        N.lora_branch_forward(x.data_ptr(), 0, 2 ** 62, 4, 4, 2, down.data_ptr(), up.data_ptr(), 0, 1.0,
                              y.data_ptr(), 0, 0)
    dd, du = torch.zeros(2, 4), torch.zeros(4, 2)
    with pytest.raises(ValueError, match="h_ptr must be a non-null address"):
        N.lora_branch_backward(y.data_ptr(), 0, x.data_ptr(), 0, 3, 4, 4, 2, down.data_ptr(), up.data_ptr(), 0, 0,
                               1.0, dd.data_ptr(), du.data_ptr(), 0, 0, False)
    with pytest.raises(ValueError, match="dx_dtype must be 0"):
        N.lora_branch_backward(y.data_ptr(), 0, x.data_ptr(), 0, 3, 4, 4, 2, down.data_ptr(), up.data_ptr(),
                               h.data_ptr(), 0, 1.0, dd.data_ptr(), du.data_ptr(), x.data_ptr(), 9, False)
    p = torch.zeros(3)
    ok = (p.data_ptr(), p.data_ptr(), p.data_ptr(), p.data_ptr(), 3, 1e-3, 0.0, 1)
    with pytest.raises(ValueError, match="betas must be in"):
        N.adamw_step([ok], 1.0, 0.999, 1e-8, 1.0)
    with pytest.raises(ValueError, match="grad_scale must be finite and > 0"):
        N.adamw_step([ok], 0.9, 0.999, 1e-8, 0.0)
    with pytest.raises(ValueError, match="step 0"):
        N.adamw_step([ok[:7] + (0,)], 0.9, 0.999, 1e-8, 1.0)
    with pytest.raises(ValueError, match="n = -3"):
        N.adamw_step([ok[:4] + (-3,) + ok[5:]], 0.9, 0.999, 1e-8, 1.0)
    with pytest.raises(ValueError, match="param_ptr must be a non-null"):
        N.adamw_step([(0,) + ok[1:]], 0.9, 0.999, 1e-8, 1.0)
    N.adamw_step([], 0.9, 0.999, 1e-8, 1.0)  # nothing to do
