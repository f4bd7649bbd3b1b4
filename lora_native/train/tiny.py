"""Tiny SD1.5-like and SDXL-like models for tests and the demo: the real structure, small sizes.

Same block types, Transformer2DModel / cross-attention layout, resnet shortcuts, SDXL's
text_time embedding and two text encoders as the real models, so LoRA target names and module
kinds follow the real pattern; 32-64 channels, one resnet per block, a VAE with 4 latent
channels that downscales by 8 (64x64 images give 8x8 latents), and text encoders of width 32
over a small BPE vocabulary of our own (`lora_native/assets/tiny_tokenizer/`, learned from
`TINY_CORPUS` by `learn_bpe`). `make_tiny_model` writes a single-file checkpoint in the
original layout with its architecture in the metadata, and the tokenizer beside it.
"""
import json
import os
import re
import shutil

from ..configs import load_architecture
from ..formats import ldm
from . import tokenizer as tok
from .model import ARCHITECTURE_KEY, build_components

TINY_TOKENIZER_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "tiny_tokenizer")
TINY_MERGES = 320
TINY_CORPUS = """
a photo of a person, a portrait of a woman, a portrait of a man, a dog, a cat, a horse, a bird on a branch,
a paper-cut landscape, layered ridges, a lake in front, sunset sky, sun on the left, sun on the right,
mountains, hills, forest, river, ocean, beach, city street at night, snow, rain, clouds, flowers, garden,
in the style of sks, sks style, sks person, sks dog, an illustration, a painting, a drawing, watercolor,
oil painting, digital art, anime, masterpiece, best quality, high quality, detailed, highly detailed,
close-up, full body, looking at viewer, smiling, standing, sitting, red, green, blue, yellow, orange,
purple, pink, black, white, gray, brown, golden, dark, bright, light, soft lighting, warm colors,
cold colors, background, foreground, simple background, white background, 1girl, 1boy, solo, hair,
eyes, long hair, short hair, blue eyes, dress, shirt, hat, glasses, outdoors, indoors, day, night,
"""


def learn_bpe(text, num_merges):
    """CLIP-style BPE merges learned from `text`: words split like CLIP's pre-tokenizer, symbols
    from the byte-to-unicode map, "</w>" on each word's last symbol; the most frequent pair
    wins, ties broken by the pair itself, so the result is deterministic."""
    byte_map = tok.bytes_to_unicode()
    counts = {}
    for word in re.findall(r"[a-z]+|[0-9]|[^\sa-z0-9]+", text.lower()):
        symbols = [byte_map[b] for b in word.encode("utf-8")]
        symbols[-1] += "</w>"
        counts[tuple(symbols)] = counts.get(tuple(symbols), 0) + 1
    merges = []
    for _ in range(num_merges):
        pairs = {}
        for word, n in counts.items():
            for pair in zip(word, word[1:]):
                pairs[pair] = pairs.get(pair, 0) + n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        joined = best[0] + best[1]
        merged = {}
        for word, n in counts.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + n
        counts = merged
    return merges


def write_tiny_tokenizer(folder=TINY_TOKENIZER_DIR):
    """(Re)write the tiny tokenizer's vocab.json / merges.txt / tokenizer_config.json."""
    merges = learn_bpe(TINY_CORPUS, TINY_MERGES)
    return tok.write_tokenizer_folder(tok.vocab_from_merges(merges), merges, folder)


def tiny_vocab_size():
    with open(os.path.join(TINY_TOKENIZER_DIR, "vocab.json"), encoding="utf-8") as f:
        return len(json.load(f))


def _text_encoder(vocab, act, cls, projection):
    return {"_class_name": cls, "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0, "eos_token_id": 2,
            "hidden_act": act, "hidden_size": 32, "initializer_factor": 1.0, "initializer_range": 0.02,
            "intermediate_size": 64, "layer_norm_eps": 1e-05, "max_position_embeddings": 77,
            "num_attention_heads": 2, "num_hidden_layers": 2, "pad_token_id": 1, "projection_dim": projection,
            "vocab_size": vocab}


def tiny_architecture(kind):
    """The architecture dict of a tiny model of `kind`, derived from the real one."""
    arch = load_architecture(kind)
    vocab = tiny_vocab_size()
    arch["vae"].update(block_out_channels=[16, 32, 32, 32], layers_per_block=1, norm_num_groups=8, sample_size=64)
    unet = arch["unet"]
    # Two resnets per block, as the real models have: LoRA key names carry the real block indices.
    unet.update(layers_per_block=2, norm_num_groups=8, sample_size=8)
    arch["text_encoder"] = _text_encoder(vocab, "quick_gelu", "CLIPTextModel", 32)
    if kind == "sd15":
        unet.update(block_out_channels=[16, 32, 64, 64], attention_head_dim=2, cross_attention_dim=32)
    else:
        arch["text_encoder_2"] = _text_encoder(vocab, "gelu", "CLIPTextModelWithProjection", 32)
        time_dim = 8
        unet.update(block_out_channels=[16, 32, 64], attention_head_dim=[2, 4, 4], transformer_layers_per_block=[1, 1, 2],
                    cross_attention_dim=32 + 32, addition_time_embed_dim=time_dim, addition_embed_type_num_heads=4,
                    projection_class_embeddings_input_dim=32 + 6 * time_dim)
    arch["kind"] = kind
    return arch


def tokenizer_folder_for(path):
    """Where make_tiny_model puts the tokenizer of a model file: `<name>.tokenizer/` beside it."""
    return os.path.splitext(os.fspath(path))[0] + ".tokenizer"


def make_tiny_model(path, kind="sd15", seed=0):
    """Write a tiny `kind` model ("sd15" | "sdxl") with seeded random weights to `path` as a
    single-file .safetensors in the original layout, and its tokenizer beside it. Returns path."""
    import torch
    from safetensors.torch import save_file

    if kind not in ("sd15", "sdxl"):
        raise ValueError("kind must be sd15 or sdxl, got %r" % (kind,))
    path = os.fspath(path)
    arch = tiny_architecture(kind)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        modules = build_components(arch, "cpu")
    state_dicts = {name: module.state_dict() for name, module in modules.items()}
    original, plan = ldm.diffusers_to_original(state_dicts, kind, arch)
    if plan.unexpected:
        raise RuntimeError("tiny %s model has keys the converter cannot place: %s" % (kind, plan.unexpected[:5]))
    original = {k: v.detach().clone().contiguous() for k, v in original.items()}
    metadata = {ARCHITECTURE_KEY: json.dumps(arch, sort_keys=True), "modelspec.title": "lora-native tiny %s" % kind,
                "lora_native.tiny_seed": str(seed)}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(original, path, metadata=metadata)
    folder = tokenizer_folder_for(path)
    os.makedirs(folder, exist_ok=True)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(TINY_TOKENIZER_DIR, name), os.path.join(folder, name))
    return path
