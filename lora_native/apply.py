"""Apply LoRA files to a loaded model in place: `W += sum_i w_i * (alpha_i / r_i) * up_i @ down_i`.

    stack = LoraStack(model, lora_dirs=["models/Lora"])
    stack.set([("style_a", 0.8), ("char_b", 0.6, 0.4)])   # <lora:char_b:0.4:0.6>: UNet 0.6, TE 0.4
    stack.set([("style_a", 0.8)])                         # re-touches only char_b's layers
    stack.clear()                                         # the original weights, bit for bit

Files: kohya (and LoCon 3x3), ComfyUI-native, diffusers/PEFT, named through the one key map
(`formats/keymap.py`). A missing alpha means alpha = rank (scale 1), as A1111 and ComfyUI read
it. LyCORIS algorithms other than LoRA/LoCon (LoHa, LoKr, DoRA, OFT, ...) are refused by name.

Models: diffusers components ({"unet", "text_encoder", "text_encoder_2"} or our BaseModel), a
module in the original single-file layout (`model.diffusion_model.*`, `cond_stage_model.*`,
`conditioner.embedders.*`, as A1111 holds it; SDXL's fused q/k/v land on row blocks of
`attn.in_proj_weight`), ComfyUI's naming (`diffusion_model.*`, `clip_l/clip_g.transformer.*`),
or a flat state dict of tensors in any of those namings.

Every weight change goes through `ops.merge_` (one pass, fp32 accumulation, one rounding).
Modes:
- "backup" (default): the first merge of a layer saves its weight (on `backup_device`, CPU RAM by
  default); a later change restores it from there and merges the new terms, so any sequence of
  `set` calls leaves exactly the weights a fresh merge gives, and `clear()` restores them bit for bit.
- "subtract": no copies; a change merges (new scale - old scale) per file in one merge_ call.
  Bounded error: each `set` that touches a layer rounds W once more to its dtype (at most half an
  ulp of W per element, 2^-24 relative in fp32, 2^-11 in fp16, 2^-8 in bf16) on top of the fp32
  summation error of the delta; after n switches the drift is at most n such roundings.
"""
import difflib
import itertools
import logging
import os
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from . import ops
from .errors import UsageError
from .formats.keymap import COMPONENT_MODULES, key_map, split_lora_key
from .fsutil import display_path

log = logging.getLogger(__name__)

_DOWN = (".lora_down.weight", ".lora_A.weight", ".lora_A.default.weight", ".lora.down.weight", "_lora.down.weight",
         ".lora_linear_layer.down.weight")
_UP = (".lora_up.weight", ".lora_B.weight", ".lora_B.default.weight", ".lora.up.weight", "_lora.up.weight",
       ".lora_linear_layer.up.weight")
# Tensor-name endings of the LyCORIS algorithms we do not merge, with the name users know them by.
_UNSUPPORTED = (
    (("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"), "LoHa (LyCORIS)"),
    (("lokr_w1", "lokr_w2", "lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b", "lokr_t2"), "LoKr (LyCORIS)"),
    (("dora_scale",), "DoRA (weight-decomposed LoRA)"),
    (("oft_blocks", "oft_diag", "oft_R"), "OFT / BOFT (LyCORIS)"),
    (("lora_mid.weight",), "LoCon with CP/Tucker decomposition (LyCORIS lora_mid)"),
    (("a1.weight", "a2.weight", "b1.weight", "b2.weight"), "GLoRA (LyCORIS)"),
    (("diff", "diff_b"), "full weight difference (LyCORIS 'full')"),
    (("w_norm", "b_norm"), "norm-layer difference (LyCORIS)"),
)
_FLOATS = (torch.float32, torch.float16, torch.bfloat16)
_uids = itertools.count(1)


# ---------------------------------------------------------------- files

@dataclass(eq=False)
class LoraModule:
    """One module's LoRA pair as the file stores it: up [out, r(, 1, 1)], down [r, in(, kh, kw)]."""
    name: str          # the module's name in the file's own naming
    up: torch.Tensor
    down: torch.Tensor
    alpha: float = None
    _on: dict = field(default_factory=dict, repr=False)   # (device, transposed) -> (up, down)

    @property
    def rank(self):
        return self.down.shape[0]

    @property
    def scale(self):
        """alpha / rank; 1 without an alpha (alpha = rank), as A1111 and ComfyUI treat it."""
        return 1.0 if self.alpha is None else self.alpha / self.rank

    def pair(self, device, transposed=False):
        """(up, down) on `device`, for a [in, out]-stored weight as (down^T, up^T); cached."""
        cache = self._on
        key = (str(device), transposed)
        if key not in cache:
            up, down = self.up, self.down
            if transposed:
                up, down = down.reshape(self.rank, -1).t().contiguous(), up.reshape(up.shape[0], -1).t().contiguous()
            cache[key] = (up.to(device), down.to(device))
        return cache[key]


@dataclass
class Resolved:
    """A file's modules under one key map: canonical kohya key -> LoraModule, and the names no
    module of that model kind has."""
    modules: dict
    unmatched: list


@dataclass(eq=False)
class LoraFile:
    """A loaded LoRA file. `raw`: file module name -> LoraModule; `modules`: canonical kohya key ->
    LoraModule under the shipped architecture of `kind` (see `resolve` for another one)."""
    path: str
    label: str
    metadata: dict
    raw: dict
    other_keys: list        # tensors that are no part of an up/down/alpha set
    kind: str = None        # "sd15" | "sdxl" | None when the file does not tell
    ident: tuple = None     # what identifies its content: (path, mtime_ns, size) or a unique number
    _resolved: dict = field(default_factory=dict, repr=False)

    def resolve(self, keymap):
        """Resolved(modules, unmatched) of this file under `keymap` (cached per key map)."""
        got = self._resolved.get(id(keymap))
        if got is not None and got[0] is keymap:
            return got[1]
        modules, unmatched, by_key = {}, [], {}
        for name, module in self.raw.items():
            key = keymap.canonical(name)
            if key is None:
                unmatched.append(name)
                continue
            if key in modules:
                raise UsageError("%s: %s and %s name the same module (%s)" % (self.label, by_key[key], name, key))
            modules[key], by_key[key] = module, name
        result = Resolved(modules, unmatched)
        self._resolved[id(keymap)] = (keymap, result)
        return result

    @property
    def modules(self):
        if self.kind is None:
            raise UsageError("%s: cannot tell whether this is an SD1.5 or an SDXL LoRA; load it with kind='sd15' or "
                             "'sdxl'" % self.label)
        return self.resolve(key_map(self.kind)).modules


def _unsupported_algorithm(names):
    for name in names:
        for endings, algorithm in _UNSUPPORTED:
            for end in endings:
                if name.endswith("." + end):
                    return algorithm, name
    return None


def _role(suffix):
    if suffix in _DOWN:
        return "down"
    if suffix in _UP:
        return "up"
    if suffix == ".alpha":
        return "alpha"
    return None


def _guess_kind(metadata, shapes):
    """"sd15" / "sdxl" from metadata or telling names and shapes; None when nothing tells."""
    version = metadata.get("ss_base_model_version", "") + " " + metadata.get("modelspec.architecture", "")
    if "sdxl" in version or "stable-diffusion-xl" in version:
        return "sdxl"
    if "sd_v1" in version or "stable-diffusion-v1" in version:
        return "sd15"
    names = list(shapes)
    if any(n.startswith(("lora_te1_", "lora_te2_", "text_encoder_2.", "clip_g.", "text_encoders.clip_g."))
           for n in names):
        return "sdxl"
    for n, shape in shapes.items():
        if ("attn2_to_k" in n or "attn2.to_k" in n) and len(shape) == 2 and _role(split_lora_key(n)[1]) == "down":
            return {768: "sd15", 2048: "sdxl"}.get(shape[1])
    return None


def load_lora(source, kind=None, label=None):
    """A LoraFile from a .safetensors path or a state dict of tensors (no pickle is ever read).

    kind: "sd15" | "sdxl" for `LoraFile.modules`; detected from metadata, names and shapes when
    not given. UsageError for LyCORIS algorithms we do not merge (named), an up/down pair whose
    ranks differ, or a file that is not a LoRA."""
    if isinstance(source, Mapping):
        tensors, metadata, path = dict(source), {}, None
        label = label or "<state dict>"
        ident = ("memory", next(_uids))
    else:
        path = os.path.abspath(os.fspath(source))
        label = label or display_path(path)
        if not os.path.isfile(path):
            raise UsageError("LoRA file not found: %s" % label)
        if not path.lower().endswith(".safetensors"):
            raise UsageError("%s: only .safetensors LoRA files are read (a pickle file can run code)" % label)
        from safetensors import safe_open

        st = os.stat(path)
        ident = (path, st.st_mtime_ns, st.st_size)
        try:
            with safe_open(path, framework="pt", device="cpu") as f:
                metadata = dict(f.metadata() or {})
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as e:  # safetensors raises its own SafetensorError / OSError
            raise UsageError("%s: not a readable safetensors file (%s)" % (label, e)) from None
    bad = _unsupported_algorithm(tensors)
    if bad:
        raise UsageError("%s is a %s file (e.g. tensor %s): lora-native applies LoRA and LoCon only; load it with a "
                         "LyCORIS-aware loader" % (label, bad[0], bad[1]))
    groups, other = {}, []
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise UsageError("%s: %s is not a tensor" % (label, name))
        base, suffix = split_lora_key(name)
        role = _role(suffix)
        if role is None:
            other.append(name)
        else:
            groups.setdefault(base, {})[role] = (name, tensor)
    raw = {}
    for base, parts in groups.items():
        if "up" not in parts or "down" not in parts:
            other.extend(n for n, _ in parts.values())
            continue
        (up_name, up), (down_name, down) = parts["up"], parts["down"]
        if up.dim() not in (2, 4) or down.dim() not in (2, 4) or (up.dim() == 4 and tuple(up.shape[2:]) != (1, 1)):
            raise UsageError("%s: %s has shape %s and %s has %s: not a LoRA pair (up [out, r] or [out, r, 1, 1], "
                             "down [r, in] or [r, in, kh, kw])" % (label, up_name, tuple(up.shape), down_name,
                                                                  tuple(down.shape)))
        if up.shape[1] != down.shape[0]:
            raise UsageError("%s: rank mismatch in %s: %s is %s (rank %d) but %s is %s (rank %d)"
                             % (label, base, up_name, tuple(up.shape), up.shape[1], down_name, tuple(down.shape),
                                down.shape[0]))
        alpha = None
        if "alpha" in parts:
            a = parts["alpha"][1]
            if a.numel() != 1:
                raise UsageError("%s: %s must hold one number, has shape %s" % (label, parts["alpha"][0], tuple(a.shape)))
            alpha = float(a.reshape(()).float())
        raw[base] = LoraModule(base, _float(up), _float(down), alpha)
    if not raw:
        raise UsageError("%s holds no LoRA up/down pairs (%d tensors, e.g. %s)"
                         % (label, len(tensors), ", ".join(list(tensors)[:3]) or "none"))
    if kind is None:
        kind = _guess_kind(metadata, {k: tuple(v.shape) for k, v in tensors.items()})
    return LoraFile(path, label, metadata, raw, other, kind, ident)


def _float(t):
    # fp32/fp16/bf16 are merged as stored (merge_ accumulates in fp32); anything else as fp32.
    t = t if t.dtype in _FLOATS else t.float()
    return t.contiguous()


# ---------------------------------------------------------------- the model side

@dataclass(eq=False)
class _Target:
    """Where one kohya key's weight lives: `owner.leaf` (a module's parameter, or a dict entry),
    optionally a row block of it, optionally stored transposed."""
    key: str
    name: str
    owner: object
    leaf: str
    rows: tuple = None
    transposed: bool = False

    def tensor(self):
        # Looked up on every use: hosts move or replace parameters (model.to(device)).
        t = self.owner[self.leaf] if isinstance(self.owner, Mapping) else getattr(self.owner, self.leaf)
        t = t.detach()
        if self.rows is not None:
            t = t[self.rows[0]:self.rows[1]]
        return t

    def logical_shape(self, t=None):
        """The shape a LoRA delta for this module has: [out, in(, kh, kw)]."""
        t = self.tensor() if t is None else t
        return tuple(t.shape[::-1]) if self.transposed else tuple(t.shape)


_DIFFUSERS_COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


def _components(model):
    """{component name: module} when the model is diffusers components, else None."""
    if hasattr(model, "unet") and hasattr(model, "text_encoders"):   # our BaseModel
        comps = {"unet": model.unet}
        for name, encoder in zip(("text_encoder", "text_encoder_2"), model.text_encoders):
            comps[name] = encoder
        return comps
    if isinstance(model, Mapping) and model and any(k in _DIFFUSERS_COMPONENTS for k in model) and all(
            isinstance(v, torch.nn.Module) or v is None for v in model.values()):
        return {k: v for k, v in model.items() if v is not None}
    if isinstance(model, torch.nn.Module) and type(model).__name__ == "UNet2DConditionModel":
        return {"unet": model}
    return None


def _slots(model):
    """({flat parameter name: (owner, leaf)}, components or None) of any supported model form."""
    comps = _components(model)
    out = {}

    def add_module(prefix, module):
        for mod_name, mod in module.named_modules():
            for leaf, _ in mod.named_parameters(recurse=False):
                out[prefix + (mod_name + "." if mod_name else "") + leaf] = (mod, leaf)

    if comps is not None:
        for name, module in comps.items():
            add_module(name + ".", module)
    elif isinstance(model, Mapping):
        for name, value in model.items():
            if not isinstance(value, torch.Tensor):
                raise UsageError("the model dict mixes tensors and other things (%s is a %s): give diffusers "
                                 "components or a state dict" % (name, type(value).__name__))
            out[name] = (model, name)
    elif isinstance(model, torch.nn.Module):
        add_module("", model)
    elif isinstance(model, (list, tuple)) and all(isinstance(m, torch.nn.Module) for m in model):
        for module in model:   # e.g. ComfyUI's diffusion model and its CLIP: names do not collide
            add_module("", module)
    else:
        raise UsageError("cannot apply a LoRA to a %s: give diffusers components, a BaseModel, an nn.Module or a "
                         "state dict" % type(model).__name__)
    return out, comps


def _detect_kind(names, shape_of):
    if any(n.startswith(("text_encoder_2.", "conditioner.embedders.1.", "clip_g.", "unet.add_embedding.")) or
           n.startswith("label_emb.") or ".label_emb." in n for n in names):
        return "sdxl"
    for n in names:
        if n.endswith("attn2.to_k.weight"):
            width = shape_of(n)[1]
            if width in (768, 2048):
                return "sd15" if width == 768 else "sdxl"
    if any(n.startswith(("unet.", "model.diffusion_model.", "diffusion_model.", "cond_stage_model.", "text_encoder.",
                         "clip_l.", "conditioner.embedders.0.")) for n in names):
        return "sd15"
    raise UsageError("cannot tell whether this model is SD1.5 or SDXL from its parameter names; pass kind='sd15' or "
                     "'sdxl'")


def _json_safe(config):
    import json

    return json.loads(json.dumps(dict(config), default=str))


def _architecture(kind, model, comps):
    """The architecture that names the model's modules: our BaseModel's, the components' own
    configs, else the shipped one of `kind` (right for real single-file checkpoints)."""
    from .configs import load_architecture

    if getattr(model, "architecture", None) and hasattr(model, "text_encoders"):
        return model.architecture
    arch = load_architecture(kind)
    if comps is not None:
        if "unet" in comps and hasattr(comps["unet"], "config"):
            arch["unet"] = _json_safe(comps["unet"].config)
        for name in COMPONENT_MODULES.values():
            module = comps.get(name)
            if module is not None and hasattr(module, "config") and hasattr(module.config, "to_dict"):
                config = _json_safe(module.config.to_dict())
                config["_class_name"] = type(module).__name__
                arch[name] = config
    return arch


def _without_text_model(name):
    return name.replace(".text_model.", ".", 1) if ".text_model." in name else None


def _candidates(entry):
    """(flat name, rows, transposed) where a KeyEntry's weight may sit, in every supported layout."""
    component = "unet" if entry.component == "unet" else COMPONENT_MODULES[entry.component]
    path = entry.module_path
    out = [(component + "." + path + ".weight", None, False)]
    if component != "unet":   # the installed transformers may or may not have the text_model level
        other = path[len("text_model."):] if path.startswith("text_model.") else "text_model." + path
        out.append((component + "." + other + ".weight", None, False))
    out.append((entry.original_key, entry.original_rows, entry.original_transposed))
    out.append((entry.comfy_key, None, False))
    if component != "unet":
        for name, rows, transposed in list(out[-2:]):
            short = _without_text_model(name)
            if short:
                out.append((short, rows, transposed))
    return out


# ---------------------------------------------------------------- the stack

@dataclass
class ApplyReport:
    """What one `set` did. `entries`: (label, path, unet weight, te weight, modules applied) per
    file; `unmatched`: (label, name) of file keys that no module of this model takes."""
    entries: list = field(default_factory=list)
    unmatched: list = field(default_factory=list)
    touched: int = 0       # layers written (merged, restored or re-merged)
    unchanged: int = 0     # layers with LoRA terms that were left alone
    layers: int = 0        # layers that carry LoRA terms after this call

    @property
    def unmatched_count(self):
        return len(self.unmatched)


def _is_named_path(text):
    return os.sep in text or (os.altsep and os.altsep in text) or text.lower().endswith(".safetensors")


class LoraStack:
    """LoRA files merged into a model in place; `set` switches between lists of (file, weights).

    model: diffusers components / BaseModel / original-layout or ComfyUI-layout nn.Module / flat
    state dict (see the module docstring). kind: "sd15" | "sdxl", detected when None.
    architecture: the model's architecture dict when it is not the shipped full-size one and the
    model does not carry its configs (original-layout modules of non-standard sizes).
    mode: "backup" (exact) or "subtract" (no copies, bounded error; see the module docstring).
    backup_device: where backups live ("cpu" by default; None: the weight's own device).
    lora_dirs: folders searched (recursively) for `name.safetensors` when set() gets a bare name."""

    def __init__(self, model, kind=None, mode="backup", backup_device="cpu", lora_dirs=(), architecture=None,
                 cache_files=16):
        if mode not in ("backup", "subtract"):
            raise UsageError("mode must be 'backup' or 'subtract', got %r" % (mode,))
        self.model = model
        self.mode = mode
        self.backup_device = None if backup_device is None else torch.device(backup_device)
        self.lora_dirs = [os.fspath(d) for d in ([lora_dirs] if isinstance(lora_dirs, (str, os.PathLike))
                                                 else lora_dirs)]
        self.cache_files = cache_files
        slots, comps = _slots(model)

        def shape_of(name):
            owner, leaf = slots[name]
            return tuple((owner[leaf] if isinstance(owner, Mapping) else getattr(owner, leaf)).shape)

        if kind is not None and kind not in ("sd15", "sdxl"):
            raise UsageError("kind must be 'sd15' or 'sdxl', got %r" % (kind,))
        if kind is None and getattr(model, "kind", None) in _NAMES:   # our BaseModel knows its kind
            kind = model.kind
        self.kind = kind or _detect_kind(slots, shape_of)
        self.architecture = architecture or _architecture(self.kind, model, comps)
        self.keymap = key_map(self.kind, self.architecture)
        self.targets = {}
        for key, entry in self.keymap.entries.items():
            for name, rows, transposed in _candidates(entry):
                if name in slots:
                    owner, leaf = slots[name]
                    self.targets[key] = _Target(key, name, owner, leaf, rows, transposed)
                    break
        if not self.targets:
            raise UsageError("no LoRA-able weight of this model has a name the %s key map knows (e.g. %s)"
                             % (self.kind, ", ".join(list(slots)[:3])))
        self._applied = {}     # key -> {file ident: (LoraModule, scale)} merged now
        self._files = {}       # file ident -> LoraFile, for the files merged now
        self._backups = {}     # key -> the weight before any LoRA (backup mode)
        self._cache = OrderedDict()   # abs path -> LoraFile
        self._warned = set()
        self.last_touched = 0
        self.stats = {"sets": 0, "touched": 0, "loads": 0}
        self.report = ApplyReport()

    # ------------------------------------------------ files

    def _find(self, name):
        stems = {}
        for folder in self.lora_dirs:
            for root, dirs, files in os.walk(folder, followlinks=True):
                dirs.sort()
                for f in sorted(files):
                    if f.lower().endswith(".safetensors"):
                        stems.setdefault(f[: -len(".safetensors")], os.path.join(root, f))
        if name in stems:
            return stems[name]
        folded = [s for s in stems if s.lower() == name.lower()]
        if len(folded) == 1:
            return stems[folded[0]]
        close = difflib.get_close_matches(name, list(stems), n=5, cutoff=0.5)
        where = ", ".join(display_path(d) for d in self.lora_dirs) or "no lora_dirs given"
        hint = ("; close matches: %s" % ", ".join(close)) if close else (
            "; %d LoRA files there" % len(stems) if stems else "; no .safetensors files there")
        raise UsageError("no LoRA named %r (searched %s)%s" % (name, where, hint))

    def load(self, source):
        """The LoraFile for a LoraFile, state dict, path or name (cached by path and mtime)."""
        if isinstance(source, LoraFile):
            return source
        if isinstance(source, Mapping):
            return load_lora(source, kind=self.kind)
        if not isinstance(source, (str, os.PathLike)):
            raise UsageError("a LoRA must be a name, a path, a state dict or a LoraFile, got %s" % type(source).__name__)
        text = os.fspath(source)
        if os.path.isfile(text):
            path = os.path.abspath(text)
        elif _is_named_path(text) or not self.lora_dirs:
            raise UsageError("LoRA file not found: %s" % text)
        else:
            path = os.path.abspath(self._find(text))
        st = os.stat(path)
        got = self._cache.get(path)
        if got is not None and got.ident == (path, st.st_mtime_ns, st.st_size):
            self._cache.move_to_end(path)
            return got
        lora = load_lora(path, label=os.path.splitext(os.path.basename(path))[0])
        self.stats["loads"] += 1
        self._cache[path] = lora
        while len(self._cache) > max(1, self.cache_files):
            self._cache.popitem(last=False)
        return lora

    # ------------------------------------------------ planning

    def _entries(self, entries):
        out = []
        for item in entries:
            if isinstance(item, (str, os.PathLike, LoraFile, Mapping)):
                item = (item, 1.0)
            if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                raise UsageError("each LoRA entry is (name, weight) or (name, unet weight, te weight), got %r" % (item,))
            source, w_unet = item[0], float(item[1])
            w_te = float(item[2]) if len(item) == 3 else w_unet
            out.append((self.load(source), w_unet, w_te))
        return out

    def _check(self, lora, resolved):
        """UsageError naming the file and the first key whose shapes do not fit the model."""
        for key, module in resolved.modules.items():
            target = self.targets.get(key)
            if target is None:
                continue
            t = target.tensor()
            shape = target.logical_shape(t)
            up, down = module.up, module.down
            ok = up.shape[0] == shape[0] and down[0].numel() == _prod(shape[1:])
            # A conv down must have the weight's kernel; a 2-D down fits linears and 1x1 convs only.
            if ok and down.dim() == 4:
                ok = tuple(down.shape[1:]) == shape[1:] if len(shape) == 4 else tuple(down.shape[2:]) == (1, 1)
            elif ok and len(shape) == 4:
                ok = tuple(shape[2:]) == (1, 1)
            if ok and target.transposed and (up.dim() != 2 or down.dim() != 2):
                ok = False
            if not ok:
                hint = ""
                if lora.kind and lora.kind != self.kind:
                    hint = " (the file is an %s LoRA, the model %s)" % (_NAMES[lora.kind], _NAMES[self.kind])
                raise UsageError("%s does not fit this %s model%s: %s has up %s / down %s but the weight %s is %s"
                                 % (lora.label, _NAMES[self.kind], hint, module.name, tuple(up.shape),
                                    tuple(down.shape), target.name, shape))
            if not t.is_contiguous():
                raise UsageError("the weight %s is not contiguous and cannot be merged in place" % target.name)
            if t.dtype not in _FLOATS:
                raise UsageError("the weight %s is %s: LoRA merges into float32/float16/bfloat16 weights"
                                 % (target.name, t.dtype))

    def _plan(self, files, report):
        plan = {}
        for lora, w_unet, w_te in files:
            resolved = lora.resolve(self.keymap)
            self._check(lora, resolved)
            missing = [key for key in resolved.modules if key not in self.targets]
            unmatched = resolved.unmatched + [resolved.modules[k].name for k in missing] + lora.other_keys
            report.unmatched.extend((lora.label, n) for n in unmatched)
            if unmatched and lora.ident not in self._warned:
                self._warned.add(lora.ident)
                msg = ("%s: %d of its keys match no weight of this %s model and are ignored (e.g. %s)"
                       % (lora.label, len(unmatched), _NAMES[self.kind], ", ".join(unmatched[:3])))
                warnings.warn(msg, stacklevel=3)
                log.warning(msg)
            applied = 0
            for key, module in resolved.modules.items():
                if key not in self.targets:
                    continue
                weight = w_unet if self.keymap.entries[key].component == "unet" else w_te
                terms = plan.setdefault(key, {})
                old = terms.get(lora.ident, (module, 0.0))[1]
                terms[lora.ident] = (module, old + weight * module.scale)   # the same file twice adds up
                applied += 1
            report.entries.append((lora.label, lora.path, w_unet, w_te, applied))
        # A zero total scale is no term: the layer is as without that file.
        return {k: {i: t for i, t in terms.items() if t[1] != 0.0} for k, terms in plan.items()}

    # ------------------------------------------------ merging

    @staticmethod
    def _signature(terms):
        return tuple(sorted((ident, scale) for ident, (_, scale) in terms.items()))

    @staticmethod
    def _merge_terms(target, t, terms):
        # Sorted by file identity: the same set of files gives the same bits in any order.
        return [pair + (scale,) for _, (pair, scale) in sorted(
            ((ident, (module.pair(t.device, target.transposed), scale)) for ident, (module, scale) in terms.items()),
            key=lambda x: x[0])]

    def _write(self, key, old, new):
        target = self.targets[key]
        t = target.tensor()
        if self.mode == "subtract":
            diff = {}
            for ident in set(old) | set(new):
                module = (new.get(ident) or old.get(ident))[0]
                d = new.get(ident, (module, 0.0))[1] - old.get(ident, (module, 0.0))[1]
                if d != 0.0:
                    diff[ident] = (module, d)
            if diff:
                ops.merge_(t, self._merge_terms(target, t, diff))
            return False
        backup = self._backups.get(key)
        if backup is not None:
            if backup.device == t.device and t.is_contiguous():
                ops.copy_(t, backup)
            else:
                t.copy_(backup, non_blocking=True)
            if not new:
                del self._backups[key]   # back to the original: nothing left to restore
                return False
            ops.merge_(t, self._merge_terms(target, t, new))
            return False
        if not new:
            return False
        device = self.backup_device or t.device
        if device == t.device:
            backup = torch.empty_like(t, memory_format=torch.contiguous_format)
            ops.merge_(t, self._merge_terms(target, t, new), backup=backup)   # saved in the same pass
            async_copy = False
        else:
            # merge_ wants its backup on the weight's device: copy first (pinned, so the copy is
            # asynchronous and ordered before the merge on the same stream).
            pin = t.device.type == "cuda" and device.type == "cpu"
            backup = torch.empty(t.shape, dtype=t.dtype, device=device, pin_memory=pin)
            backup.copy_(t, non_blocking=pin)
            ops.merge_(t, self._merge_terms(target, t, new))
            async_copy = pin
        self._backups[key] = backup
        return async_copy

    def set(self, entries):
        """Merge exactly these LoRAs: entries of (name|path|LoraFile|state dict, weight) or
        (..., unet weight, te weight); the same file twice adds its weights. Only layers whose
        (file, scale) terms change are written. A file is known by path, mtime and size; a raw
        state dict is a new file on every call (load it once with load_lora to switch cheaply). Returns (and keeps as `self.report`) an ApplyReport."""
        report = ApplyReport()
        files = self._entries(entries)
        plan = self._plan(files, report)   # every check before the first write: an error changes nothing
        keys = sorted(set(plan) | set(self._applied))
        changed = [k for k in keys if self._signature(plan.get(k, {})) != self._signature(self._applied.get(k, {}))]
        devices = set()
        with torch.no_grad():
            for key in changed:
                if self._write(key, self._applied.get(key, {}), plan.get(key, {})):
                    devices.add(self.targets[key].tensor().device)
            for device in devices:   # backups are complete before anyone reads or frees them
                torch.cuda.current_stream(device).synchronize()
        self._applied = {k: v for k, v in plan.items() if v}
        self._files = {lora.ident: lora for lora, _, _ in files}
        report.touched = len(changed)
        report.layers = len(self._applied)
        changed_set = set(changed)
        report.unchanged = len([k for k in self._applied if k not in changed_set])
        self.last_touched = len(changed)
        self.stats["sets"] += 1
        self.stats["touched"] += len(changed)
        self.report = report
        return report

    def clear(self):
        """Take every LoRA out: the original weights bit for bit (backup mode), or within the
        subtract-mode bound."""
        return self.set([])

    def memory(self):
        """Bytes held by backups of original weights."""
        return sum(b.numel() * b.element_size() for b in self._backups.values())

    @property
    def backup_bytes(self):
        return self.memory()

    @property
    def applied(self):
        """{kohya key: ((file ident, scale), ...)} of what is merged now."""
        return {k: self._signature(v) for k, v in self._applied.items()}


_NAMES = {"sd15": "SD1.5", "sdxl": "SDXL"}


def _prod(shape):
    n = 1
    for d in shape:
        n *= d
    return n


# ---------------------------------------------------------------- kohya names for other loaders

_KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_", "lora_prior_unet_")


def is_kohya_named(tensors):
    """True when every LoRA tensor already has a kohya name (what A1111/ComfyUI loaders read)."""
    names = [k for k in tensors if _role(split_lora_key(k)[1]) is not None]
    return bool(names) and all(k.startswith(_KOHYA_PREFIXES) for k in names)


def kohya_state_dict(source, kind=None):
    """(state dict with kohya names, [file names no module has]) for a kohya, ComfyUI-native or
    diffusers/PEFT LoRA: for loaders that only read kohya names (ComfyUI's load_lora_for_models).
    kind: "sd15" | "sdxl"; when neither the argument nor the file tells, the one that names
    more of the file's modules is taken."""
    lora = source if isinstance(source, LoraFile) else load_lora(source, kind=kind)
    kinds = [kind or lora.kind] if (kind or lora.kind) else ["sd15", "sdxl"]
    best = None
    for k in kinds:
        resolved = lora.resolve(key_map(k))
        if best is None or len(resolved.modules) > len(best.modules):
            best = resolved
    out = {}
    for key, module in best.modules.items():
        out[key + ".lora_down.weight"] = module.down
        out[key + ".lora_up.weight"] = module.up
        if module.alpha is not None:
            out[key + ".alpha"] = torch.tensor(float(module.alpha))
    return out, list(best.unmatched)
