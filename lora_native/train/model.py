"""Base models (SD1.5, SDXL) from the files users have, offline.

Two sources: a single-file `.safetensors` checkpoint in the original (LDM) layout, loaded into
modules built from our shipped configs (`lora_native/configs/`) through our converter
(`formats/ldm.py`); and a diffusers folder (`model_index.json`, `unet/`, `vae/`, ...), built
from its own configs. Nothing is fetched from a hub. Modules are created on the `meta` device and
the tensors, read one by one, are assigned into them, so a 7 GB checkpoint is never held twice.

A single file may carry its own architecture in the metadata key `lora_native.architecture`
(JSON, same shape as the shipped configs): the tiny test/demo models do.
"""
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

from ..configs import load_architecture, text_encoder_names
from ..errors import ModelError
from ..formats import ldm
from ..formats.header import HeaderError, read_header
from ..fsutil import display_path
from .tokenizer import load_tokenizers

ARCHITECTURE_KEY = "lora_native.architecture"
PICKLE_EXTENSIONS = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
LORA_MARKERS = (".lora_down.", ".lora_up.", ".lora_A.", ".lora_B.", ".hada_w1_a", ".lokr_w1", ".oft_blocks",
                "lora_linear_layer.", ".lora.down.", "_lora.down.")
_UNET_CONV_IN = ldm.UNET_PREFIX + "input_blocks.0.0.weight"


@dataclass
class BaseModel:
    """A loaded base model. All modules are frozen (requires_grad False) and in eval mode."""
    kind: str                      # "sd15" | "sdxl"
    unet: Any                      # diffusers UNet2DConditionModel
    vae: Any                       # diffusers AutoencoderKL
    text_encoders: list            # [CLIPTextModel] or [CLIPTextModel, CLIPTextModelWithProjection]
    tokenizers: list               # one CLIPTokenizer per text encoder (SDXL's second pads with "!")
    scaling_factor: float          # latent scale: 0.18215 (SD1) / 0.13025 (SDXL)
    prediction_type: str           # "epsilon" | "v_prediction"
    noise_scheduler_config: dict   # DDPMScheduler config (scaled_linear 0.00085 -> 0.012, 1000 steps)
    source: str                    # the file or folder it came from
    architecture: dict             # {"kind", "unet", "vae", "text_encoder"(, "text_encoder_2"), "scheduler"}
    ignored_keys: list = field(default_factory=list)     # known extras of the file, skipped on purpose
    unexpected_keys: list = field(default_factory=list)  # keys no component takes (also warned about)

    @property
    def text_encoder_names(self):
        return text_encoder_names(self.architecture)

    def noise_scheduler(self):
        """A fresh diffusers DDPMScheduler for training."""
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_config(self.noise_scheduler_config)


# ---------------------------------------------------------------- building modules

def _text_encoder_class(name, component):
    import transformers

    name = name or ("CLIPTextModelWithProjection" if component == "text_encoder_2" else "CLIPTextModel")
    if name not in ("CLIPTextModel", "CLIPTextModelWithProjection"):
        raise ModelError("unsupported text encoder class %r" % name)
    return getattr(transformers, name)


def _text_config(config):
    from transformers import CLIPTextConfig

    clean = {k: v for k, v in config.items() if not k.startswith("_") and k != "architectures"}
    return CLIPTextConfig.from_dict(clean)


def build_components(architecture, device="meta"):
    """{component name: module} built from an architecture dict; on `meta` nothing is allocated."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    with torch.device(device):
        out = {"unet": UNet2DConditionModel.from_config(architecture["unet"]),
               "vae": AutoencoderKL.from_config(architecture["vae"])}
        for name in text_encoder_names(architecture):
            config = architecture[name]
            out[name] = _text_encoder_class(config.get("_class_name"), name)(_text_config(config))
    return out


def empty_base_model(kind, architecture=None, device="meta"):
    """A BaseModel of `kind` with unloaded modules (on `meta`: no memory) and no tokenizers: for
    key maps, target counts and shapes without reading any weights."""
    arch = architecture or load_architecture(kind)
    arch["kind"] = kind
    modules = build_components(arch, device)
    names = text_encoder_names(arch)
    return BaseModel(kind=kind, unet=modules["unet"], vae=modules["vae"], text_encoders=[modules[n] for n in names],
                     tokenizers=[], scaling_factor=float(arch["vae"]["scaling_factor"]),
                     prediction_type=arch["scheduler"].get("prediction_type", "epsilon"),
                     noise_scheduler_config=dict(arch["scheduler"]), source="", architecture=arch)


def _fit_keys(module, state_dict):
    """Adapt text-encoder keys to the installed transformers: 5.x builds CLIPTextModel without the
    `text_model.` level that files (and 4.x) have."""
    own = set(module.state_dict().keys())
    out = {}
    for k, v in state_dict.items():
        if k not in own:
            if k.startswith("text_model.") and k[len("text_model."):] in own:
                k = k[len("text_model."):]
            elif "text_model." + k in own:
                k = "text_model." + k
        out[k] = v
    return out


def _materialise_buffers(module, device):
    """Non-persistent buffers are not in any file: recreate the known ones (CLIP's position_ids)."""
    import torch

    for name, buf in list(module.named_buffers()):
        if buf.device.type != "meta":
            continue
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name) if owner_name else module
        if leaf == "position_ids":
            value = torch.arange(buf.shape[-1], device=device).expand(buf.shape)
        else:
            raise ModelError("cannot recreate the buffer %s of %s" % (name, type(module).__name__))
        owner.register_buffer(leaf, value, persistent=False)


def _load_into(module, state_dict, component, source):
    state_dict = _fit_keys(module, state_dict)
    try:
        result = module.load_state_dict(state_dict, strict=False, assign=True)
    except RuntimeError as e:
        raise ModelError("%s: the %s weights do not fit its architecture: %s"
                         % (display_path(source), component, str(e).strip().splitlines()[-1].strip()), source) from None
    if result.missing_keys or result.unexpected_keys:
        parts = []
        if result.missing_keys:
            parts.append("%d missing (e.g. %s)" % (len(result.missing_keys), ", ".join(result.missing_keys[:3])))
        if result.unexpected_keys:
            parts.append("%d not in the model (e.g. %s)" % (len(result.unexpected_keys), ", ".join(result.unexpected_keys[:3])))
        raise ModelError("%s: the %s weights do not match its architecture: %s"
                         % (display_path(source), component, "; ".join(parts)), source)
    left = [n for n, p in module.named_parameters() if p.device.type == "meta"]
    if left:
        raise ModelError("%s: the %s has no weights for %s" % (display_path(source), component, ", ".join(left[:3])), source)


def _finish(module, device):
    _materialise_buffers(module, device)
    module.requires_grad_(False)
    module.eval()
    return module


# ---------------------------------------------------------------- detection

@dataclass
class ModelInfo:
    """What a path holds: the kind, the layout, and for single files the parsed header."""
    kind: str
    layout: str                 # "single_file" | "diffusers"
    path: str
    header: Any = None          # formats.header.SafetensorsHeader for single files
    architecture: dict = None   # from the file's metadata / the folder's configs; None: shipped config


def _refuse_pickle(path):
    return ModelError(
        "%s is a pickle checkpoint (%s): loading one runs whatever code it contains, so lora-native reads only "
        ".safetensors. Use the .safetensors release of this model, or convert it once with a tool you trust."
        % (display_path(path), os.path.splitext(path)[1] or "no extension"), path)


def _unsupported(path, what):
    return ModelError("%s is %s: lora-native trains SD1.5 and SDXL only" % (display_path(path), what), path)


def _refiner(path):
    return ModelError("%s is the SDXL refiner: LoRAs are trained on the SDXL base model" % display_path(path), path)


def _is_lora(keys, metadata):
    if any(k.startswith("ss_network") for k in metadata):
        return True
    hits = [k for k in keys if k.startswith(("lora_unet_", "lora_te", "lycoris_")) or any(m in k for m in LORA_MARKERS)]
    return len(hits) * 2 >= len(keys) > 0


def _first(keys, suffix, prefix=""):
    for k in keys:
        if k.startswith(prefix) and k.endswith(suffix):
            return k
    return None


def _classify_header(header):
    """The kind of an original-layout checkpoint from its keys and shapes; ModelError otherwise."""
    path, keys, meta = header.path, header.tensors, header.metadata
    shown = display_path(path)
    if not keys:
        raise ModelError("%s holds no tensors" % shown, path)
    if _is_lora(keys, meta):
        raise ModelError("%s is a LoRA file, not a base model: give it as network_weights to continue training "
                         "it, or apply it in your UI; base_model must be a full SD1.5/SDXL checkpoint" % shown, path)
    if ARCHITECTURE_KEY in meta:
        try:
            arch = json.loads(meta[ARCHITECTURE_KEY])
            kind = arch["kind"]
        except (ValueError, KeyError, TypeError) as e:
            raise ModelError("%s: unreadable %s metadata: %s" % (shown, ARCHITECTURE_KEY, e), path) from None
        if kind not in ("sd15", "sdxl"):
            raise ModelError("%s: %s names an unknown kind %r" % (shown, ARCHITECTURE_KEY, kind), path)
        _check_complete(header, kind)
        return kind, arch
    if any("double_blocks." in k for k in keys):
        raise _unsupported(path, "a Flux model")
    if any("joint_blocks." in k for k in keys):
        raise _unsupported(path, "a Stable Diffusion 3 model")
    if _UNET_CONV_IN not in keys:
        if "conv_in.weight" in keys and "time_embedding.linear_1.weight" in keys:
            what = "a UNet alone in the diffusers layout (no text encoder, no VAE)"
        elif any(k.startswith(("encoder.", "decoder.", "first_stage_model.")) for k in keys) and not any(
                k.startswith(("cond_stage_model.", "conditioner.")) for k in keys):
            what = "a VAE alone"
        elif any(k.startswith(("cond_stage_model.", "conditioner.", "text_model.", "clip_")) for k in keys):
            what = "a text encoder alone"
        else:
            what = "not a Stable Diffusion checkpoint (no model.diffusion_model.* weights)"
        raise ModelError("%s is %s: base_model must be a full SD1.5/SDXL checkpoint" % (shown, what), path)
    in_channels = keys[_UNET_CONV_IN][1][1]
    to_k = _first(keys, "attn2.to_k.weight", ldm.UNET_PREFIX)
    context = keys[to_k][1][1] if to_k else None
    label = keys.get(ldm.UNET_PREFIX + "label_emb.0.0.weight")
    if any(k.startswith("cond_stage_model.model.") for k in keys) or context == 1024:
        raise _unsupported(path, "a Stable Diffusion 2.x (v2) checkpoint (OpenCLIP ViT-H text encoder, 1024-wide cross-attention)")
    if label is not None:
        if context == 1280 or label[1][1] == 2560 or any(k.startswith("conditioner.embedders.0.model.") for k in keys):
            raise _refiner(path)
        kind = "sdxl"
        if context not in (None, 2048):
            raise ModelError("%s: an SDXL-like UNet with %d-wide cross-attention is not SDXL base" % (shown, context), path)
    elif context == 768:
        kind = "sd15"
    else:
        raise _unsupported(path, "a model with an unknown UNet (cross-attention width %s)" % context)
    if in_channels != 4:
        what = {9: "an inpainting model", 8: "an instruct-pix2pix model"}.get(in_channels, "a model with %d input channels" % in_channels)
        raise ModelError("%s is %s: LoRA training needs the plain %s model (4 latent input channels)"
                         % (shown, what, "SDXL" if kind == "sdxl" else "SD1.5"), path)
    _check_complete(header, kind)
    return kind, None


def _check_complete(header, kind):
    """A checkpoint must hold every component: pruned / UNet-only files are refused by name."""
    path, keys, shown = header.path, header.tensors, display_path(header.path)
    expected = {c: p for c, p in ldm.component_prefixes(kind).items() if c.startswith("text_encoder")}
    missing = [name for name, prefix in expected.items() if not any(k.startswith(prefix) for k in keys)]
    if missing:
        raise ModelError("this file has no text encoder: %s holds no %s (a pruned or UNet-only checkpoint); "
                         "use a full checkpoint" % (shown, " and no ".join(
                             "%s weights (%s*)" % (n, expected[n]) for n in missing)), path)
    if not any(k.startswith(ldm.VAE_PREFIX) for k in keys):
        raise ModelError("this file has no VAE: %s holds no %s* weights (a pruned checkpoint); use a full "
                         "checkpoint" % (shown, ldm.VAE_PREFIX), path)


def _read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _inspect_folder(path):
    shown = display_path(path)
    index_path = os.path.join(path, "model_index.json")
    index = _read_json(index_path) if os.path.isfile(index_path) else {}
    cls = index.get("_class_name", "")
    for word, name in (("Flux", "a Flux"), ("StableDiffusion3", "a Stable Diffusion 3"), ("Cascade", "a Stable Cascade"),
                       ("PixArt", "a PixArt"), ("Kandinsky", "a Kandinsky")):
        if word in cls:
            raise _unsupported(path, "%s model (%s)" % (name, cls))
    unet_config_path = os.path.join(path, "unet", "config.json")
    if not os.path.isfile(unet_config_path):
        own = os.path.join(path, "config.json")
        if os.path.isfile(own) and _read_json(own).get("_class_name") == "UNet2DConditionModel":
            raise ModelError("%s is the unet/ folder of a diffusers model: give the model folder that holds "
                             "model_index.json" % shown, path)
        raise ModelError("%s is not a diffusers model folder (no model_index.json with unet/config.json)" % shown, path)
    unet = _read_json(unet_config_path)
    context, in_channels = unet.get("cross_attention_dim"), unet.get("in_channels", 4)
    # By structure, not by width: the tiny models are narrow. SD2 is known by its 1024-wide context.
    if unet.get("addition_embed_type") == "text_time":
        if context == 1280 or not os.path.isdir(os.path.join(path, "text_encoder")) and os.path.isdir(
                os.path.join(path, "text_encoder_2")):
            raise _refiner(path)
        kind = "sdxl"
    elif context == 1024:
        raise _unsupported(path, "a Stable Diffusion 2.x (v2) model")
    elif unet.get("addition_embed_type") or unet.get("class_embed_type"):
        raise _unsupported(path, "a model whose UNet has %s embeddings" % (
            unet.get("addition_embed_type") or unet.get("class_embed_type")))
    else:
        kind = "sd15"
    if in_channels != 4:
        raise ModelError("%s has a UNet with %d input channels (inpainting / pix2pix): LoRA training needs the "
                         "plain model" % (shown, in_channels), path)
    wanted = ["text_encoder", "text_encoder_2"] if kind == "sdxl" else ["text_encoder"]
    missing = [n for n in wanted if not os.path.isfile(os.path.join(path, n, "config.json"))]
    if missing:
        raise ModelError("this folder has no text encoder: %s lacks %s" % (shown, ", ".join(n + "/" for n in missing)), path)
    if not os.path.isfile(os.path.join(path, "vae", "config.json")):
        raise ModelError("this folder has no VAE: %s lacks vae/" % shown, path)
    return kind


def inspect_model(path):
    """ModelInfo of a base-model path (file or diffusers folder); ModelError saying why not."""
    path = os.fspath(path)
    shown = display_path(path)
    if not os.path.exists(path):
        raise ModelError("base model not found: %s" % shown, path)
    if os.path.isdir(path):
        return ModelInfo(_inspect_folder(path), "diffusers", path)
    lower = path.lower()
    if lower.endswith(PICKLE_EXTENSIONS):
        raise _refuse_pickle(path)
    if lower.endswith(".gguf"):
        raise ModelError("%s is a GGUF (quantised) file: lora-native trains from .safetensors checkpoints" % shown, path)
    try:
        header = read_header(path)
    except HeaderError as e:
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic.startswith(b"PK") or magic[:1] == b"\x80":
            raise _refuse_pickle(path) from None
        raise ModelError("%s: %s" % (shown, e), path) from None
    kind, arch = _classify_header(header)
    return ModelInfo(kind, "single_file", path, header, arch)


def detect_model_type(path):
    """"sd15" or "sdxl" from a checkpoint's keys and shapes (only the header is read) or a diffusers
    folder's configs; ModelError for anything else (SD2, SD3, Flux, refiner, inpainting, partial
    files, LoRA files, pickles), saying what it is."""
    return inspect_model(path).kind


# ---------------------------------------------------------------- loading

def _normalise_kind(model_type):
    aliases = {"sd15": "sd15", "sd1": "sd15", "sd1.5": "sd15", "sd_v1": "sd15", "v1": "sd15",
               "sdxl": "sdxl", "sdxl_base": "sdxl", "auto": "auto", None: "auto"}
    key = model_type.lower() if isinstance(model_type, str) else model_type
    if key not in aliases:
        raise ModelError("model_type %r is not supported here (expected auto, sd15 or sdxl)" % (model_type,))
    return aliases[key]


def _prediction_type(info):
    if info.header is not None:
        if "v_pred" in info.header.tensors:  # ComfyUI's marker for v-prediction checkpoints
            return "v_prediction"
        if info.header.metadata.get("modelspec.prediction_type", "").lower() in ("v", "v_prediction"):
            return "v_prediction"
    return "epsilon"


def _scheduler_config(architecture, prediction_type, folder_config=None):
    config = dict(architecture["scheduler"])
    for key in ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps", "trained_betas"):
        if folder_config and folder_config.get(key) is not None:
            config[key] = folder_config[key]
    config["_class_name"] = "DDPMScheduler"
    config["prediction_type"] = prediction_type
    return config


def _weight_files(folder, component):
    """The safetensors files of one diffusers component folder (sharded or not)."""
    sub = os.path.join(folder, component)
    names = sorted(os.listdir(sub)) if os.path.isdir(sub) else []
    for stem in ("diffusion_pytorch_model", "model"):
        for variant in ("", ".fp16"):
            single = stem + variant + ".safetensors"
            if single in names:
                return [os.path.join(sub, single)]
            index = stem + variant + ".safetensors.index.json"
            if index in names:
                shards = sorted(set(_read_json(os.path.join(sub, index))["weight_map"].values()))
                return [os.path.join(sub, s) for s in shards]
    pickles = [n for n in names if n.endswith(PICKLE_EXTENSIONS)]
    if pickles:
        raise _refuse_pickle(os.path.join(sub, pickles[0]))
    raise ModelError("%s holds no .safetensors weights" % display_path(sub), sub)


def _folder_architecture(path, kind):
    arch = load_architecture(kind)
    arch["unet"] = _read_json(os.path.join(path, "unet", "config.json"))
    vae = _read_json(os.path.join(path, "vae", "config.json"))
    vae.setdefault("scaling_factor", arch["vae"]["scaling_factor"])
    arch["vae"] = vae
    for name in text_encoder_names(arch):
        config = _read_json(os.path.join(path, name, "config.json"))
        config["_class_name"] = (config.get("architectures") or [arch[name]["_class_name"]])[0]
        arch[name] = config
    return arch


def _cast(tensor, dtype, device):
    if tensor.is_floating_point():
        return tensor.to(device=device, dtype=dtype)
    return tensor.to(device=device)


def _load_single_file(info, arch, dtype, device):
    from safetensors import safe_open

    modules = build_components(arch, "meta")
    with safe_open(info.path, framework="pt", device="cpu") as f:
        plan = ldm.plan_from_original(list(f.keys()), info.kind, arch)
        for component in modules:
            state = {}
            for rule in plan.rules.get(component, []):
                tensors = ldm.to_diffusers_tensors(rule, [f.get_tensor(k) for k in rule.original])
                for key, tensor in zip(rule.diffusers, tensors):
                    state[key] = _cast(tensor, dtype, device)
            _load_into(modules[component], state, component, info.path)
            del state
    return modules, plan.ignored, plan.unexpected


def _load_folder(info, arch, dtype, device):
    from safetensors import safe_open

    modules = build_components(arch, "meta")
    for component, module in modules.items():
        state = {}
        for file in _weight_files(info.path, component):
            with safe_open(file, framework="pt", device="cpu") as f:
                for key in f.keys():
                    if not ldm.is_ignored_key(key):  # old transformers saved position_ids
                        state[ldm.modern_diffusers_key(component, key)] = _cast(f.get_tensor(key), dtype, device)
        _load_into(module, state, component, info.path)
        del state
    return modules, [], []


def load_base_model(path, model_type="auto", tokenizer_path=None, dtype=None, device="cpu"):
    """Load an SD1.5 / SDXL base model from a single .safetensors file (original layout) or a
    diffusers folder, offline. `dtype` (default float32) applies to floating-point weights."""
    import torch

    dtype = dtype or torch.float32
    wanted = _normalise_kind(model_type)
    info = inspect_model(path)
    if wanted != "auto" and wanted != info.kind:
        raise ModelError("model_type is %s but %s is an %s model" % (wanted, display_path(info.path), info.kind), info.path)
    if info.layout == "single_file":
        arch = info.architecture or load_architecture(info.kind)
        arch["kind"] = info.kind
        prediction = _prediction_type(info)
        scheduler = _scheduler_config(arch, prediction)
    else:
        arch = _folder_architecture(info.path, info.kind)
        folder_scheduler = os.path.join(info.path, "scheduler", "scheduler_config.json")
        folder_config = _read_json(folder_scheduler) if os.path.isfile(folder_scheduler) else {}
        prediction = folder_config.get("prediction_type") or "epsilon"
        scheduler = _scheduler_config(arch, prediction, folder_config)
    names = text_encoder_names(arch)
    # Tokenizers before the weights: a missing vocabulary fails in a second, not after 7 GB.
    toks = load_tokenizers(names, tokenizer_path=tokenizer_path, model_path=info.path)
    for name, tok in zip(names, toks):
        expected = arch[name].get("vocab_size")
        if expected is not None and len(tok) != expected:
            raise ModelError("the tokenizer found for %s has %d tokens but its %s expects %d: wrong tokenizer_path?"
                             % (display_path(info.path), len(tok), name, expected), info.path)
    load = _load_single_file if info.layout == "single_file" else _load_folder
    modules, ignored, unexpected = load(info, arch, dtype, device)
    if unexpected:
        warnings.warn("%s: %d tensors belong to no component and were not loaded (e.g. %s)"
                      % (display_path(info.path), len(unexpected), ", ".join(unexpected[:5])), stacklevel=2)
    for module in modules.values():
        _finish(module, device)
    return BaseModel(
        kind=info.kind, unet=modules["unet"], vae=modules["vae"],
        text_encoders=[modules[n] for n in names], tokenizers=toks,
        scaling_factor=float(arch["vae"].get("scaling_factor", 0.18215)),
        prediction_type=prediction, noise_scheduler_config=scheduler, source=info.path,
        architecture=arch, ignored_keys=list(ignored), unexpected_keys=list(unexpected))
