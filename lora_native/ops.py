"""Torch entry points of the native LoRA kernels (csrc/lora): in-place multi-LoRA merge, the
fused adapter branch as an autograd function, and a multi-tensor AdamW.

The native module is not built against torch: tensors are checked here (device, dtype, shape,
contiguity) and handed over as raw pointers, with the caller's CUDA stream. Where no native
kernel exists for a device (a CPU-only build on a GPU, MPS, float64) the same math runs in
torch; `backend(device)` says which one a call will use.
"""
import os

import torch

from . import _native

DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def _has_cuda_kernels():
    return hasattr(_native, "lora_merge_cuda")


def backend(device):
    """"native-cpu", "native-cuda" or "torch": what runs the kernels for tensors on `device`."""
    device = torch.device(device)
    if device.type == "cpu" and hasattr(_native, "lora_merge"):
        return "native-cpu"
    if device.type == "cuda" and _has_cuda_kernels():
        return "native-cuda"
    return "torch"


# Whether training uses the fused branch and AdamW when the config leaves native_kernels unset:
# per device type, from bench/bench_kernels.py (see bench/RESULTS.md). A GPU default stays off
# until a GPU run of that benchmark shows the kernels ahead.
NATIVE_BY_DEFAULT = {"cpu": False, "cuda": False}


def native_by_default(device):
    device = torch.device(device)
    return NATIVE_BY_DEFAULT.get(device.type, False) and backend(device) != "torch"


def why_no_native(device):
    """Why backend(device) is "torch", in words ("" when it is not)."""
    device = torch.device(device)
    if backend(device) != "torch":
        return ""
    if device.type == "cuda":
        info = _native.build_info() if hasattr(_native, "build_info") else {}
        return "built without CUDA: %s" % (info.get("cuda_off_reason") or "no CUDA kernels in this build")
    if device.type == "cpu":
        return "this build of lora_native._native has no LoRA kernels"
    return "no native kernels for %s devices" % device.type


def _threads():
    v = os.environ.get("LORA_NATIVE_THREADS")
    return int(v) if v and v.isdigit() else None


def _stream(device):
    return torch.cuda.current_stream(device).cuda_stream


def _as_matrix(t, rows, what):
    """A contiguous 2-D view [rows, -1] of a weight-like tensor (conv weights flattened)."""
    if t.dim() not in (2, 4):
        raise ValueError("%s must be 2-D (linear) or 4-D (conv), got shape %s" % (what, tuple(t.shape)))
    if t.shape[0] != rows:
        raise ValueError("%s has %d rows, expected %d (shape %s)" % (what, t.shape[0], rows, tuple(t.shape)))
    return t.contiguous().reshape(rows, -1)


def _check_float(t, what):
    if t.dtype not in DTYPE_CODES:
        raise TypeError("%s must be float32, float16 or bfloat16, got %s" % (what, t.dtype))


# ---------------------------------------------------------------- merge

def merge_(weight, terms, backup=None):
    """weight += sum(scale * up @ down for up, down, scale in terms), in place, in one pass.

    weight: [out, in] (linear) or [out, in, kh, kw] (conv), contiguous, float32/float16/bfloat16,
    on the CPU or a GPU. Each term is (up, down, scale) with up [out, r] or [out, r, 1, 1] and down
    [r, in] or [r, in, kh, kw] (LoCon), any of the three dtypes, on weight's device. The delta is
    summed in float32 and added to weight with one rounding. `backup`, when given (same shape,
    dtype and device), receives weight's previous values in the same pass, for an exact restore.
    Unmerge: the same terms with negated scales (error bounded by one rounding per call).
    """
    if not isinstance(weight, torch.Tensor):
        raise TypeError("weight must be a tensor")
    _check_float(weight, "weight")
    if weight.dim() not in (2, 4):
        raise ValueError("weight must be 2-D or 4-D, got shape %s" % (tuple(weight.shape),))
    if not weight.is_contiguous():
        raise ValueError("weight must be contiguous to be merged in place")
    rows = weight.shape[0]
    cols = weight.numel() // rows if rows else 0
    if backup is not None:
        if backup.shape != weight.shape or backup.dtype != weight.dtype or backup.device != weight.device \
                or not backup.is_contiguous():
            raise ValueError("backup must be a contiguous tensor with weight's shape, dtype and device "
                             "(%s %s %s)" % (tuple(weight.shape), weight.dtype, weight.device))
    mats = []
    for i, term in enumerate(terms):
        if len(term) != 3:
            raise ValueError("term %d must be (up, down, scale)" % i)
        up, down, scale = term
        for t, what in ((up, "up"), (down, "down")):
            if not isinstance(t, torch.Tensor):
                raise TypeError("term %d: %s must be a tensor" % (i, what))
            _check_float(t, "term %d %s" % (i, what))
            if t.device != weight.device:
                raise ValueError("term %d: %s is on %s, weight on %s" % (i, what, t.device, weight.device))
        up2 = _as_matrix(up, rows, "term %d up" % i)
        rank = up2.shape[1]
        if up.dim() == 4 and tuple(up.shape[2:]) != (1, 1):
            raise ValueError("term %d: a conv up must be 1x1, got shape %s" % (i, tuple(up.shape)))
        if down.shape[0] != rank:
            raise ValueError("term %d: up has rank %d but down has %d rows (shapes %s, %s)"
                             % (i, rank, down.shape[0], tuple(up.shape), tuple(down.shape)))
        down2 = _as_matrix(down, rank, "term %d down" % i)
        if down2.shape[1] != cols or (down.dim() == 4 and weight.dim() == 4 and down.shape[1:] != weight.shape[1:]):
            raise ValueError("term %d: down %s does not fit weight %s"
                             % (i, tuple(down.shape), tuple(weight.shape)))
        if rank == 0:
            continue
        mats.append((up2, down2, float(scale)))
    if rows == 0 or cols == 0:
        return weight
    how = backend(weight.device)
    if how == "torch":
        _merge_torch(weight, mats, backup)
        return weight
    w2 = weight.view(rows, cols)
    native_terms = [(u.data_ptr(), DTYPE_CODES[u.dtype], d.data_ptr(), DTYPE_CODES[d.dtype], u.shape[1], s)
                    for u, d, s in mats]
    bptr = backup.data_ptr() if backup is not None else 0
    if how == "native-cpu":
        _native.lora_merge(w2.data_ptr(), DTYPE_CODES[weight.dtype], rows, cols, native_terms, bptr, _threads())
    else:
        with torch.cuda.device(weight.device):
            _native.lora_merge_cuda(w2.data_ptr(), DTYPE_CODES[weight.dtype], rows, cols, native_terms, bptr,
                                    _stream(weight.device))
    return weight


def copy_(dst, src):
    """dst[...] = src for two contiguous tensors of one shape, dtype and device. On the CPU the
    copy runs on the native threads: a torch copy between native merges leaves torch's OpenMP
    workers spinning on the cores the next merge needs (measured: a restore-and-merge switch
    took twice as long)."""
    if dst.shape != src.shape or dst.dtype != src.dtype or dst.device != src.device \
            or not dst.is_contiguous() or not src.is_contiguous():
        raise ValueError("copy_ needs two contiguous tensors of one shape, dtype and device")
    if backend(dst.device) != "native-cpu" or dst.dtype not in DTYPE_CODES or dst.numel() == 0:
        return dst.copy_(src)
    rows = dst.shape[0] if dst.dim() else 1
    # A merge of no terms writes only its backup: the source, unchanged.
    _native.lora_merge(src.data_ptr(), DTYPE_CODES[src.dtype], rows, dst.numel() // rows, [], dst.data_ptr(),
                       _threads())
    return dst


def _merge_torch(weight, mats, backup):
    rows = weight.shape[0]
    if backup is not None:
        backup.copy_(weight)
    if not mats:
        return
    delta = None
    for up, down, s in mats:
        d = (up.float() @ down.float()) * s
        delta = d if delta is None else delta.add_(d)
    w2 = weight.view(rows, -1)
    w2.copy_(w2.float().add_(delta))


# ---------------------------------------------------------------- fused adapter branch

def _rows(t):
    return t.numel() // t.shape[-1] if t.dim() else 1


class _LoraBranch(torch.autograd.Function):
    """y_base += scale * (dropout_mask * (x @ down^T)) @ up^T, written into y_base (no [M, out]
    temporary). Gradients: dx, dy (identity), ddown, dup; mask and scale are constants."""

    @staticmethod
    def forward(ctx, x, y, down, up, mask, scale):
        m, n_in, n_out, r = _rows(x), x.shape[-1], y.shape[-1], down.shape[0]
        xc = x.contiguous()
        h = torch.empty((m, r), dtype=torch.float32, device=x.device)
        args = (xc.data_ptr(), DTYPE_CODES[x.dtype], m, n_in, n_out, r, down.data_ptr(), up.data_ptr(),
                mask.data_ptr() if mask is not None else 0, float(scale), y.data_ptr(), DTYPE_CODES[y.dtype],
                h.data_ptr())
        if x.device.type == "cpu":
            _native.lora_branch_forward(*args, _threads())
        else:
            with torch.cuda.device(x.device):
                _native.lora_branch_forward_cuda(*args, _stream(x.device))
        ctx.mark_dirty(y)
        ctx.save_for_backward(xc, down, up, h, mask)
        ctx.scale = float(scale)
        return y

    @staticmethod
    def backward(ctx, gy):
        x, down, up, h, mask = ctx.saved_tensors
        gy = gy.contiguous()
        m, n_in, n_out, r = _rows(x), x.shape[-1], gy.shape[-1], down.shape[0]
        ddown = torch.empty_like(down)
        dup = torch.empty_like(up)
        dx = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        args = (gy.data_ptr(), DTYPE_CODES[gy.dtype], x.data_ptr(), DTYPE_CODES[x.dtype], m, n_in, n_out, r,
                down.data_ptr(), up.data_ptr(), h.data_ptr(), mask.data_ptr() if mask is not None else 0,
                ctx.scale, ddown.data_ptr(), dup.data_ptr(), dx.data_ptr() if dx is not None else 0,
                DTYPE_CODES[dx.dtype] if dx is not None else 0, 0)
        if x.device.type == "cpu":
            _native.lora_branch_backward(*args, _threads())
        else:
            with torch.cuda.device(x.device):
                _native.lora_branch_backward_cuda(*args, _stream(x.device))
        return (dx, gy, ddown if ctx.needs_input_grad[2] else None, dup if ctx.needs_input_grad[3] else None,
                None, None)


def _branch_torch(x, y, down, up, mask, scale):
    h = x.to(down.dtype) @ down.t()
    if mask is not None:
        h = h * mask.reshape(h.shape)
    return torch.add(y, (h @ up.t()).to(y.dtype), alpha=scale)


def lora_branch(x, y, down, up, scale, mask=None):
    """y + scale * ((x @ down^T) * mask) @ up^T for a Linear layer's input x [..., in] and output
    y [..., out]; y is updated in place when the native kernel runs (it must not be needed
    elsewhere: a Linear's output is not saved for its own backward). down [r, in] and up
    [out, r] are float32 (master weights); x and y float32/float16/bfloat16; mask (optional,
    [..., r] float32) is a dropout mask already divided by the keep probability."""
    if down.dim() != 2 or up.dim() != 2 or down.dtype != torch.float32 or up.dtype != torch.float32:
        raise TypeError("lora_branch needs 2-D float32 down and up, got %s %s and %s %s"
                        % (down.dtype, tuple(down.shape), up.dtype, tuple(up.shape)))
    r, n_in = down.shape
    n_out = up.shape[0]
    if up.shape[1] != r:
        raise ValueError("up %s does not match down %s (rank)" % (tuple(up.shape), tuple(down.shape)))
    if x.shape[-1] != n_in or y.shape[-1] != n_out or x.shape[:-1] != y.shape[:-1]:
        raise ValueError("x %s / y %s do not fit a LoRA branch of in=%d, out=%d"
                         % (tuple(x.shape), tuple(y.shape), n_in, n_out))
    if mask is not None and (mask.dtype != torch.float32 or mask.numel() != _rows(x) * r):
        raise ValueError("mask must be float32 with %d x %d elements" % (_rows(x), r))
    devices = {t.device for t in (x, y, down, up) + ((mask,) if mask is not None else ())}
    if len(devices) != 1:
        raise ValueError("lora_branch tensors are on different devices: %s" % sorted(map(str, devices)))
    how = backend(x.device)
    if how == "torch" or x.dtype not in DTYPE_CODES or y.dtype not in DTYPE_CODES or not y.is_contiguous() \
            or x.numel() == 0:
        return _branch_torch(x, y, down, up, mask, scale)
    if mask is not None:
        mask = mask.contiguous()
    target = y
    if y._is_view():
        # A Linear on a batch of sequences returns a view of its [M, out] matmul result; the
        # in-place update has to go to that result (autograd refuses to rebase a view here).
        target = y._base
        if target._is_view() or target.dim() != 2 or target.shape != (_rows(y), n_out) \
                or target.data_ptr() != y.data_ptr() or not target.is_contiguous():
            return _branch_torch(x, y, down, up, mask, scale)
    if target.is_leaf and target.requires_grad:
        return _branch_torch(x, y, down, up, mask, scale)
    out = _LoraBranch.apply(x, target, down.contiguous(), up.contiguous(), mask, float(scale))
    return out if target is y else out.view(y.shape)


# ---------------------------------------------------------------- AdamW

class AdamW(torch.optim.Optimizer):
    """torch.optim.AdamW's update for every float32 tensor of every group in one native call
    per step (state names as torch's: step, exp_avg, exp_avg_sq, so checkpoints load in either).
    Parameters on a device without a native kernel are updated by torch.optim's functional
    AdamW."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        if lr < 0 or eps < 0 or not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0 or weight_decay < 0:
            raise ValueError("invalid AdamW hyper-parameters: lr=%r betas=%r eps=%r weight_decay=%r"
                             % (lr, betas, eps, weight_decay))
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        batches = {}  # (device, betas, eps) -> [(param, state, lr, wd)]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("AdamW does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                key = (p.device, tuple(group["betas"]), float(group["eps"]))
                batches.setdefault(key, []).append((p, state, float(group["lr"]), float(group["weight_decay"])))
        for (device, betas, eps), items in batches.items():
            has_kernel = backend(device) != "torch"  # once per device, not per tensor
            native = [it for it in items if has_kernel and it[0].dtype == torch.float32 and it[0].is_contiguous()
                      and it[0].grad.is_contiguous() and it[0].grad.dtype == torch.float32]
            chosen = {id(it[0]) for it in native}
            rest = [it for it in items if id(it[0]) not in chosen]
            table = []
            for p, st, lr, wd in native:
                st["step"] += 1
                table.append((p.data_ptr(), p.grad.data_ptr(), st["exp_avg"].data_ptr(),
                              st["exp_avg_sq"].data_ptr(), p.numel(), lr, wd, int(st["step"].item())))
            if table:
                if device.type == "cpu":
                    _native.adamw_step(table, betas[0], betas[1], eps, 1.0, _threads())
                else:
                    with torch.cuda.device(device):
                        _native.adamw_step_cuda(table, betas[0], betas[1], eps, 1.0, _stream(device))
            for p, st, lr, wd in rest:
                torch.optim.adamw.adamw([p], [p.grad], [st["exp_avg"]], [st["exp_avg_sq"]], [], [st["step"]],
                                        foreach=False, amsgrad=False, beta1=betas[0], beta2=betas[1], lr=lr,
                                        weight_decay=wd, eps=eps, maximize=False)
        return loss
