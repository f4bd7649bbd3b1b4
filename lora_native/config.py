"""The training config: one YAML file, typed and range-checked by the C loader
(`lora_native._native`, libyaml), defaults and cross-field checks here.

    cfg = load_config("my.yaml", overrides={"epochs": "5"})   # --epochs 5 on the command line
    cfg = Config.from_dict({"base_model": "sd15.safetensors", "train_data_dir": "data"})

The key schema (names, types, ranges, choices) lives in C (`csrc/config/schema.c`) and is the one
source of truth; this module only adds defaults, derived values and checks between keys. Every
problem raises `ConfigError` naming `file:line:col: key: problem` (or `command line: key: ...`).
"""
import dataclasses
import os
import types
import warnings
from dataclasses import dataclass, field
from typing import Mapping, Optional, Tuple, Union

from . import _native
from .errors import ConfigError

# name -> (name, type, choices, min, max, required), from the C schema
SCHEMA = {row[0]: row for row in _native.config_schema()}

# Keys whose strings name files or folders: resolved against the config file's folder (or the
# current directory for overrides and the API), `~` expanded.
_PATH_KEYS = frozenset(name for name, row in SCHEMA.items() if row[1] == "path") | {"resume_from_checkpoint",
                                                                                 "sample_prompts", "chat_template"}

# Said with a missing required key.
_REQUIRED_HINTS = {
    "base_model": "the Stable Diffusion checkpoint (.safetensors) or diffusers folder to train from",
    "train_data_dir": "the training data: a folder of images, or for task_type text-generation a .jsonl/.txt/.csv "
                      "file or folder",
}


@dataclass(frozen=True)
class Config:
    """Every config key, typed, with defaults and derived defaults filled in. Build it with
    `load_config` or `Config.from_dict` (which check it); paths are absolute."""

    # --- the seed articles' keys
    train_data_dir: Optional[str] = None        # images (+ metadata.csv or .txt captions); text-generation: .jsonl/.txt/.csv folder or file
    metadata_path: Optional[str] = None         # default: <train_data_dir>/metadata.csv when that file exists
    base_model: Optional[str] = None            # required: .safetensors checkpoint or diffusers folder
    lora_rank: int = 16
    batch_size: int = 1
    epochs: int = 10
    learning_rate: float = 1e-4
    output_dir: str = "output"
    save_steps: int = 0                         # 0: no step checkpoints (one at the end)
    conv_lora: bool = False                     # also train the 3x3 convs (LoCon) at conv_dim
    log_with: str = "none"                      # tensorboard | none
    task_type: str = "text-to-image"            # text-to-image (SD1.5/SDXL) | text-generation (causal LM, PEFT output)
    max_seq_length: int = 512                   # text-generation: tokens per training sequence (longer ones are cut)
    # --- what sd-scripts users expect
    model_type: str = "auto"                    # auto (from the checkpoint's keys) | sd15 | sdxl | llm
    lora_alpha: Optional[float] = None          # default: lora_rank (scale 1)
    conv_dim: Optional[int] = None              # default: lora_rank
    conv_alpha: Optional[float] = None          # default: conv_dim
    resolution: Optional[Tuple[int, int]] = None  # (width, height); None: 512 for sd15, 1024 for sdxl
    enable_bucket: bool = False
    min_bucket_reso: int = 256
    max_bucket_reso: Optional[int] = None       # None: 1024 for sd15, 2048 for sdxl
    bucket_reso_steps: int = 64
    bucket_no_upscale: bool = False
    gradient_accumulation_steps: int = 1
    max_train_steps: int = 0                    # 0: epochs decide
    unet_lr: Optional[float] = None             # default: learning_rate
    text_encoder_lr: Optional[float] = None     # default: learning_rate
    train_text_encoder: bool = False
    lr_scheduler: str = "constant"              # constant | cosine | linear | constant_with_warmup | cosine_with_restarts
    lr_warmup_steps: int = 0
    lr_scheduler_num_cycles: int = 1            # cosine_with_restarts only
    optimizer: str = "adamw"                    # adamw | adamw8bit (needs bitsandbytes) | sgd
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0                  # 0 disables clipping
    mixed_precision: str = "no"                 # no | fp16 | bf16
    save_precision: Optional[str] = None        # fp16 | bf16 | float; default fp16 (images), float (text-generation, as PEFT)
    gradient_checkpointing: bool = False
    seed: int = 42
    output_name: str = "lora"                   # file name of the LoRA: <output_dir>/<output_name>.safetensors
    save_every_n_epochs: int = 0
    save_last_n_checkpoints: int = 0            # 0: keep all
    resume_from_checkpoint: Optional[str] = None  # a checkpoint folder, or "latest"
    resume: str = "auto"                        # auto: continue from the latest checkpoint in output_dir | never
    network_weights: Optional[str] = None       # start from this LoRA file
    logging_dir: Optional[str] = None           # default: <output_dir>/logs
    caption_extension: str = ".txt"
    trigger_word: Optional[str] = None
    shuffle_caption: bool = False
    keep_tokens: int = 0                        # leading caption tokens kept in place when shuffling
    caption_dropout_rate: float = 0.0
    flip_aug: bool = False
    color_aug: bool = False
    clip_skip: int = 1
    noise_offset: float = 0.0
    min_snr_gamma: float = 0.0                  # 0: off
    cache_latents: bool = False
    cache_latents_to_disk: bool = False         # implies cache_latents
    v_parameterization: bool = False
    sample_prompts: Union[None, str, Tuple[str, ...]] = None  # prompts, or the path of a text file (one a line)
    sample_every_n_steps: int = 0
    network_dropout: float = 0.0
    # validation: a deterministic loss on images never trained on, logged as loss/validation
    validation_split: float = 0.0              # fraction of train_data_dir held out (chosen with seed), < 1
    validation_data_dir: Optional[str] = None   # or a separate folder, same layouts as train_data_dir
    validate_every_n_steps: int = 0             # 0: at each checkpoint and at the end
    save_best: bool = False                     # keep <output_name>-best.safetensors (lowest validation loss)
    tokenizer_path: Optional[str] = None
    device: str = "auto"                        # auto | cpu | cuda
    # fused LoRA branch + AdamW from csrc/lora; None: where bench/RESULTS.md shows them faster
    # (lora_native.ops.native_by_default)
    native_kernels: Optional[bool] = None
    # `lora-native caption --config`: the captioner (blip | wd14 | clip) and its local model path;
    # training ignores them
    captioner: Optional[str] = None
    caption_model: Optional[str] = None
    # --- task_type: text-generation
    # PEFT's lora_dropout: drops the adapter's input features (PEFT semantics, written to
    # adapter_config.json). network_dropout is sd-scripts' (drops the rank features after down);
    # both are training-only regularisers and may be combined; neither changes the saved weights.
    lora_dropout: float = 0.0
    # module-name suffixes (PEFT's target_modules) or "all-linear"; None: per architecture
    # (LLaMA/Qwen2/Mistral/Gemma q,k,v,o,gate,up,down_proj; GPT-2 c_attn,c_proj,c_fc)
    lora_target_modules: Optional[Tuple[str, ...]] = None
    text_column: str = "text"                   # .jsonl field holding plain text
    txt_split: str = "file"                     # .txt files: one sample per file | per blank-line paragraph
    packing: bool = False                       # pack short samples into max_seq_length sequences
    chat_template: Optional[str] = None         # Jinja template (or a file holding one) for `messages` data
    merge_output: bool = False                  # also write <output_name>-merged/ (base + LoRA, save_pretrained)

    # --- not config keys: where the values came from, for messages
    source: Optional[str] = field(default=None, compare=False)     # the config file, None without one
    warnings: Tuple[str, ...] = field(default=(), compare=False, repr=False)
    origins: Mapping = field(default_factory=dict, compare=False, repr=False)  # key -> (origin, line, column)

    @classmethod
    def from_dict(cls, values, origin="api"):
        """Checks a dict of Python values (the API's `lora_native.train(dict)`) with the same
        rules as a file: unknown keys, types, ranges, choices, required keys, cross-field checks.
        Relative paths are taken from the current directory."""
        if not isinstance(values, Mapping):
            raise ConfigError("expected a dict of config keys, got %s" % type(values).__name__, origin=origin)
        typed, origins, errors = {}, {}, []
        for key, value in values.items():
            try:
                typed[key] = _native.config_check_value(str(key), value, origin)
                origins[key] = (origin, None, None)
            except ConfigError as e:
                errors.extend(e.errors)
        _raise_all(errors)
        typed = {k: _resolve_path(k, v, None) for k, v in typed.items()}
        return _build(typed, origins, None, origin)

    def to_dict(self):
        """Every key with its value, JSON-ready (tuples as lists): saved in checkpoints, and
        `Config.from_dict(cfg.to_dict()) == cfg`."""
        out = {}
        for name in SCHEMA:
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, tuple) else value
        return out

    def error(self, key, problem):
        """A ConfigError located at `key` (file:line:col when it came from the config file), for
        problems found later, like a base_model that does not exist."""
        return _error_at(self.origins, self.source, self.source or "config", key, problem)


KEYS = tuple(SCHEMA)
assert set(KEYS) == {f.name for f in dataclasses.fields(Config)} - {"source", "warnings", "origins"}, \
    "Config fields and the C schema disagree"


def load_config(path, overrides=None):
    """Reads a YAML config file -> Config. overrides: key -> value applied over the file: a str
    is typed like `--key value` on the command line (relative paths from the current
    directory), other values are checked as Python values; None values are skipped, so an
    argparse namespace's dict can be passed as it is."""
    path = os.fspath(path)
    parsed = _parse_file(path)
    base = os.path.dirname(os.path.abspath(path))
    typed, origins = {}, {}
    for key, (value, line, column) in parsed.items():
        typed[key] = _resolve_path(key, value, base)
        origins[key] = (path, line, column)
    errors = []
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        try:
            if isinstance(value, str):
                value, origin = _native.config_parse_value(str(key), value, "command line"), "command line"
            else:
                value, origin = _native.config_check_value(str(key), value, "api"), "api"
        except ConfigError as e:
            errors.extend(e.errors)
            continue
        typed[key] = _resolve_path(key, value, None)
        origins[key] = (origin, None, None)
    _raise_all(errors)
    return _build(typed, origins, path, path)


def _parse_file(path):
    """key -> (value, line, column) of a YAML config file, typed by the C loader."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError("cannot read the config file: %s" % (e.strerror or e), path=path) from None
    return _native.config_parse(text, path)


def config_file_keys(path):
    """The keys a YAML config file sets (syntax checked, values not): hosts fill in the rest."""
    return set(_parse_file(os.fspath(path)))


def read_config_keys(path, keys):
    """Some keys of a YAML config file -> {key: value} for those it sets: typed by the schema, paths
    resolved against the file's folder, without the checks a whole training config needs (other
    tools read their keys from the training YAML this way: `lora-native caption --config`)."""
    path = os.fspath(path)
    parsed = _parse_file(path)
    base = os.path.dirname(os.path.abspath(path))
    return {k: _resolve_path(k, parsed[k][0], base) for k in keys if k in parsed and parsed[k][0] is not None}


def _raise_all(errors):
    if errors:
        first = errors[0]
        raise ConfigError(first.problem, path=first.path, line=first.line, column=first.column, key=first.key,
                          origin=first.origin, errors=errors)


def _error_at(origins, source, default_origin, key, problem):
    """A ConfigError at the place `key` came from (origins: key -> (origin, line, column))."""
    origin, line, column = origins.get(key, (default_origin, None, None))
    return ConfigError(problem, path=origin if origin == source else None, line=line, column=column, key=key,
                       origin=origin)


def _resolve_path(key, value, base):
    """Paths from a file are taken from its folder (base); from elsewhere, from the current one."""
    if key not in _PATH_KEYS or not isinstance(value, str):
        return value
    if key == "resume_from_checkpoint" and value == "latest":
        return value
    if key == "chat_template" and "{" in value:  # the template itself, not a file
        return value
    value = os.path.expanduser(value)
    return os.path.normpath(os.path.join(base, value) if base else os.path.abspath(value))


class _Checks:
    """Collects the cross-field problems, each located at its key."""

    def __init__(self, origins, source, default_origin):
        self.origins, self.source, self.default_origin = origins, source, default_origin
        self.errors, self.warnings = [], []

    def make(self, key, problem):
        return _error_at(self.origins, self.source, self.default_origin, key, problem)

    def where(self, key):
        """'line 12' or 'the command line', to point at the other key of a pair."""
        origin, line, _ = self.origins.get(key, (None, None, None))
        if line is not None:
            return "line %d" % line
        return origin or "its default"

    def error(self, key, problem):
        self.errors.append(self.make(key, problem))

    def warn(self, key, problem):
        self.warnings.append(str(self.make(key, problem)))


def _build(typed, origins, source, origin):
    """Defaults, derived defaults and the checks between keys -> Config. source: the config
    file or None; origin: what to name when a key has no place of its own."""
    c = _Checks(origins, source, origin)
    set_ = {k: v for k, v in typed.items() if v is not None}
    task_type = set_.get("task_type", "text-to-image")
    for name, row in SCHEMA.items():
        required = row[5]
        if not (required is True or required == task_type) or name in set_:
            continue
        hint = _REQUIRED_HINTS.get(name, "")
        if name in typed:  # written as ~ / null / nothing
            c.error(name, "needs a value" + (": " + hint if hint else ""))
        else:  # a file's missing key is placed at its start
            c.errors.append(ConfigError("required key is missing" + (" (" + hint + ")" if hint else ""),
                                        path=source, line=1 if source else None, column=1 if source else None,
                                        key=name, origin=c.default_origin))
    _raise_all(c.errors)

    values = dict(_PLAIN_DEFAULTS)
    values.update(set_)
    if values["resolution"] is not None:
        values["resolution"] = tuple(values["resolution"])
    for name, derive in _DERIVED.items():  # in dependency order
        if name not in set_:
            values[name] = derive(values)

    _cross_checks(values, set_, c)
    _raise_all(c.errors)
    for message in c.warnings:
        warnings.warn(message, UserWarning, stacklevel=3)
    return Config(**values, source=source, warnings=tuple(c.warnings), origins=types.MappingProxyType(dict(origins)))


_PLAIN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Config) if f.name in SCHEMA}


def _metadata_default(v):
    candidate = os.path.join(v["train_data_dir"], "metadata.csv") if v["train_data_dir"] else None
    return candidate if candidate and os.path.isfile(candidate) else None


# Defaults computed from other keys, in dependency order.
_DERIVED = {
    "output_dir": lambda v: os.path.abspath("output"),  # from the current directory, as sd-scripts does
    "logging_dir": lambda v: os.path.join(v["output_dir"], "logs"),
    "metadata_path": _metadata_default,
    "lora_alpha": lambda v: float(v["lora_rank"]),
    "conv_dim": lambda v: v["lora_rank"],
    "conv_alpha": lambda v: float(v["conv_dim"]),
    "unet_lr": lambda v: v["learning_rate"],
    "text_encoder_lr": lambda v: v["learning_rate"],
    "cache_latents": lambda v: bool(v["cache_latents_to_disk"]),
    # PEFT keeps adapters in float32; sd-scripts users expect fp16 files
    "save_precision": lambda v: "float" if v["task_type"] == "text-generation" else "fp16",
}

# Keys only Stable Diffusion training reads; a text-generation run that sets them (a kohya YAML
# reused) is warned once, as sd-scripts' own trainers do with arguments they do not use.
IMAGE_ONLY_KEYS = ("metadata_path", "conv_lora", "conv_dim", "conv_alpha", "resolution", "enable_bucket",
                   "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps", "bucket_no_upscale", "unet_lr",
                   "text_encoder_lr", "train_text_encoder", "caption_extension", "trigger_word", "shuffle_caption",
                   "keep_tokens", "caption_dropout_rate", "flip_aug", "color_aug", "clip_skip", "noise_offset",
                   "min_snr_gamma", "cache_latents", "cache_latents_to_disk", "v_parameterization")
TEXT_ONLY_KEYS = ("max_seq_length", "lora_target_modules", "text_column", "txt_split", "packing", "chat_template",
                  "merge_output")


def _cross_checks(v, set_, c):
    if v["color_aug"] and v["cache_latents"]:
        other = "cache_latents_to_disk" if v["cache_latents_to_disk"] else "cache_latents"
        c.error("color_aug", "cannot be combined with %s (%s): color augmentation must happen before the VAE "
                "encodes the images, and cached latents skip it" % (other, c.where(other)))
    if v["cache_latents_to_disk"] and "cache_latents" in set_ and not v["cache_latents"]:
        c.error("cache_latents_to_disk", "needs cache_latents, which is false (%s)" % c.where("cache_latents"))
    if v["max_bucket_reso"] is not None and v["min_bucket_reso"] > v["max_bucket_reso"]:
        c.error("min_bucket_reso", "%d is larger than max_bucket_reso %d (%s)"
                % (v["min_bucket_reso"], v["max_bucket_reso"], c.where("max_bucket_reso")))
    if v["model_type"] == "llm" and v["task_type"] != "text-generation":
        c.error("model_type", "llm needs task_type: text-generation (task_type is %s, %s)"
                % (v["task_type"], c.where("task_type")))
    if v["task_type"] == "text-generation" and v["model_type"] in ("sd15", "sdxl"):
        c.error("task_type", "text-generation trains language models, not model_type %s (%s)"
                % (v["model_type"], c.where("model_type")))
    _task_checks(v, set_, c)
    if v["mixed_precision"] == "fp16" and v["device"] == "cpu":
        c.error("mixed_precision", "fp16 needs a CUDA device (device is cpu, %s); use bf16 or no"
                % c.where("device"))
    if v["keep_tokens"] > 0 and not v["shuffle_caption"]:
        c.warn("keep_tokens", "has no effect without shuffle_caption: true")
    if v["lr_warmup_steps"] > 0 and v["lr_scheduler"] == "constant":
        c.warn("lr_warmup_steps", "is ignored by lr_scheduler constant; use constant_with_warmup")
    if v["lr_scheduler_num_cycles"] > 1 and v["lr_scheduler"] != "cosine_with_restarts":
        c.warn("lr_scheduler_num_cycles", "is used only by lr_scheduler cosine_with_restarts")
    # set to their derived default (as to_dict() writes them) they say nothing
    for key, switch in (("conv_dim", "conv_lora"), ("conv_alpha", "conv_lora"), ("text_encoder_lr",
                                                                                 "train_text_encoder")):
        if key in set_ and v[key] != _DERIVED[key](v) and not v[switch]:
            c.warn(key, "has no effect without %s: true" % switch)
    if v["sample_every_n_steps"] > 0 and v["sample_prompts"] is None:
        c.warn("sample_every_n_steps", "has no effect without sample_prompts")
    validation = v["validation_split"] > 0 or v["validation_data_dir"] is not None
    if v["validation_split"] > 0 and v["validation_data_dir"] is not None:
        c.error("validation_data_dir", "cannot be combined with validation_split %g (%s): hold out a fraction of "
                "the training images or name a separate folder, not both" % (v["validation_split"],
                                                                              c.where("validation_split")))
    elif v["save_best"] and not validation:
        c.error("save_best", "needs validation images: set validation_split (e.g. 0.1, a tenth of the images held "
                "out) or validation_data_dir (a separate folder)")
    if v["validate_every_n_steps"] > 0 and not validation:
        c.warn("validate_every_n_steps", "has no effect without validation_split or validation_data_dir")


def _task_checks(v, set_, c):
    """lora_target_modules as a tuple of suffixes; keys the other task reads, warned once."""
    targets = v["lora_target_modules"]
    if isinstance(targets, str):  # "q_proj, v_proj" on the command line or in the file
        targets = targets.split(",")
    if targets is not None:
        targets = tuple(t.strip() for t in targets)
        if not targets or not all(targets):
            c.error("lora_target_modules", "needs module names, e.g. [q_proj, v_proj], or all-linear")
        v["lora_target_modules"] = targets
    template = v["chat_template"]
    if template is not None and "{" not in template and not os.path.isfile(template):
        c.error("chat_template", "%s is neither a Jinja template nor a file" % template)
    text = v["task_type"] == "text-generation"

    def differs(key):
        derive = _DERIVED.get(key)
        return key in set_ and v[key] != (derive(v) if derive else _PLAIN_DEFAULTS[key])
    unused = [k for k in (IMAGE_ONLY_KEYS if text else TEXT_ONLY_KEYS) if differs(k)]
    if unused:
        c.warn(unused[0], "ignored for task_type %s (a %s key)%s" % (
            v["task_type"], "text-to-image" if text else "text-generation",
            ", as are " + ", ".join(unused[1:]) if unused[1:] else ""))


def format_yaml(config):
    """The config as YAML text that load_config reads back to an equal Config: keys in schema
    order, those at their default (plain or derived from other keys) left out; paths absolute.
    output_dir is always written (its default depends on the current directory)."""
    values = {name: getattr(config, name) for name in SCHEMA}
    lines = ["# lora-native training config", ""]
    for name in SCHEMA:
        value = values[name]
        derive = _DERIVED.get(name)
        default = derive(values) if derive else _PLAIN_DEFAULTS[name]
        if value is None or (value == default and name != "output_dir"):
            continue
        if isinstance(value, tuple) and name != "resolution":  # sample_prompts, lora_target_modules
            lines.append("%s:%s" % (name, "" if value else " []"))
            lines.extend("  - " + _yaml_scalar(p) for p in value)
        elif name == "resolution":
            w, h = value
            lines.append("%s: %s" % (name, w if w == h else "[%d, %d]" % (w, h)))
        else:
            lines.append("%s: %s" % (name, _yaml_scalar(value)))
    return "\n".join(lines) + "\n"


def _yaml_scalar(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    out = []
    for ch in str(value):
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif code < 0x20 or 0x7F <= code <= 0x9F or code in (0x2028, 0x2029, 0xFEFF):
            out.append("\\u%04x" % code)
        else:
            out.append(ch)
    return '"%s"' % "".join(out)
