"""Where a captioner's model comes from: only ever a local path, never the network.

The first source that is given wins:
1. `model=` (the API) / `--model PATH` (the command line);
2. the environment variable `LORA_NATIVE_<BLIP|WD14|CLIP>_MODEL`;
3. `caption_model: PATH` in the training YAML given with `--config` (`config=`), when that file's
   `captioner:` key names the same captioner (absent means blip); a relative path is taken from
   the YAML file's folder;
4. the model folders of a host (`search_dirs=`: ComfyUI's models folder, the UI's --models
   folders): `<dir>/captioners/<captioner>/` itself, else the first complete model below it in
   name order, e.g. `<models>/captioners/blip/blip-image-captioning-base/`,
   `<models>/captioners/wd14/wd-v1-4-moat-tagger-v2/` (model.onnx + selected_tags.csv) or
   `<models>/captioners/wd14/wd-v1-4-moat-tagger-v2.onnx` beside `wd-v1-4-moat-tagger-v2.csv`,
   `<models>/captioners/clip/clip-vit-large-patch14/`.
A path that is given but incomplete is an error naming the missing files; nothing is downloaded
(transformers is always called with local_files_only=True).
"""
import json
import os

from ..errors import CaptionModelError, UsageError
from ..fsutil import display_path

ENV_PREFIX = "LORA_NATIVE_"


def env_var(name):
    return "%s%s_MODEL" % (ENV_PREFIX, name.upper())


def _where_hint(module):
    name = module.NAME
    return ("pass a local model with --model PATH (API: model=), or set %s, or write `captioner: %s` and "
            "`caption_model: PATH` in the YAML given with --config, or put it in <models>/captioners/%s/"
            % (env_var(name), name, name))


def model_help(module):
    """What a model of this captioner consists of and how users usually get one."""
    return "%s needs %s. Get one with: %s" % (module.TITLE, module.EXPECTED, module.HOW_TO_GET)


def missing_model_error(module, looked=()):
    where = " (looked in: %s)" % ", ".join(display_path(p) for p in looked) if looked else ""
    return CaptionModelError("no %s model given%s. lora-native never downloads models: %s. %s"
                             % (module.TITLE, where, _where_hint(module), model_help(module)))


def incomplete_error(module, path, problem):
    err = CaptionModelError("%s model %s cannot be used: %s. %s" % (module.TITLE, display_path(path), problem,
                                                                  model_help(module)), path)
    err.problem = problem
    return err


def read_config_keys(config):
    """(captioner, caption_model) from a training YAML (a path) or a dict; None where unset."""
    if config is None:
        return None, None
    if isinstance(config, dict):
        values = config
    else:
        from ..config import read_config_keys as _read
        values = _read(config, ("captioner", "caption_model"))
    return values.get("captioner"), values.get("caption_model")


def resolve_model(module, model=None, config=None, search_dirs=()):
    """The model path for a captioner module (blip, wd14, clip) -> (path, where it came from).
    `path` is what the module's locate() returned (a folder, or a file for WD14)."""
    if model:
        return module.locate(_expand(model)), "model"
    env = os.environ.get(env_var(module.NAME))
    if env:
        return module.locate(_expand(env)), env_var(module.NAME)
    cfg_captioner, cfg_model = read_config_keys(config)
    if cfg_model and (cfg_captioner or "blip") == module.NAME:
        return module.locate(_expand(cfg_model)), "caption_model in %s" % (
            display_path(config) if not isinstance(config, dict) else "the config")
    looked, problems = [], []
    for d in search_dirs or ():
        base = os.path.join(os.fspath(d), "captioners", module.NAME)
        looked.append(base)
        if not os.path.isdir(base):
            continue
        for candidate in [base] + module.candidates(base):
            try:
                return module.locate(candidate), "search"
            except CaptionModelError as e:
                if candidate != base:  # the base folder is usually just the container
                    problems.append("%s: %s" % (display_path(candidate), getattr(e, "problem", e)))
    err = missing_model_error(module, looked)
    if problems:
        err = CaptionModelError("%s (found, but incomplete: %s)" % (err, "; ".join(problems)))
    raise err


def _expand(path):
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


# ---- transformers folders (BLIP, CLIP)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def hf_folder_problem(folder, tokenizer_sets):
    """None when `folder` holds a transformers model with its image processor and tokenizer,
    else a description of what is missing. tokenizer_sets: alternatives, each a tuple of files
    that must all be there (e.g. (("tokenizer.json",), ("vocab.json", "merges.txt")))."""
    if not os.path.exists(folder):
        return "it does not exist"
    if not os.path.isdir(folder):
        return "it is not a folder"
    have = set(os.listdir(folder))
    missing = []
    if "config.json" not in have:
        missing.append("config.json")
    if not any(w in have for w in WEIGHT_FILES):
        missing.append("the weights (model.safetensors or pytorch_model.bin)")
    if "preprocessor_config.json" not in have and not _processor_has_image_config(folder, have):
        missing.append("preprocessor_config.json")
    if not any(all(f in have for f in s) for s in tokenizer_sets):
        missing.append("the tokenizer (%s)" % " or ".join(" + ".join(s) for s in tokenizer_sets))
    return "missing " + ", ".join(missing) if missing else None


def _processor_has_image_config(folder, have):
    if "processor_config.json" not in have:
        return False
    try:
        with open(os.path.join(folder, "processor_config.json"), encoding="utf-8") as f:
            return isinstance(json.load(f).get("image_processor"), dict)
    except (OSError, ValueError, AttributeError):
        return False


def read_image_processor_config(folder):
    """The image processor settings of a transformers folder: preprocessor_config.json (what the
    hub repositories hold), else the "image_processor" entry of processor_config.json (what
    transformers 5 writes when a whole processor is saved)."""
    path = os.path.join(folder, "preprocessor_config.json")
    try:
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        path = os.path.join(folder, "processor_config.json")
        with open(path, encoding="utf-8") as f:
            return json.load(f)["image_processor"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CaptionModelError("cannot read the image processor settings %s: %s" % (display_path(path), e),
                                folder) from None


def prep_spec(folder):
    """`_native.prepare_images` arguments for a transformers folder's image processor settings."""
    from .. import prep

    config = read_image_processor_config(folder)
    try:
        spec = dict(prep.spec_from_processor_config(config))
    except (ValueError, TypeError) as e:
        raise CaptionModelError("%s: %s" % (display_path(folder), e), folder) from None
    spec.setdefault("layout", "nchw")
    return spec


def subfolders(base):
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return []
    return [os.path.join(base, n) for n in names if not n.startswith(".") and os.path.isdir(os.path.join(base, n))]


# ---- torch

def torch_device(device):
    """'cpu' / 'cuda' / 'cuda:1' from None / 'auto' (CUDA when torch sees a GPU)."""
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    device = str(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("device %s: this torch build sees no CUDA GPU (use --device cpu)" % device)
    if not (device == "cpu" or device.startswith("cuda")):
        raise UsageError("device must be cpu or cuda, got %r" % device)
    return device


def torch_dtype(dtype, device):
    """fp16 on a GPU and fp32 on the CPU unless a dtype is given (torch dtype or its name)."""
    import torch

    if dtype is None:
        return torch.float16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, str):
        names = {"fp16": torch.float16, "float16": torch.float16, "bf16": torch.bfloat16,
                 "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32, "float": torch.float32}
        if dtype not in names:
            raise UsageError("dtype must be one of %s, got %r" % (", ".join(names), dtype))
        return names[dtype]
    return dtype
