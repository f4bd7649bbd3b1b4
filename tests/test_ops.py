"""lora_native.ops: the torch face of the native LoRA kernels (argument checks, autograd,
AdamW as an optimizer, the torch fallback) and the training engine's use of them."""
import pytest
import torch

from lora_native import ops
from lora_native.train.lora import LoRAModule

# float32 kernels against float64 torch: relative to the magnitude of the result.
F32_RTOL = 2e-5


def _rel_err(got, ref):
    return ((got.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


def test_cpu_backend_is_native():
    assert ops.backend("cpu") == "native-cpu"
    assert ops.why_no_native("cpu") == ""


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_merge_matches_float64_and_writes_backup(dtype):
    g = torch.Generator().manual_seed(0)
    w = (torch.randn(37, 29, generator=g) * 0.05).to(dtype)
    old = w.clone()
    terms = [(torch.randn(37, 4, generator=g), torch.randn(4, 29, generator=g), 0.8),
             (torch.randn(37, 1, generator=g).half(), torch.randn(1, 29, generator=g).bfloat16(), -0.3)]
    backup = torch.empty_like(w)
    ops.merge_(w, terms, backup=backup)
    ref = old.double() + sum(s * (u.double() @ d.double()) for u, d, s in terms)
    assert torch.equal(backup, old)
    if dtype == torch.float32:
        assert _rel_err(w, ref) < F32_RTOL
    else:
        # one rounding of the float64 result, give or take one unit from fp32 accumulation
        ulp = (ref.to(dtype).double() - ref).abs().max() * 2 + 1e-12
        assert (w.double() - ref).abs().max() <= 2 * ulp


def test_merge_conv_locon_shapes():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(8, 6, 3, 3, generator=g)
    up, down = torch.randn(8, 2, 1, 1, generator=g), torch.randn(2, 6, 3, 3, generator=g)
    ref = w.double() + 0.5 * (up.reshape(8, 2).double() @ down.reshape(2, -1).double()).reshape(8, 6, 3, 3)
    ops.merge_(w, [(up, down, 0.5)])
    assert _rel_err(w, ref) < F32_RTOL


def test_merge_rejects_bad_arguments():
    w = torch.zeros(4, 5)
    with pytest.raises(ValueError, match="rank"):
        ops.merge_(w, [(torch.zeros(4, 2), torch.zeros(3, 5), 1.0)])
    with pytest.raises(ValueError, match="does not fit"):
        ops.merge_(w, [(torch.zeros(4, 2), torch.zeros(2, 6), 1.0)])
    with pytest.raises(ValueError, match="rows"):
        ops.merge_(w, [(torch.zeros(3, 2), torch.zeros(2, 5), 1.0)])
    with pytest.raises(ValueError, match="contiguous"):
        ops.merge_(torch.zeros(5, 4).t(), [])
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        ops.merge_(torch.zeros(4, 5, dtype=torch.float64), [])
    with pytest.raises(ValueError, match="backup"):
        ops.merge_(w, [], backup=torch.zeros(4, 5, dtype=torch.float16))


def test_merge_torch_fallback_same_math(monkeypatch):
    g = torch.Generator().manual_seed(2)
    w = torch.randn(16, 24, generator=g).half()
    terms = [(torch.randn(16, 3, generator=g), torch.randn(3, 24, generator=g), 0.7)]
    native = w.clone()
    ops.merge_(native, terms)
    monkeypatch.setattr(ops, "backend", lambda device: "torch")
    fallback = w.clone()
    ops.merge_(fallback, terms)
    assert (native.float() - fallback.float()).abs().max() <= (fallback.float().abs().max() * 2 ** -10)


def _branch_inputs(dtype, m=33, n_in=19, n_out=23, r=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, n_in, generator=g).to(dtype)
    y = torch.randn(m, n_out, generator=g).to(dtype)
    down = torch.randn(r, n_in, generator=g) * 0.3
    up = torch.randn(n_out, r, generator=g) * 0.3
    mask = (torch.rand(m, r, generator=g) > 0.25).float() / 0.75
    return x, y, down, up, mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_lora_branch_forward_backward_matches_autograd(dtype):
    x, y, down, up, mask = _branch_inputs(dtype)
    scale = 0.75
    # float64 reference through autograd
    xr, yr = x.double().requires_grad_(), y.double().requires_grad_()
    dr, ur = down.double().requires_grad_(), up.double().requires_grad_()
    ref = yr + scale * ((xr @ dr.t()) * mask.double()) @ ur.t()
    gy = torch.randn(ref.shape, generator=torch.Generator().manual_seed(9))
    ref.backward(gy.double())

    xn = x.clone().requires_grad_()
    yn = (y.clone().requires_grad_() * 1.0)  # a non-leaf, as a Linear's output is
    dn, un = down.clone().requires_grad_(), up.clone().requires_grad_()
    out = ops.lora_branch(xn, yn, dn, un, scale, mask)
    out.backward(gy.to(dtype))
    tol = F32_RTOL if dtype == torch.float32 else (2e-3 if dtype == torch.float16 else 1.6e-2)
    assert _rel_err(out.detach(), ref.detach()) < tol
    assert _rel_err(xn.grad, xr.grad) < tol
    assert _rel_err(dn.grad, dr.grad) < tol * 4
    assert _rel_err(un.grad, ur.grad) < tol * 4


@pytest.mark.filterwarnings("ignore:Input #.* is not a double precision")
def test_lora_branch_gradcheck():
    # gradcheck in float32 (the kernels compute in float32), so its step and tolerances are wider
    # than torch's float64 defaults; the float64 comparison above is the tight check.
    x, y, down, up, mask = _branch_inputs(torch.float32, m=6, n_in=5, n_out=4, r=3, seed=3)

    def fn(x, y, down, up):
        return ops.lora_branch(x, y * 1.0, down, up, 0.5, mask)

    inputs = tuple(t.clone().requires_grad_() for t in (x, y, down, up))
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-2, atol=5e-3, rtol=5e-3, nondet_tol=1e-6)


def test_lora_branch_rejects_mismatched_shapes():
    x, y, down, up, _ = _branch_inputs(torch.float32)
    with pytest.raises(ValueError, match="do not fit"):
        ops.lora_branch(x[:, :-1], y, down, up, 1.0)
    with pytest.raises(TypeError, match="float32"):
        ops.lora_branch(x, y, down.half(), up, 1.0)
    with pytest.raises(ValueError, match="mask"):
        ops.lora_branch(x, y, down, up, 1.0, torch.ones(3))


def test_lora_module_native_equals_torch_path():
    torch.manual_seed(0)
    lin = torch.nn.Linear(24, 40)
    mods = []
    for native in (False, True):
        torch.manual_seed(1)
        m = LoRAModule("k", lin, 4, 2.0, dropout=0.3)
        torch.nn.init.normal_(m.lora_up.weight)
        m.native = native
        m.generator = torch.Generator().manual_seed(5)
        m.apply_to()
        x = torch.randn(2, 7, 24, generator=torch.Generator().manual_seed(6), requires_grad=True)
        out = lin(x)
        out.square().sum().backward()
        m.remove()
        mods.append((out.detach(), x.grad, m.lora_down.weight.grad, m.lora_up.weight.grad))
    for a, b in zip(*mods):
        assert _rel_err(b, a.double()) < 1e-5


def _adamw_pair(seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(1,), (7,), (10, 100)]
    a = [torch.randn(s, generator=g).requires_grad_() for s in shapes]
    b = [t.detach().clone().requires_grad_() for t in a]
    return a, b, g


def test_adamw_matches_torch_over_steps():
    a, b, g = _adamw_pair()
    groups = lambda ps: [{"params": ps[:2], "lr": 1e-2, "weight_decay": 0.1},  # noqa: E731
                         {"params": ps[2:], "lr": 3e-3, "weight_decay": 0.0}]
    ours = ops.AdamW(groups(a), betas=(0.9, 0.99), eps=1e-6)
    ref = torch.optim.AdamW(groups(b), betas=(0.9, 0.99), eps=1e-6, foreach=False)
    for _ in range(5):
        grads = [torch.randn(t.shape, generator=g) for t in a]
        for t, gr in zip(a, grads):
            t.grad = gr.clone()
        for t, gr in zip(b, grads):
            t.grad = gr.clone()
        ours.step()
        ref.step()
    for x, y in zip(a, b):
        assert torch.allclose(x, y, rtol=1e-6, atol=1e-7)
    # same state layout: a checkpoint of one loads into the other
    ref.load_state_dict(ours.state_dict())
    ours.load_state_dict(torch.optim.AdamW(groups(b)).state_dict())


def test_adamw_skips_params_without_grad_and_rejects_bad_hparams():
    p = torch.zeros(3, requires_grad=True)
    opt = ops.AdamW([p], lr=0.1)
    opt.step()
    assert torch.equal(p, torch.zeros(3)) and not opt.state
    with pytest.raises(ValueError, match="hyper-parameters"):
        ops.AdamW([p], lr=-1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_copy_is_exact_and_checked(dtype):
    src = torch.randn(13, 7, 3, 3).to(dtype)
    dst = torch.zeros_like(src)
    assert ops.copy_(dst, src) is dst and torch.equal(dst, src)
    with pytest.raises(ValueError, match="contiguous"):
        ops.copy_(torch.zeros(7, 13).t(), torch.zeros(13, 7))
    with pytest.raises(ValueError):
        ops.copy_(dst, src.float() if dtype != torch.float32 else src.half())
