"""WD14 tagger captions (danbooru tags) with onnxruntime.

A model is a folder holding `model.onnx` + `selected_tags.csv` (SmilingWolf's repositories, e.g.
`SmilingWolf/wd-v1-4-moat-tagger-v2`), or a `<name>.onnx` file with a sibling `<name>.csv`
(ComfyUI-WD14-Tagger's `models/` layout). Facts (sd-scripts finetune/tag_images_by_wd14_tagger.py,
SmilingWolf's tagger app): input float32 NHWC, **BGR 0-255**, the image padded to a white square and
resized to the model's size (read from `session.get_inputs()[0].shape`, 448 for wd-v1-4), no
normalisation; outputs are sigmoid probabilities, one per row of selected_tags.csv (header
`tag_id,name,category,count`; category 9 rating, 0 general, 4 character).

Captions: character tags first, then general tags, each by descending probability, joined with
", "; general tags at >= general_threshold (0.35), character tags at >= character_threshold (0.85);
rating tags left out unless include_ratings (then the most probable one comes first); tags in
exclude_tags (a list or a comma-separated string, matched with or without underscores, any case)
left out. Underscores become spaces except in kaomoji-like tags: tags of at most 3 characters
(sd-scripts' `len(tag) > 3` rule) and the kaomoji list of SmilingWolf's tagger app, so `^_^`,
`>_<` and `(o)_(o)` stay as they are.
"""
import csv
import os
import sys

import numpy as np

from . import models
from ..errors import CaptionModelError, UsageError
from ..fsutil import display_path

NAME = "wd14"
TITLE = "WD14 tagger"
STYLE = "tags"
EXPECTED = ("a folder with model.onnx + selected_tags.csv, or a <name>.onnx file beside <name>.csv "
            "(ComfyUI-WD14-Tagger's layout)")
HOW_TO_GET = ("huggingface-cli download SmilingWolf/wd-v1-4-moat-tagger-v2 model.onnx selected_tags.csv "
              "--local-dir models/captioners/wd14/wd-v1-4-moat-tagger-v2 (any SmilingWolf wd tagger works; "
              "newer huggingface_hub calls the command `hf download`)")
OPTIONS = {"general_threshold": 0.35, "character_threshold": 0.85, "exclude_tags": (), "include_ratings": False}

RATING, GENERAL, CHARACTER = 9, 0, 4
# Tags that keep their underscores (the list SmilingWolf's tagger app keeps), besides all tags of
# up to 3 characters.
KAOMOJI = frozenset(("0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9",
                     ">_o", "@_@", "^_^", "o_o", "u_u", "x_x", "|_|", "||_||"))


def display_tag(tag):
    """The tag as it is written in captions: underscores to spaces, kaomoji kept."""
    if len(tag) <= 3 or tag in KAOMOJI:
        return tag
    return tag.replace("_", " ")


def _this():
    return sys.modules[__name__]


def tags_file(onnx_path):
    """The tag list of a model file: <name>.csv beside it, else selected_tags.csv in its folder."""
    folder = os.path.dirname(onnx_path)
    for candidate in (os.path.splitext(onnx_path)[0] + ".csv", os.path.join(folder, "selected_tags.csv")):
        if os.path.isfile(candidate):
            return candidate
    return None


def locate(path):
    """A folder or an .onnx file -> the .onnx file to load (its tag list checked to exist)."""
    if os.path.isfile(path):
        if not path.lower().endswith(".onnx"):
            raise models.incomplete_error(_this(), path, "it is not an .onnx file")
        if not tags_file(path):
            stem = os.path.splitext(os.path.basename(path))[0]
            raise models.incomplete_error(_this(), path, "missing its tag list (%s.csv beside it, or "
                                                         "selected_tags.csv in its folder)" % stem)
        return path
    if not os.path.isdir(path):
        raise models.incomplete_error(_this(), path, "it does not exist")
    names = set(os.listdir(path))
    if "model.onnx" in names and "selected_tags.csv" in names:
        return os.path.join(path, "model.onnx")
    pairs = sorted(n for n in names if n.lower().endswith(".onnx") and os.path.splitext(n)[0] + ".csv" in names)
    if len(pairs) == 1:
        return os.path.join(path, pairs[0])
    if len(pairs) > 1:
        raise models.incomplete_error(_this(), path, "it holds several taggers (%s): pass one of the .onnx files "
                                                     "with --model" % ", ".join(pairs))
    missing = [n for n in ("model.onnx", "selected_tags.csv") if n not in names]
    raise models.incomplete_error(_this(), path, "missing " + " and ".join(missing))


def candidates(base):
    try:
        files = sorted(os.path.join(base, n) for n in os.listdir(base) if n.lower().endswith(".onnx"))
    except OSError:
        files = []
    return models.subfolders(base) + files


def read_tags(path):
    """selected_tags.csv -> [(name, category)] in output order."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise CaptionModelError("cannot read the tag list %s: %s" % (display_path(path), e), path) from None
    if not rows or [h.strip().lower() for h in rows[0][:3]] != ["tag_id", "name", "category"]:
        raise CaptionModelError("%s:1: a WD14 tag list starts with the header tag_id,name,category,count (got %s)"
                                % (display_path(path), ",".join(rows[0]) if rows else "an empty file"), path)
    tags = []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            tags.append((row[1], int(row[2])))
        except (IndexError, ValueError):
            raise CaptionModelError("%s:%d: expected tag_id,name,category,count with a numeric category"
                                    % (display_path(path), line), path) from None
    return tags


def _providers(ort, device):
    available = ort.get_available_providers()
    if device in (None, "", "auto"):
        return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + ["CPUExecutionProvider"]
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if str(device).startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise UsageError("device %s: this onnxruntime has no CUDA provider (install onnxruntime-gpu, or use "
                             "--device cpu)" % device)
        index = str(device).partition(":")[2]
        return [("CUDAExecutionProvider", {"device_id": int(index)}) if index else "CUDAExecutionProvider",
                "CPUExecutionProvider"]
    raise UsageError("device must be cpu or cuda, got %r" % (device,))


def _exclusions(exclude_tags):
    if isinstance(exclude_tags, str):
        exclude_tags = exclude_tags.split(",")
    out = set()
    for tag in exclude_tags or ():
        tag = str(tag).strip().lower()
        if tag:
            out.add(tag)
            out.add(tag.replace("_", " "))
    return frozenset(out)


class Wd14Captioner:
    name = NAME
    style = STYLE

    def __init__(self, path, device=None, dtype=None, general_threshold=0.35, character_threshold=0.85,
                 exclude_tags=(), include_ratings=False, threads=0):
        """threads: onnxruntime's intra-op threads (0: its default, all cores)."""
        try:
            import onnxruntime as ort
        except ImportError:
            raise UsageError("the WD14 tagger needs onnxruntime: pip install 'lora-native[caption]' "
                             "(or onnxruntime-gpu for a GPU)") from None
        for label, value in (("general_threshold", general_threshold), ("character_threshold", character_threshold)):
            if not 0.0 <= float(value) <= 1.0:
                raise UsageError("%s must be between 0 and 1, got %r" % (label, value))
        self.path = locate(path)
        self.tags_path = tags_file(self.path)
        tags = read_tags(self.tags_path)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(self.path, options, providers=_providers(ort, device))
        except UsageError:
            raise
        except Exception as e:  # onnxruntime raises its own exception types
            raise CaptionModelError("cannot load the WD14 model %s: %s" % (display_path(self.path), e),
                                    self.path) from None
        self.on_cpu = self.session.get_providers()[0] == "CPUExecutionProvider"
        self.torch_model = False
        inp = self.session.get_inputs()[0]
        shape = list(inp.shape)
        if len(shape) != 4 or shape[3] != 3 or not isinstance(shape[1], int) or shape[1] != shape[2]:
            raise CaptionModelError("%s: expected a WD14 tagger with input [batch, size, size, 3] (NHWC), got %s"
                                    % (display_path(self.path), shape), self.path)
        self.size = shape[1]
        self.input_name = inp.name
        self.max_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        n_out = self.session.get_outputs()[0].shape[-1]
        if isinstance(n_out, int) and n_out != len(tags):
            raise CaptionModelError("%s outputs %d scores but its tag list %s has %d tags: they do not belong "
                                    "together" % (display_path(self.path), n_out, display_path(self.tags_path),
                                                  len(tags)), self.path)
        from .. import prep
        self.prep = dict(prep.wd14_spec(self.size))
        self.names = [display_tag(name) for name, _ in tags]
        self.raw_names = [name for name, _ in tags]
        categories = np.array([c for _, c in tags])
        self.rating_idx = np.flatnonzero(categories == RATING)
        self.general_idx = np.flatnonzero(categories == GENERAL)
        self.character_idx = np.flatnonzero(categories == CHARACTER)
        self.general_threshold = float(general_threshold)
        self.character_threshold = float(character_threshold)
        self.include_ratings = bool(include_ratings)
        self.exclude = _exclusions(exclude_tags)

    def probabilities(self, pixels):
        """float32 [n, size, size, 3] BGR 0-255 -> [n, tags] probabilities."""
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        step = self.max_batch or len(pixels)
        outs = [self.session.run(None, {self.input_name: pixels[i:i + step]})[0] for i in range(0, len(pixels), step)]
        return np.concatenate(outs, axis=0) if outs else np.zeros((0, len(self.names)), np.float32)

    def _keep(self, i):
        return self.raw_names[i].lower() not in self.exclude and self.names[i].lower() not in self.exclude

    def tags_of(self, probs):
        """One row of probabilities -> the caption's tags, in caption order."""
        chosen = []
        if self.include_ratings and len(self.rating_idx):
            top = self.rating_idx[int(np.argmax(probs[self.rating_idx]))]
            if self._keep(top):
                chosen.append(self.names[top])
        for idx, threshold in ((self.character_idx, self.character_threshold),
                               (self.general_idx, self.general_threshold)):
            hits = [i for i in idx if probs[i] >= threshold and self._keep(i)]
            hits.sort(key=lambda i: (-float(probs[i]), i))
            chosen.extend(self.names[i] for i in hits)
        return chosen

    def caption(self, pixels):
        return [", ".join(self.tags_of(row)) for row in self.probabilities(pixels)]

    def close(self):
        self.session = None


def load(path, device=None, dtype=None, **options):
    return Wd14Captioner(path, device=device, dtype=dtype, **options)


__all__ = ["Wd14Captioner", "load", "locate", "display_tag", "read_tags", "OPTIONS", "KAOMOJI", "NAME"]
