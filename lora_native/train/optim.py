"""Optimizers and learning-rate schedules (warmup + constant / linear / cosine / cosine with
restarts), written as LambdaLR so their state is one integer and resumes exactly."""
import math

import torch

from ..errors import UsageError


def make_optimizer(name, param_groups, weight_decay, native=False):
    if name == "adamw" and native:
        from ..ops import AdamW
        return AdamW(param_groups, weight_decay=weight_decay)
    if name == "adamw":
        # The fused kernel updates every LoRA tensor in one pass (CPU and CUDA, torch >= 2.4);
        # the per-tensor loop is the fallback.
        try:
            return torch.optim.AdamW(param_groups, weight_decay=weight_decay, fused=True)
        except (RuntimeError, TypeError, ValueError):
            return torch.optim.AdamW(param_groups, weight_decay=weight_decay, foreach=True)
    if name == "sgd":
        return torch.optim.SGD(param_groups, momentum=0.9, weight_decay=weight_decay)
    if name == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise UsageError("optimizer adamw8bit needs bitsandbytes (pip install bitsandbytes; CUDA only); "
                             "use optimizer: adamw") from None
        return bnb.optim.AdamW8bit(param_groups, weight_decay=weight_decay)
    raise UsageError("unknown optimizer %r (adamw, adamw8bit, sgd)" % name)


def lr_lambda(name, warmup, total, cycles=1):
    """Multiplier of the base lr at optimizer step `step` (0-based)."""
    total = max(int(total), 1)
    warmup = max(int(warmup), 0)

    def warm(step):
        return (step + 1) / warmup if step < warmup else None

    def progress(step):
        return min(max((step - warmup) / max(total - warmup, 1), 0.0), 1.0)

    if name == "constant":
        return lambda s: 1.0
    if name == "constant_with_warmup":
        return lambda s: warm(s) or 1.0
    if name == "linear":
        return lambda s: warm(s) or max(0.0, 1.0 - progress(s))
    if name == "cosine":
        return lambda s: warm(s) or 0.5 * (1.0 + math.cos(math.pi * progress(s)))
    if name == "cosine_with_restarts":
        def restarts(s):
            w = warm(s)
            if w is not None:
                return w
            p = progress(s)
            if p >= 1.0:
                return 0.0
            return 0.5 * (1.0 + math.cos(math.pi * ((cycles * p) % 1.0)))
        return restarts
    raise UsageError("unknown lr_scheduler %r" % name)


def make_scheduler(optimizer, name, warmup, total, cycles=1):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(name, warmup, total, cycles))
