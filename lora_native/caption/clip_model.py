"""A local CLIP model for image and text embeddings: CLIP interrogation (captions) and semantic
duplicate search share it.

    clip = load_clip("models/captioners/clip/clip-vit-large-patch14", device="cpu")
    for batch in prepared_batches(paths, clip.prep, batch_size=32):      # lora_native.caption.batches
        vectors = clip.embed_images(batch.pixels[batch.ok])             # float32 [n, d], unit length
    texts = clip.embed_texts(["a photo", "a painting"])                  # float32 [2, d], unit length

Formats: a transformers CLIP folder (config.json, model.safetensors or pytorch_model.bin,
preprocessor_config.json, and vocab.json + merges.txt or tokenizer.json: what
`huggingface-cli download openai/clip-vit-large-patch14` leaves), loaded with CLIPModel; or an
open_clip folder (open_clip_config.json + open_clip_pytorch_model.bin / open_clip_model.safetensors),
which needs the open_clip package: it is used only when importable (it pulls torchvision, so it is
not a dependency), and without it such a folder is a clear error. The open_clip path follows
open_clip's documented API but is not covered by the test suite (open_clip is not installed there).

`model_id` fingerprints the model (its config and preprocessing files, the weight files' names and
sizes, a hash of the first MiB of each weight file): caches of embeddings are keyed by it, so a
changed model gives new embeddings.
"""
import hashlib
import importlib.util
import json
import os
import sys
import tempfile

import numpy as np

from . import models
from ..errors import CaptionModelError
from ..fsutil import display_path

NAME = "clip"
TITLE = "CLIP"
EXPECTED = ("a transformers CLIP folder: config.json, model.safetensors (or pytorch_model.bin), "
            "preprocessor_config.json and the tokenizer (vocab.json + merges.txt, or tokenizer.json); "
            "an open_clip folder (open_clip_config.json + weights) works only with open_clip installed")
HOW_TO_GET = ("huggingface-cli download openai/clip-vit-large-patch14 --local-dir "
              "models/captioners/clip/clip-vit-large-patch14 (newer huggingface_hub calls the command `hf download`)")
TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))
OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
FINGERPRINT_FILES = ("config.json", "preprocessor_config.json", "processor_config.json", "open_clip_config.json")
WEIGHT_EXTENSIONS = (".safetensors", ".bin", ".pt", ".pth")
HEAD_BYTES = 1 << 20
# OpenAI's CLIP normalisation (open_clip's default when its config names none)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _this():
    return sys.modules[__name__]


def open_clip_available():
    return importlib.util.find_spec("open_clip") is not None


def detect(path):
    """'transformers' | 'open_clip' for a usable folder; raises CaptionModelError otherwise."""
    problem = models.hf_folder_problem(path, TOKENIZER_FILES)
    if problem is None:
        return "transformers"
    if os.path.isdir(path):
        names = set(os.listdir(path))
        if "open_clip_config.json" in names or any(w in names for w in OPEN_CLIP_WEIGHTS):
            if not open_clip_available():
                raise models.incomplete_error(
                    _this(), path, "it is an open_clip checkpoint, and the open_clip package is not installed "
                    "(pip install open_clip_torch, or use a transformers CLIP folder instead)")
            if "open_clip_config.json" not in names or not any(w in names for w in OPEN_CLIP_WEIGHTS):
                raise models.incomplete_error(_this(), path, "an open_clip folder needs open_clip_config.json and "
                                                             "%s" % " or ".join(OPEN_CLIP_WEIGHTS))
            return "open_clip"
    elif os.path.isfile(path) and path.lower().endswith(WEIGHT_EXTENSIONS):
        problem = ("a single weights file is not enough: the folder it came from (with config.json, "
                   "preprocessor_config.json and the tokenizer) is needed")
    raise models.incomplete_error(_this(), path, problem)


def locate(path):
    detect(path)
    return path


def candidates(base):
    return models.subfolders(base)


def fingerprint(folder):
    """A stable id of the model in `folder` (see the module docstring)."""
    h = hashlib.sha256(b"lora-native clip model v1\0")
    names = sorted(os.listdir(folder))
    for name in names:
        path = os.path.join(folder, name)
        if name in FINGERPRINT_FILES and os.path.isfile(path):
            with open(path, "rb") as f:
                data = f.read()
            h.update(b"file\0%s\0%d\0" % (name.encode("utf-8", "surrogateescape"), len(data)))
            h.update(data)
    for name in names:
        path = os.path.join(folder, name)
        if name.lower().endswith(WEIGHT_EXTENSIONS) and os.path.isfile(path):
            size = os.path.getsize(path)
            with open(path, "rb") as f:
                head = f.read(HEAD_BYTES)
            h.update(b"weights\0%s\0%d\0" % (name.encode("utf-8", "surrogateescape"), size))
            h.update(hashlib.sha256(head).digest())
    return h.hexdigest()[:32]


def _normalize(x):
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class ClipModel:
    """Attributes: path, model_id, prep (kwargs for `_native.prepare_images`), device, dtype, kind
    ('transformers' | 'open_clip'), dim (embedding size)."""

    def __init__(self, path, device="cpu", dtype=None):
        import torch

        self._torch = torch
        self.path = os.path.abspath(os.fspath(path))
        self.kind = detect(self.path)
        self.device = models.torch_device(device)
        self.on_cpu = self.device == "cpu"
        self.dtype = models.torch_dtype(dtype, self.device)
        self.model_id = fingerprint(self.path)
        if self.kind == "transformers":
            self._load_transformers()
        else:
            self._load_open_clip()

    # -- transformers
    def _load_transformers(self):
        from transformers import AutoTokenizer, CLIPModel

        self.prep = models.prep_spec(self.path)
        self.model = CLIPModel.from_pretrained(self.path, local_files_only=True, dtype=self.dtype)
        self.model = self.model.to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        if len(self.tokenizer) < 260:  # the 2-token tokenizer trap (see lora_native.train.tokenizer)
            raise CaptionModelError("the tokenizer of %s has only %d tokens: its vocab.json/merges.txt are not "
                                    "CLIP's" % (display_path(self.path), len(self.tokenizer)), self.path)
        self.max_length = int(self.model.config.text_config.max_position_embeddings)
        self.dim = int(self.model.config.projection_dim)

    def _image_features(self, px):
        if self.kind == "open_clip":
            return self.model.encode_image(px)
        pooled = self.model.vision_model(pixel_values=px).pooler_output
        return self.model.visual_projection(pooled)

    def _text_features(self, texts):
        if self.kind == "open_clip":
            return self.model.encode_text(self.tokenizer(texts).to(self.device))
        enc = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        out = self.model.text_model(input_ids=enc.input_ids.to(self.device),
                                    attention_mask=enc.attention_mask.to(self.device))
        return self.model.text_projection(out.pooler_output)

    # -- open_clip (used only when installed; see the module docstring)
    def _load_open_clip(self):
        import open_clip

        with open(os.path.join(self.path, "open_clip_config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
        model_cfg, pre = cfg.get("model_cfg") or {}, cfg.get("preprocess_cfg") or {}
        name = "lora-native-" + self.model_id
        with tempfile.TemporaryDirectory() as tmp:
            cfg_file = os.path.join(tmp, name + ".json")
            with open(cfg_file, "w", encoding="utf-8") as f:
                json.dump(model_cfg, f)
            open_clip.add_model_config(cfg_file)
        weights = next(os.path.join(self.path, w) for w in OPEN_CLIP_WEIGHTS
                       if os.path.isfile(os.path.join(self.path, w)))
        self.model = open_clip.create_model(name, pretrained=weights, device=self.device).to(self.dtype).eval()
        self.tokenizer = open_clip.get_tokenizer(name)
        size = pre.get("size") or model_cfg.get("vision_cfg", {}).get("image_size", 224)
        size = size if isinstance(size, int) else int(size[0])
        self.prep = {"size": (size, size), "mode": "short_crop" if pre.get("resize_mode", "shortest") == "shortest"
                     else "resize", "short_side": size, "filter": pre.get("interpolation", "bicubic"),
                     "layout": "nchw", "scale": 1 / 255, "mean": tuple(pre.get("mean", OPENAI_MEAN)),
                     "std": tuple(pre.get("std", OPENAI_STD))}
        self.dim = int(model_cfg.get("embed_dim", 0))

    # -- public
    def embed_images(self, pixels):
        """float32 [n, 3, h, w] (from prepare_images with self.prep) -> float32 [n, d], unit length."""
        torch = self._torch
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        if len(pixels) == 0:
            return np.zeros((0, self.dim), np.float32)
        with torch.inference_mode():
            px = torch.from_numpy(pixels).to(self.device, self.dtype)
            feats = self._image_features(px).float().cpu().numpy()
        return _normalize(feats)

    def embed_texts(self, texts, batch_size=256):
        """list of str -> float32 [n, d], unit length."""
        torch = self._torch
        texts = list(texts)
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                out.append(self._text_features(texts[i:i + batch_size]).float().cpu().numpy())
        if not out:
            return np.zeros((0, self.dim), np.float32)
        return _normalize(np.concatenate(out, axis=0))

    def close(self):
        self.model = None


def load_clip(path, device="cpu", dtype=None):
    """A ClipModel from a local folder (see the module docstring); CaptionModelError when the folder
    is missing or incomplete. device None or 'auto': CUDA when available."""
    return ClipModel(path, device=device, dtype=dtype)


__all__ = ["ClipModel", "load_clip", "fingerprint", "detect"]
