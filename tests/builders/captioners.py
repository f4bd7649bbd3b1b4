"""Tiny captioning models, saved the way users have them, and a Pillow reference of the model-input
preprocessing.

    make_blip_folder(dir)        transformers BLIP folder (config.json, model.safetensors,
                                 preprocessor_config.json 32x32, BERT tokenizer files)
    make_clip_folder(dir)        transformers CLIP folder (tiny CLIPConfig, CLIPImageProcessor 32 px,
                                 the package's tiny CLIP BPE tokenizer)
    make_wd14_model(dir, tags)   model.onnx + selected_tags.csv (or <name>.onnx + <name>.csv): tag k's
                                 logit = w_k . (mean B, mean G, mean R) / 255 + b_k, then a sigmoid, so
                                 a test can predict every probability from the picture's mean colour
"""
import csv
import io
import os
import shutil

import numpy as np

from lora_native.train.tiny import TINY_TOKENIZER_DIR

BLIP_WORDS = ("a photo of the red blue green cat dog house tree painting drawing on with and in picture "
              "woman man sitting standing").split()
BLIP_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_blip_folder(folder, seed=0, size=32):
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor

    os.makedirs(folder, exist_ok=True)
    vocab = BLIP_SPECIAL + list(BLIP_WORDS) + ["[DEC]"]
    with open(os.path.join(folder, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True, bos_token="[DEC]")
    config = BlipConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=size, patch_size=8),
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, encoder_hidden_size=32, max_position_embeddings=64,
                         bos_token_id=vocab.index("[DEC]"), pad_token_id=0, sep_token_id=3, eos_token_id=3),
        projection_dim=32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BlipForConditionalGeneration(config).eval()
    model.save_pretrained(folder)
    BlipImageProcessor(size={"height": size, "width": size}).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_clip_folder(folder, seed=0, size=32, projection_dim=16):
    import json

    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    os.makedirs(folder, exist_ok=True)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(os.path.join(TINY_TOKENIZER_DIR, name), os.path.join(folder, name))
    with open(os.path.join(folder, "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=vocab["<|startoftext|>"],
                         eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"]),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=size, patch_size=8),
        projection_dim=projection_dim)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
    model.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(folder)
    return folder


# ---- WD14

def write_tags_csv(path, tags):
    """tags: [(name, category)] -> selected_tags.csv (tag_id,name,category,count)."""
    out = io.StringIO(newline="")
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["tag_id", "name", "category", "count"])
    for i, (name, category) in enumerate(tags):
        w.writerow([1000 + i, name, category, 5000 - i])
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(out.getvalue())


def make_wd14_model(folder, tags, size=64, name=None, fixed_batch=None):
    """tags: [(name, category, (wB, wG, wR), bias)]. Writes model.onnx + selected_tags.csv into
    folder, or <name>.onnx + <name>.csv with `name`. Returns the .onnx path. Input "input_1:0"
    float32 [batch, size, size, 3] (batch dynamic unless fixed_batch), output "predictions_sigmoid"."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    os.makedirs(folder, exist_ok=True)
    n = len(tags)
    weights = np.array([t[2] for t in tags], dtype=np.float32).T / 255.0  # [3, n], rows B, G, R
    bias = np.array([t[3] for t in tags], dtype=np.float32)
    batch = fixed_batch if fixed_batch else "batch"
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input_1:0"], ["mean"], axes=[1, 2], keepdims=0),
         helper.make_node("MatMul", ["mean", "W"], ["logits0"]),
         helper.make_node("Add", ["logits0", "B"], ["logits"]),
         helper.make_node("Sigmoid", ["logits"], ["predictions_sigmoid"])],
        "tiny_wd14",
        [helper.make_tensor_value_info("input_1:0", TensorProto.FLOAT, [batch, size, size, 3])],
        [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, [batch, n])],
        [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    stem = name or "model"
    onnx_path = os.path.join(folder, stem + ".onnx")
    onnx.save(model, onnx_path)
    write_tags_csv(os.path.join(folder, (name + ".csv") if name else "selected_tags.csv"),
                   [(t[0], t[1]) for t in tags])
    return onnx_path


def wd14_probabilities(tags, rgb):
    """The tiny tagger's probabilities for a picture whose mean colour (after padding) is rgb."""
    bgr = np.array(rgb[::-1], dtype=np.float64) / 255.0
    return {t[0]: 1.0 / (1.0 + np.exp(-(np.dot(t[2], bgr) + t[3]))) for t in tags}


def logit(p):
    return float(np.log(p / (1.0 - p)))


# ---- pictures

def save_solid(path, rgb, size=(40, 40), fmt=None):
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, tuple(int(c) for c in rgb)).save(path, fmt)
    return path


def save_textured(path, seed, size=(48, 40)):
    from PIL import Image

    rng = np.random.default_rng(seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    h, w = size[1], size[0]
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * (3 + c + seed % 5) + yy * (2 + seed % 3)) % 256 for c in range(3)], axis=-1)
    base = base + rng.integers(0, 40, size=base.shape)
    Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(path)
    return path


# ---- a Pillow reference of _native.prepare_images (transformers' PIL processors, SmilingWolf's app)

_FILTERS = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}


def reference_prepare(paths, size=(224, 224), mode="resize", short_side=0, filter="bicubic", layout="nchw",
                      scale=1 / 255, mean=(0, 0, 0), std=(1, 1, 1), threads=None, max_pixels=None):
    from PIL import Image, ImageOps

    w, h = size
    out = np.zeros((len(paths), 3, h, w) if layout == "nchw" else (len(paths), h, w, 3), np.float32)
    errors = []
    resample = _FILTERS[filter]
    for i, path in enumerate(paths):
        try:
            im = Image.open(path)
            im = ImageOps.exif_transpose(im)
            im.load()
        except Exception as e:  # noqa: BLE001 - the reference reports any failure
            errors.append("cannot decode: %s" % e)
            continue
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, rgba)
        im = im.convert("RGB")
        if mode == "resize":
            im = im.resize((w, h), resample)
        elif mode == "short_crop":
            iw, ih = im.size
            if iw <= ih:
                nw, nh = short_side, int(short_side * ih / iw)
            else:
                nw, nh = int(short_side * iw / ih), short_side
            im = im.resize((nw, nh), resample)
            left, top = (nw - w) // 2, (nh - h) // 2
            im = im.crop((left, top, left + w, top + h))
        elif mode == "pad_square":
            iw, ih = im.size
            side = max(iw, ih)
            canvas = Image.new("RGB", (side, side), (255, 255, 255))
            canvas.paste(im, ((side - iw) // 2, (side - ih) // 2))
            im = canvas.resize((w, h), resample)
        arr = np.asarray(im, dtype=np.float32)
        arr = (arr * np.float32(scale) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
        out[i] = arr.transpose(2, 0, 1) if layout == "nchw" else arr[..., ::-1]
        errors.append(None)
    return out, errors


def reference_spec_from_processor_config(cfg):
    size = cfg.get("size") or {}
    filt = {v: k for k, v in _FILTERS.items()}.get(cfg.get("resample", 3), "bicubic")
    spec = {"filter": filt, "layout": "nchw",
            "scale": cfg.get("rescale_factor", 1 / 255) if cfg.get("do_rescale", True) else 1.0}
    if cfg.get("do_normalize", True):
        spec["mean"], spec["std"] = tuple(cfg["image_mean"]), tuple(cfg["image_std"])
    if "shortest_edge" in size:
        crop = cfg.get("crop_size") or {"height": size["shortest_edge"], "width": size["shortest_edge"]}
        spec.update(mode="short_crop", short_side=size["shortest_edge"], size=(crop["width"], crop["height"]))
    else:
        spec.update(mode="resize", size=(size["width"], size["height"]))
    return spec


def reference_wd14_spec(size):
    return {"size": (size, size), "mode": "pad_square", "filter": "bicubic", "layout": "nhwc_bgr", "scale": 1.0,
            "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
