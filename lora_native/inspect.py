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


def inspect_file(path, show_metadata=True):
    """A multi-line description of the LoRA file at `path`."""
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
        lines.append("metadata:")
        for key in sorted(info.metadata):
            value = info.metadata[key]
            if key == "ss_tag_frequency":
                value = _top_tags(value)
            elif len(value) > 120:
                value = value[:117] + "..."
            lines.append("  %s: %s" % (key, value))
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
