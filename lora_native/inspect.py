"""`lora-native inspect FILE`: what a LoRA file is (format, base model, rank/alpha per block,
module counts, metadata), for every format we read."""
import json
import os
import re

from .formats.readers import describe

BASE_NAMES = {"sd15": "Stable Diffusion 1.x", "sdxl": "SDXL", "sd2": "Stable Diffusion 2.x", "unknown": "unknown"}
_BLOCK_RES = [
    re.compile(r"^lora_unet_((?:down|up)_blocks_\d+|mid_block|input_blocks_\d+|output_blocks_\d+|middle_block)"),
    re.compile(r"^lora_te\d?_text_model_encoder_layers_(\d+)"),
    re.compile(r"^(?:diffusion_model|unet|base_model\.model)\.((?:down|up)_blocks\.\d+|mid_block|input_blocks\.\d+|"
               r"output_blocks\.\d+|middle_block)"),
    re.compile(r"layers\.(\d+)\."),
]


def _block(module):
    for i, rx in enumerate(_BLOCK_RES):
        m = rx.search(module.name)
        if m:
            if i in (1, 3):
                return "%s layer %s" % (module.component, m.group(1))
            return "%s %s" % (module.component, m.group(1).replace(".", "_"))
    return module.component


def _alphas(path, info):
    from safetensors import safe_open
    names = {}
    with safe_open(path, "pt") as f:
        keys = set(f.keys())
        for m in info.modules:
            if "alpha" in m.shapes:
                key = m.name + ".alpha"
                if key in keys:
                    names[m.name] = float(f.get_tensor(key).float())
    return names


def _adapter_config(path):
    """adapter_config.json of a PEFT adapter folder (or next to its adapter_model.safetensors); None
    when there is none."""
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    config = os.path.join(folder, "adapter_config.json")
    if not os.path.isfile(config):
        return None
    try:
        with open(config, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError("%s: unreadable adapter_config.json: %s" % (folder, e)) from None
    return data if isinstance(data, dict) else None


def _metadata_lines(metadata):
    lines = ["metadata:"]
    for key in sorted(metadata):
        value = metadata[key]
        if key == "ss_tag_frequency":
            value = _top_tags(value)
        elif len(value) > 120:
            value = value[:117] + "..."
        lines.append("  %s: %s" % (key, value))
    return lines


def inspect_adapter(path, config, show_metadata=True):
    """A PEFT adapter of a language model (task_type CAUSAL_LM, as text-generation training writes)."""
    from .formats.header import read_header
    weights = path if os.path.isfile(path) else os.path.join(path, "adapter_model.safetensors")
    if not os.path.isfile(weights):
        raise ValueError("%s has adapter_config.json but no adapter_model.safetensors" % path)
    header = read_header(weights)
    layers, other = {}, []
    for name, (_, shape) in header.tensors.items():
        key = name[len("base_model.model."):] if name.startswith("base_model.model.") else name
        if key.endswith(".lora_A.weight") and len(shape) == 2:
            layers[key[:-len(".lora_A.weight")]] = shape[0]
        elif not key.endswith(".lora_B.weight"):
            other.append(name)
    blocks = {}
    for module, rank in layers.items():
        m = re.search(r"(?:layers|h|blocks)\.(\d+)\.", module)
        b = blocks.setdefault("layer %s" % m.group(1) if m else module.rsplit(".", 1)[0], {"n": 0, "ranks": set()})
        b["n"] += 1
        b["ranks"].add(rank)
    meta = header.metadata
    targets = config.get("target_modules")
    lines = ["file:        %s (%.1f MB)" % (weights, os.path.getsize(weights) / 2 ** 20),
             "format:      PEFT adapter (%s, %s)" % (config.get("peft_type", "LORA"), config.get("task_type", "?")),
             "base model:  %s%s" % (config.get("base_model_name_or_path") or "unknown",
                                    " (%s)" % meta["lora_native.architecture"]
                                    if "lora_native.architecture" in meta else ""),
             "rank/alpha:  r %s, lora_alpha %s, lora_dropout %s" % (config.get("r"), config.get("lora_alpha"),
                                                                   config.get("lora_dropout")),
             "targets:     %s" % (", ".join(targets) if isinstance(targets, list) else targets),
             "modules:     %d" % len(layers)]
    if other:
        lines.append("other keys:  %d, e.g. %s" % (len(other), other[0]))
    lines.append("rank per block:")
    for name, b in blocks.items():
        lines.append("  %-22s %3d modules  rank %s" % (name, b["n"], "/".join(str(r) for r in sorted(b["ranks"]))))
    if show_metadata and meta:
        lines += _metadata_lines(meta)
    return "\n".join(lines)


def inspect_file(path, show_metadata=True):
    """A multi-line description of the LoRA file at `path` (or of a PEFT adapter folder)."""
    config = _adapter_config(path)
    # a language model's adapter; a diffusion LoRA with an adapter_config.json beside it is described below
    if config is not None and (os.path.isdir(path) or config.get("task_type") == "CAUSAL_LM"):
        return inspect_adapter(path, config, show_metadata)
    if os.path.isdir(path):
        raise ValueError("%s is a folder without adapter_config.json (not a PEFT adapter)" % path)
    info = describe(path)
    alphas = _alphas(path, info)
    for m in info.modules:
        m.alpha = alphas.get(m.name)
    size = os.path.getsize(path)
    lines = ["file:        %s (%.1f MB)" % (path, size / 2 ** 20),
             "format:      %s%s" % (info.format, " (LoCon: conv layers)" if info.locon else ""),
             "base model:  %s (from %s)" % (BASE_NAMES.get(info.base_model, info.base_model), info.base_model_source),
             "modules:     %d (%s)" % (len(info.modules), ", ".join("%s %d" % kv for kv in
                                                                     sorted(info.component_counts().items())))]
    if info.format == "lycoris":
        lines.append("note:        LyCORIS (LoHa/LoKr/...) files are described here but cannot be applied by "
                     "lora-native")
    if info.other_keys:
        lines.append("other keys:  %d, e.g. %s" % (len(info.other_keys), info.other_keys[0]))
    blocks = {}
    for m in info.modules:
        b = blocks.setdefault(_block(m), {"n": 0, "ranks": set(), "alphas": set()})
        b["n"] += 1
        b["ranks"].add(m.rank)
        b["alphas"].add(m.alpha)
    lines.append("rank/alpha per block:")
    for name, b in blocks.items():
        ranks = "/".join(str(r) for r in sorted(b["ranks"]))
        alphas = "/".join("-" if a is None else ("%g" % a) for a in sorted(b["alphas"], key=lambda a: (a is None, a)))
        lines.append("  %-22s %3d modules  rank %-6s alpha %s" % (name, b["n"], ranks, alphas))
    if show_metadata and info.metadata:
        lines += _metadata_lines(info.metadata)
    return "\n".join(lines)


def _top_tags(value, n=10):
    try:
        data = json.loads(value)
    except ValueError:
        return value[:117] + "..." if len(value) > 120 else value
    counts = {}
    for tags in data.values():
        for tag, c in tags.items():
            counts[tag] = counts.get(tag, 0) + c
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:n]
    return "%d tags; top: %s" % (len(counts), ", ".join("%s (%d)" % kv for kv in top))
