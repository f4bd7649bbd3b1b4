"""The one LoRA key map: module <-> kohya key name, used by export, apply and every host.

Facts *(field: sd-scripts networks/lora.py, A1111 extensions-builtin/Lora/networks.py,
ComfyUI comfy/lora.py)*:
- Targets: UNet, every Linear and 1x1 Conv2d inside a Transformer2DModel; with conv_dim also the
  3x3 convs of ResnetBlock2D / Downsample2D / Upsample2D, and (at the linear rank) their Linear
  `time_emb_proj` and 1x1 `conv_shortcut`. Text encoders: `self_attn.{q,k,v,out}_proj`,
  `mlp.fc1`, `mlp.fc2` of every CLIP layer.
- Key = prefix + "_" + module path with "." -> "_". Prefixes `lora_unet`, `lora_te` (SD1.x),
  `lora_te1` / `lora_te2` (SDXL). SD1.x UNet paths are diffusers names
  (`lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q`); SDXL UNet paths are
  the original LDM names, as sd-scripts' SDXL UNet has them
  (`lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`). Text-encoder paths always
  read `text_model_encoder_layers_N_...`, whatever level transformers builds (5.x drops
  `text_model.` from CLIPTextModel).
- Readers accept both UNet namings for both kinds (ComfyUI maps every `lora_unet_<ldm path>` and
  every `lora_unet_<diffusers path>`; A1111 converts diffusers names to LDM ones and takes LDM
  names as they are), `lora_te1_` for SD1's single encoder, ComfyUI's native names
  (`diffusion_model.<ldm path>`, `text_encoders.clip_l.transformer.<hf path>`, `clip_g` for
  SDXL's second) and diffusers / PEFT names (`unet.<diffusers path>`, `text_encoder.<hf path>`,
  `text_encoder_2.<hf path>`, the old `...attn1.processor.to_q_lora` form).
- ComfyUI holds the UNet as `diffusion_model.<ldm path>` and the text encoders in the
  transformers layout as `clip_l.transformer.text_model...` / `clip_g.transformer.text_model...`
  (KeyEntry.comfy_key), whatever the checkpoint's layout.
- On original-layout weights (the single file, and A1111's modules) a kohya key lands on
  `model.diffusion_model.<ldm path>.weight`, the CLIP-L keys on
  `cond_stage_model.transformer.text_model...` (SD1) / `conditioner.embedders.0.transformer...`
  (SDXL), and SDXL's `lora_te2_` keys on OpenCLIP's `conditioner.embedders.1.model.transformer.
  resblocks.N`: q/k/v are row blocks 0/1/2 of the fused `attn.in_proj_weight`, out_proj is
  `attn.out_proj`, fc1/fc2 are `mlp.c_fc` / `mlp.c_proj`.
"""
import json
import re
from dataclasses import dataclass
from typing import Any, Optional

from . import ldm

PREFIXES = {"sd15": {"unet": "lora_unet", "te1": "lora_te"},
            "sdxl": {"unet": "lora_unet", "te1": "lora_te1", "te2": "lora_te2"}}
COMPONENT_MODULES = {"te1": "text_encoder", "te2": "text_encoder_2"}  # our names -> architecture names
UNET_TARGET_BLOCKS = ("Transformer2DModel",)
UNET_CONV_BLOCKS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
_TE_TARGET = re.compile(r"(?:^|\.)encoder\.layers\.\d+\.(?:self_attn\.(?:q|k|v|out)_proj|mlp\.fc[12])$")

# Suffixes of the tensors LoRA formats store per module, longest first where one ends another.
LORA_SUFFIXES = (
    ".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight",
    ".lora_down.weight", ".lora_up.weight", ".lora_mid.weight",
    ".lora_A.default.weight", ".lora_B.default.weight",
    ".lora_A.weight", ".lora_B.weight", ".lora.down.weight", ".lora.up.weight",
    "_lora.down.weight", "_lora.up.weight",
    ".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b", ".hada_t1", ".hada_t2",
    ".lokr_w1", ".lokr_w2", ".lokr_w1_a", ".lokr_w1_b", ".lokr_w2_a", ".lokr_w2_b", ".lokr_t2",
    ".dora_scale", ".diff_b", ".diff", ".alpha",
)


@dataclass(eq=False)
class LoraTarget:
    """One module LoRA trains, with the name every file and host knows it by."""
    key: str            # kohya name without suffix: lora_unet_..., lora_te_..., lora_te1_..., lora_te2_...
    module: Any         # the torch.nn.Linear / torch.nn.Conv2d
    module_path: str    # its path inside the loaded component (diffusers / installed transformers)
    component: str      # "unet" | "te1" | "te2"
    kind: str           # "linear" | "conv1x1" | "conv3x3"


@dataclass(frozen=True)
class KeyEntry:
    """Where a kohya key lives: the module in the diffusers/transformers model and the weight in
    the original (single-file) layout; `original_rows` is the (start, stop) row block of a fused
    q/k/v weight (SDXL OpenCLIP), else None; `original_transposed`: the original weight is stored
    [in, out] (OpenCLIP's `text_projection`), so a delta lands on it transposed."""
    key: str
    component: str
    module_path: str
    kind: str
    original_key: str
    original_rows: Optional[tuple] = None
    comfy_key: str = ""   # ComfyUI's in-memory weight: diffusion_model.<ldm>, clip_l/clip_g.transformer.<hf>
    original_transposed: bool = False


def _module_kind(module):
    import torch

    if isinstance(module, torch.nn.Linear):
        return "linear"
    if isinstance(module, torch.nn.Conv2d):
        return "conv1x1" if tuple(module.kernel_size) == (1, 1) else "conv3x3"
    return None


def _unet_key_path(kind, path, unet_config):
    if kind == "sdxl":
        original = ldm.unet_module_to_original(path, unet_config)
        if original is None:
            raise ValueError("UNet module %s has no original-layout name" % path)
        return original
    return path


def kohya_key(kind, component, module_path, unet_config=None):
    """The kohya name of a module: component "unet" | "te1" | "te2", path in the loaded model."""
    prefix = PREFIXES[kind][component]
    if component == "unet":
        path = _unet_key_path(kind, module_path, unet_config)
    else:
        path = ldm.with_text_model(module_path)
    return prefix + "_" + path.replace(".", "_")


def _unet_targets(unet, conv_dim):
    seen = set()
    out = []
    for block_path, block in unet.named_modules():
        name = type(block).__name__
        conv_block = name in UNET_CONV_BLOCKS
        if name not in UNET_TARGET_BLOCKS and not (conv_dim and conv_block):
            continue
        for child_path, child in block.named_modules():
            kind = _module_kind(child)
            if kind is None or not child_path:
                continue
            path = block_path + "." + child_path
            if path in seen:
                continue
            seen.add(path)
            out.append((path, child, kind))
    return out


def lora_targets(base, conv_dim=False, unet=True, text_encoder=True):
    """The modules LoRA trains in a BaseModel (see the module's facts), in model order.

    conv_dim: also the ResnetBlock2D / Downsample2D / Upsample2D convs (a truthy rank or True)."""
    kind = base.kind
    targets = []
    if unet:
        unet_config = base.architecture["unet"]
        for path, module, mkind in _unet_targets(base.unet, bool(conv_dim)):
            targets.append(LoraTarget(kohya_key(kind, "unet", path, unet_config), module, path, "unet", mkind))
    if text_encoder:
        for component, encoder in zip(("te1", "te2"), base.text_encoders):
            for path, module in encoder.named_modules():
                if _TE_TARGET.search(path) and _module_kind(module) == "linear":
                    targets.append(LoraTarget(kohya_key(kind, component, path), module, path, component, "linear"))
    return targets


# ---------------------------------------------------------------- the reverse map

class KeyMap:
    """Every kohya key of a model kind (all Linear / Conv2d modules of the UNet and text
    encoders, not only the default targets) and the other names LoRA files use for them."""

    def __init__(self, kind, architecture):
        from ..train.model import build_components

        self.kind = kind
        self.architecture = architecture
        self.entries = {}   # canonical kohya key -> KeyEntry
        self.aliases = {}   # any accepted name (no suffix) -> canonical kohya key
        modules = build_components(architecture, "meta")
        unet_config = architecture["unet"]
        for path, module in modules["unet"].named_modules():
            mkind = _module_kind(module)
            if mkind is None:
                continue
            ldm_path = ldm.unet_module_to_original(path, unet_config)
            if ldm_path is None:
                continue
            key = kohya_key(kind, "unet", path, unet_config)
            self.entries[key] = KeyEntry(key, "unet", path, mkind, ldm.UNET_PREFIX + ldm_path + ".weight",
                                         comfy_key="diffusion_model." + ldm_path + ".weight")
            for alias in ("lora_unet_" + path.replace(".", "_"), "lora_unet_" + ldm_path.replace(".", "_"),
                          "lycoris_" + path.replace(".", "_"), "diffusion_model." + ldm_path, "unet." + path, path):
                self.aliases.setdefault(alias, key)
        for component, name in COMPONENT_MODULES.items():
            if name not in modules:
                continue
            for path, module in modules[name].named_modules():
                if _module_kind(module) != "linear":
                    continue
                key = kohya_key(kind, component, path)
                hf = ldm.with_text_model(path)
                got = ldm.text_encoder_weight_to_original(name, path, kind)
                if got is None:
                    continue
                original, row, op = got
                rows = None
                if row is not None:
                    width = module.weight.shape[0]
                    rows = (row * width, (row + 1) * width)
                comfy = "clip_g" if component == "te2" else "clip_l"
                self.entries[key] = KeyEntry(key, component, path, "linear", original, rows,
                                             "%s.transformer.%s.weight" % (comfy, hf), op == "transpose")
                names = [name + "." + hf, "text_encoders.%s.transformer.%s" % (comfy, hf)]
                if kind == "sd15":
                    names.append("lora_te1_" + hf.replace(".", "_"))
                for alias in names:
                    self.aliases.setdefault(alias, key)

    def canonical(self, name):
        """The canonical kohya key for a module name in any supported naming (no suffix), or None."""
        if name in self.entries:
            return name
        for prefix in ("base_model.model.",):
            if name.startswith(prefix):
                name = name[len(prefix):]
        if ".processor." in name:  # old diffusers attention-processor LoRA: attn1.processor.to_q(_lora)
            name = name.replace(".processor.", ".")
            if name.endswith("_lora"):
                name = name[: -len("_lora")]
            if name.endswith(".to_out"):
                name += ".0"
        return self.aliases.get(name)

    def lookup(self, name):
        """The KeyEntry of a module name in any supported naming, or None."""
        key = self.canonical(name)
        return None if key is None else self.entries[key]


_keymaps = {}


def key_map(kind, architecture=None):
    """The KeyMap of a kind; architecture defaults to the shipped full-size one (cached)."""
    from ..configs import load_architecture

    architecture = architecture or load_architecture(kind)
    cache_key = (kind, json.dumps({k: architecture[k] for k in ("unet",) + tuple(COMPONENT_MODULES.values()) if k in architecture},
                                  sort_keys=True))
    if cache_key not in _keymaps:
        _keymaps[cache_key] = KeyMap(kind, architecture)
    return _keymaps[cache_key]


def split_lora_key(full_key):
    """(module name, suffix) of a tensor name in a LoRA file; suffix "" when none is known."""
    for suffix in LORA_SUFFIXES:
        if full_key.endswith(suffix):
            return full_key[: -len(suffix)], suffix
    return full_key, ""


def normalize_lora_key(name, kind, architecture=None):
    """The canonical kohya key for a module name from a kohya, ComfyUI-native or diffusers/PEFT
    file (no suffix; see split_lora_key), or None if no module of the model has that name."""
    return key_map(kind, architecture).canonical(name)


def kohya_key_to_module_path(key, kind, architecture=None):
    """(component "unet"|"te1"|"te2", module path in the loaded model) of a key in any naming."""
    entry = key_map(kind, architecture).lookup(key)
    if entry is None:
        raise KeyError("no %s module is named %s" % (kind, key))
    return entry.component, entry.module_path


def kohya_key_to_original(key, kind, architecture=None):
    """(original-layout weight name, row block or None) a key lands on in a single-file model."""
    entry = key_map(kind, architecture).lookup(key)
    if entry is None:
        raise KeyError("no %s module is named %s" % (kind, key))
    return entry.original_key, entry.original_rows
