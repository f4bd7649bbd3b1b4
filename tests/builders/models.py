"""Model builders for tests: tiny checkpoints (single file and diffusers folder), header-only
checkpoints with full-size key names and shapes (for detection, never materialised), and
generated CLIP BPE files."""
import gzip
import json
import os
import struct

from lora_native.formats import ldm
from lora_native.train.tiny import make_tiny_model, tiny_architecture, TINY_TOKENIZER_DIR  # noqa: F401 (re-export)
from lora_native.train.model import build_components, empty_base_model  # noqa: F401 (re-export)
from lora_native.train.tokenizer import bytes_to_unicode, CLIP_MERGES

__all__ = ["make_tiny_model", "tiny_architecture", "empty_base_model", "tiny_modules", "write_tiny_diffusers_folder",
           "full_original_shapes", "write_header_only", "write_bpe_file", "TINY_TOKENIZER_DIR"]


def tiny_modules(kind, seed=0):
    """{component: module} of a tiny model, seeded exactly as make_tiny_model seeds it."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_components(tiny_architecture(kind), "cpu")


_LEGACY_VAE = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def write_tiny_diffusers_folder(folder, kind="sd15", seed=0, legacy_vae_names=False):
    """A diffusers-layout folder of the tiny model (the weights make_tiny_model writes), the way
    diffusers saves one: text-encoder keys under `text_model.` whatever transformers builds;
    legacy_vae_names: the VAE attention named as before diffusers 0.14 (query, key, value, proj_attn)."""
    from safetensors.torch import save_file

    arch = tiny_architecture(kind)
    modules = tiny_modules(kind, seed)
    pipeline = "StableDiffusionXLPipeline" if kind == "sdxl" else "StableDiffusionPipeline"
    index = {"_class_name": pipeline, "_diffusers_version": "0.42.1"}
    for name, module in modules.items():
        os.makedirs(os.path.join(folder, name), exist_ok=True)
        config = dict(arch[name])
        state = {k: v.contiguous() for k, v in module.state_dict().items()}
        if name.startswith("text_encoder"):
            config["architectures"] = [config.pop("_class_name")]
            state = {(k if k.startswith(("text_model.", "text_projection.")) else "text_model." + k): v for k, v in state.items()}
            file = "model.safetensors"
            index[name] = ["transformers", config["architectures"][0]]
        else:
            file = "diffusion_pytorch_model.safetensors"
            index[name] = ["diffusers", config["_class_name"]]
            if name == "vae" and legacy_vae_names:
                for new, old in _LEGACY_VAE.items():
                    state = {k.replace("attentions.0.%s." % new, "attentions.0.%s." % old): v for k, v in state.items()}
        with open(os.path.join(folder, name, "config.json"), "w") as f:
            json.dump(config, f)
        save_file(state, os.path.join(folder, name, file))
    for sub in ("tokenizer", "tokenizer_2") if kind == "sdxl" else ("tokenizer",):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
        for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
            with open(os.path.join(TINY_TOKENIZER_DIR, name), "rb") as src, open(os.path.join(folder, sub, name), "wb") as dst:
                dst.write(src.read())
    os.makedirs(os.path.join(folder, "scheduler"), exist_ok=True)
    with open(os.path.join(folder, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump({"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
                   "beta_start": 0.00085, "num_train_timesteps": 1000, "skip_prk_steps": True}, f)
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump(index, f)
    return folder


def full_original_shapes(kind):
    """{original-layout key: shape} of a full-size model, from the converter and `meta` modules."""
    base = empty_base_model(kind)
    state = {"unet": base.unet.state_dict(), "vae": base.vae.state_dict()}
    for name, module in zip(("text_encoder", "text_encoder_2"), base.text_encoders):
        state[name] = module.state_dict()
    plan = ldm.plan_from_diffusers({c: list(sd) for c, sd in state.items()}, kind, base.architecture)
    shapes = {}
    for component, rules in plan.rules.items():
        for rule in rules:
            parts = [tuple(state[component][k].shape) for k in rule.diffusers]
            if rule.op == "qkv":
                shape = (sum(p[0] for p in parts),) + parts[0][1:]
            elif rule.op == "transpose":
                shape = parts[0][::-1]
            elif rule.op == "conv1x1":
                shape = parts[0] + (1, 1)
            else:
                shape = parts[0]
            shapes[rule.original[0]] = shape
    return shapes


def write_header_only(path, shapes, metadata=None, dtype="F16"):
    """A safetensors header naming these tensors, without their data: detection reads only the
    header, and a 7 GB checkpoint's names and shapes cost a few hundred kilobytes."""
    header, offset = {}, 0
    size = {"F16": 2, "BF16": 2, "F32": 4, "I64": 8}[dtype]
    for name, shape in shapes.items():
        n = size
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode("utf-8")
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + b"\0" * 16)
    return path


def write_bpe_file(path, merges=CLIP_MERGES + 100):
    """A CLIP-format BPE file (header line, then merges) of generated, valid merges: pairs of
    byte symbols, then the same ending a word. More than 48,894 by default, so tests see the cut."""
    symbols = [s for s in bytes_to_unicode().values()]
    lines = ['"bpe_simple_vocab_16e6.txt#version: 0.2"']
    for suffix in ("", "</w>"):
        for a in symbols:
            for b in symbols:
                if len(lines) > merges:
                    break
                lines.append("%s %s%s" % (a, b, suffix))
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(("\n".join(lines) + "\n").encode("utf-8"))
    return path
