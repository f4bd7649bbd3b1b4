"""LoRA modules injected into a frozen model: y = W x + (alpha / r) * up(dropout(down(x))).

Dropout follows sd-scripts' `network_dropout`: it drops rank features (the output of down), so
the same value regularises the same way it does there. `input_dropout` is PEFT's `lora_dropout`:
it drops the adapter's input features (before down). Their random masks come from the network's
own generator, reseeded by the trainer every step, never from torch's global RNG.

Besides nn.Linear and nn.Conv2d, transformers' Conv1D (GPT-2: weight stored [in, out], y = x W + b)
is wrapped like a Linear: the adapter sees x and adds to y, so down/up have a Linear's shapes and
only a merge into the weight has to transpose (PEFT's fan_in_fan_out).

A LoRA module keeps its weights under kohya names (`<key>.lora_down.weight`,
`<key>.lora_up.weight`, `<key>.alpha`), so its state dict is the file format. The wrapped
module's forward is replaced (and restored by `remove`); its own weights are never touched.
"""
import math

import torch
import torch.nn as nn

from .. import ops
from ..errors import UsageError


def is_conv1d(module):
    """transformers.pytorch_utils.Conv1D (GPT-2's projections), recognised without importing it."""
    w = getattr(module, "weight", None)
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and isinstance(w, torch.Tensor) \
        and w.dim() == 2


class LoRAModule(nn.Module):
    """One adapter. `kind`: linear, conv1x1 or conv3x3 (LoCon: down has the layer's kernel,
    up is 1x1). `fan_in_fan_out`: the wrapped layer stores its weight [in, out] (Conv1D)."""

    def __init__(self, key, org, rank, alpha, dropout=0.0, input_dropout=0.0):
        super().__init__()
        self.key = key
        self.rank = int(rank)
        self.dropout = float(dropout)
        self.input_dropout = float(input_dropout)
        self.fan_in_fan_out = False
        if isinstance(org, nn.Linear) or is_conv1d(org):
            self.kind = "linear"
            if isinstance(org, nn.Linear):
                n_in, n_out = org.in_features, org.out_features
            else:
                (n_in, n_out), self.fan_in_fan_out = org.weight.shape, True
            self.lora_down = nn.Linear(n_in, self.rank, bias=False)
            self.lora_up = nn.Linear(self.rank, n_out, bias=False)
        elif isinstance(org, nn.Conv2d):
            self.kind = "conv1x1" if tuple(org.kernel_size) == (1, 1) else "conv3x3"
            self.lora_down = nn.Conv2d(org.in_channels, self.rank, org.kernel_size, org.stride, org.padding,
                                       bias=False)
            self.lora_up = nn.Conv2d(self.rank, org.out_channels, 1, 1, bias=False)
        else:
            raise TypeError("LoRA can wrap nn.Linear, nn.Conv2d or transformers' Conv1D, not %s (%s)"
                            % (type(org).__name__, key))
        # kaiming-uniform down (a = sqrt(5), torch's Linear default) and zero up: the
        # adapter starts as the identity on the model's output.
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)
        self.register_buffer("alpha", torch.tensor(float(alpha)))
        self._scale = float(alpha) / self.rank  # a Python float: no tensor read per forward
        self.multiplier = 1.0
        self.generator = None  # set by LoRANetwork.set_dropout_generator
        self.native = False    # fused branch of lora_native.ops (Linear layers only)
        self._org = [org]  # a list, so the frozen module is not registered as a child
        self._org_forward = None

    def set_alpha(self, alpha):
        self.alpha.fill_(float(alpha))
        self._scale = float(alpha) / self.rank

    def apply_to(self):
        org = self._org[0]
        self._org_forward = org.forward
        org.forward = self.forward

    def remove(self):
        if self._org_forward is not None:
            self._org[0].forward = self._org_forward
            self._org_forward = None

    def forward(self, x):
        y = self._org_forward(x)
        if self.multiplier == 0.0:
            return y
        if self.input_dropout and self.training:
            keep = torch.rand(x.shape, generator=self.generator, device=x.device) >= self.input_dropout
            x = x * keep.to(x.dtype) / (1.0 - self.input_dropout)
        if self.native and self.kind == "linear":
            mask = None
            if self.dropout and self.training:
                # The same draw as the torch path below: one uniform per rank feature.
                keep = torch.rand(x.shape[:-1] + (self.rank,), generator=self.generator, device=x.device)
                mask = (keep >= self.dropout).float().div_(1.0 - self.dropout)
            return ops.lora_branch(x, y, self.lora_down.weight, self.lora_up.weight,
                                   self.multiplier * self._scale, mask)
        h = x
        if h.dtype != self.lora_down.weight.dtype and not torch.is_autocast_enabled(h.device.type):
            h = h.to(self.lora_down.weight.dtype)
        h = self.lora_down(h)
        if self.dropout and self.training:
            keep = torch.rand(h.shape, generator=self.generator, device=h.device) >= self.dropout
            h = h * keep.to(h.dtype) / (1.0 - self.dropout)
        h = self.lora_up(h)
        if h.dtype != y.dtype:
            h = h.to(y.dtype)
        return torch.add(y, h, alpha=self.multiplier * self._scale)


class LoRANetwork(nn.Module):
    """All adapters of one model. `targets` come from lora_native.formats.keymap.lora_targets."""

    def __init__(self, targets, rank, alpha, conv_rank=None, conv_alpha=None, dropout=0.0, input_dropout=0.0):
        super().__init__()
        self.modules_by_key = {}
        layers = []
        for t in targets:
            conv3 = t.kind == "conv3x3"
            r = conv_rank if conv3 and conv_rank else rank
            a = conv_alpha if conv3 and conv_alpha else alpha
            m = LoRAModule(t.key, t.module, r, a, dropout, input_dropout)
            m.component = t.component
            layers.append(m)
            self.modules_by_key[t.key] = m
        if len(self.modules_by_key) != len(layers):
            raise ValueError("two LoRA targets share one key name")
        self.layers = nn.ModuleList(layers)

    def apply_to(self):
        for m in self.layers:
            m.apply_to()

    def remove(self):
        for m in self.layers:
            m.remove()

    def use_native_kernels(self, on):
        for m in self.layers:
            m.native = bool(on)

    def set_dropout_generator(self, generator):
        for m in self.layers:
            m.generator = generator

    def parameters_of(self, component_prefix):
        """Trainable parameters of the adapters on one component ("unet", "te")."""
        return [p for m in self.layers if m.component.startswith(component_prefix) for p in m.parameters()]

    def lora_state_dict(self):
        """Kohya-named tensors (fp32, contiguous, on CPU)."""
        out = {}
        for m in self.layers:
            out[m.key + ".lora_down.weight"] = m.lora_down.weight.detach().float().cpu().contiguous()
            out[m.key + ".lora_up.weight"] = m.lora_up.weight.detach().float().cpu().contiguous()
            out[m.key + ".alpha"] = m.alpha.detach().float().cpu()
        return out

    def load_lora_state_dict(self, tensors, source="LoRA file"):
        """Load kohya-named tensors (network_weights / resume). Every key must match one of
        our adapters with the same shape; what matches nothing is an error naming it."""
        own = {m.key for m in self.layers}
        unknown = sorted({k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in tensors}
                         - own)
        if unknown:
            te = [k for k in unknown if k.startswith("lora_te")]
            conv = [k for k in unknown if (tensors.get(k + ".lora_down.weight") is not None
                                           and tensors[k + ".lora_down.weight"].ndim == 4
                                           and tuple(tensors[k + ".lora_down.weight"].shape[2:]) != (1, 1))]
            if te and len(te) == len(unknown):
                hint = "it also holds text-encoder adapters: set train_text_encoder: true to train them"
            elif conv:
                hint = "it holds conv (LoCon) adapters: set conv_lora: true (and its conv_dim)"
            else:
                hint = "is it a LoRA for another base model (SD1.5 vs SDXL)?"
            raise UsageError("%s has %d LoRA module(s) this network has none of, e.g. %s; %s"
                             % (source, len(unknown), unknown[0], hint))
        with torch.no_grad():
            for m in self.layers:
                for name, param in (("lora_down.weight", m.lora_down.weight), ("lora_up.weight", m.lora_up.weight)):
                    t = tensors.get(m.key + "." + name)
                    if t is None:
                        continue
                    if tuple(t.shape) != tuple(param.shape):
                        raise UsageError("%s: %s.%s has shape %s, this network needs %s (different rank?)"
                                         % (source, m.key, name, tuple(t.shape), tuple(param.shape)))
                    param.copy_(t.to(param.dtype))
                a = tensors.get(m.key + ".alpha")
                if a is not None:
                    m.set_alpha(float(a.float().reshape(())))
