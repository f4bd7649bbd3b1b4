"""Recognise LoRA files of every common format from their tensor names (no weights read):
kohya (and LoCon), ComfyUI-native, diffusers/PEFT, and LyCORIS variants we only describe."""
import re
from dataclasses import dataclass, field

from .header import read_header

KOHYA_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")
_KOHYA_RE = re.compile(r"^(lora_(?:unet|te|te1|te2)_[A-Za-z0-9_]+)\.(lora_down\.weight|lora_up\.weight|alpha)$")
_COMFY_RE = re.compile(r"^((?:diffusion_model|text_encoders\.[A-Za-z0-9_]+|clip_[lg])\.[A-Za-z0-9_.]+?)\."
                       r"(lora_up\.weight|lora_down\.weight|lora_A\.weight|lora_B\.weight|alpha)$")
_PEFT_RE = re.compile(r"^((?:unet|text_encoder|text_encoder_2|transformer|base_model\.model)\.[A-Za-z0-9_.]+?)\."
                      r"(lora_A\.weight|lora_B\.weight|lora\.down\.weight|lora\.up\.weight|alpha)$")
_LYCORIS_SUFFIXES = ("hada_w1_a", "hada_w1_b", "lokr_w1", "lokr_w2", "oft_blocks", "dora_scale")


@dataclass
class LoraModuleInfo:
    name: str           # the module's name in the file's own naming
    component: str      # unet, te, te1, te2
    rank: int
    alpha: float = None
    kind: str = "linear"  # linear, conv1x1, conv3x3
    shapes: dict = field(default_factory=dict)


@dataclass
class LoraFileInfo:
    path: str
    format: str          # kohya, comfyui, diffusers-peft, lycoris, unknown
    locon: bool
    base_model: str      # sd15, sdxl, sd2, unknown
    base_model_source: str
    modules: list
    metadata: dict
    other_keys: list     # tensors that belong to no recognised LoRA module

    def component_counts(self):
        counts = {}
        for m in self.modules:
            counts[m.component] = counts.get(m.component, 0) + 1
        return counts


def _component(name):
    if name.startswith(("lora_unet_", "diffusion_model.", "unet.", "base_model.model.", "transformer.")):
        return "unet"
    for c in ("te1", "te2"):
        if name.startswith("lora_%s_" % c):
            return c
    if name.startswith("text_encoder_2.") or ".clip_g." in name or name.startswith("clip_g."):
        return "te2"
    if name.startswith(("lora_te_", "text_encoder.", "text_encoders.", "clip_l.")):
        return "te"
    return "unknown"


def _kind(shape):
    if len(shape) == 4:
        return "conv3x3" if tuple(shape[2:]) != (1, 1) else "conv1x1"
    return "linear"


def describe(path):
    """LoraFileInfo for a .safetensors LoRA file."""
    header = read_header(path)
    tensors, meta = header.tensors, header.metadata
    names = list(tensors)
    if any(n.split(".")[-2] in _LYCORIS_SUFFIXES or n.split(".")[-1] in _LYCORIS_SUFFIXES for n in names
           if "." in n):
        fmt = "lycoris"
    elif any(n.startswith(KOHYA_PREFIXES) for n in names):
        fmt = "kohya"
    elif any(_COMFY_RE.match(n) for n in names):
        fmt = "comfyui"
    elif any(_PEFT_RE.match(n) for n in names):
        fmt = "diffusers-peft"
    else:
        fmt = "unknown"
    regex = {"kohya": _KOHYA_RE, "comfyui": _COMFY_RE, "diffusers-peft": _PEFT_RE}.get(fmt)
    parts, other = {}, []
    for n in names:
        m = regex.match(n) if regex else None
        if not m:
            other.append(n)
            continue
        parts.setdefault(m.group(1), {})[m.group(2)] = tensors[n][1]
    modules = []
    for name, p in sorted(parts.items()):
        down = p.get("lora_down.weight") or p.get("lora_A.weight") or p.get("lora.down.weight")
        if down is None:
            other.extend("%s.%s" % (name, k) for k in p)
            continue
        modules.append(LoraModuleInfo(name=name, component=_component(name), rank=int(down[0]), kind=_kind(down),
                                      shapes=p))
    base, source = _base_model(meta, modules, tensors)
    info = LoraFileInfo(path=path, format=fmt, locon=any(m.kind == "conv3x3" for m in modules), base_model=base,
                        base_model_source=source, modules=modules, metadata=meta, other_keys=other)
    return info


def _base_model(meta, modules, tensors):
    version = meta.get("ss_base_model_version", "")
    if version.startswith("sdxl"):
        return "sdxl", "ss_base_model_version=%s" % version
    if version.startswith("sd_v1"):
        return "sd15", "ss_base_model_version=%s" % version
    if version.startswith("sd_v2"):
        return "sd2", "ss_base_model_version=%s" % version
    arch = meta.get("modelspec.architecture", "")
    if arch.startswith("stable-diffusion-xl"):
        return "sdxl", "modelspec.architecture=%s" % arch
    if arch.startswith("stable-diffusion-v1"):
        return "sd15", "modelspec.architecture=%s" % arch
    if any(m.component in ("te1", "te2") for m in modules):
        return "sdxl", "two text encoders"
    # Cross-attention key/value input width: 768 SD1, 1024 SD2, 2048 SDXL.
    for m in modules:
        if m.component == "unet" and ("attn2_to_k" in m.name or "attn2.to_k" in m.name):
            width = m.shapes.get("lora_down.weight", m.shapes.get("lora_A.weight", (0, 0)))[1]
            found = {768: "sd15", 1024: "sd2", 2048: "sdxl"}.get(width)
            if found:
                return found, "cross-attention width %d" % width
    return "unknown", "no metadata and no telling shape"
