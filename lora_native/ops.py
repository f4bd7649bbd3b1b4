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
