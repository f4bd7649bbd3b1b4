"""Training data: scan a dataset folder, assign buckets, plan deterministic batches, process
captions, and load batches of pixels (decoded and resized in C on native threads).

    scan = scan_dataset("data/my_set", trigger_word="sks")
    buckets = assign_buckets(scan.samples, (512, 512), enable_bucket=True)
    for b, indices in enumerate(epoch_batches(scan.samples, buckets, batch_size=4, seed=42, epoch=0)):
        rng = batch_rng(42, 0, b)
        pixels, kept, warnings = load_batch(scan.samples, indices, buckets, flip_aug=True, rng=rng)
        captions = [process_caption(scan.samples[i].caption, "sks", True, 1, 0.05, rng) for i in kept]

The data position of a run is (epoch, batch index): the batch order of an epoch depends on the
seed and the epoch only, and every random choice inside a batch (flip, colour jitter, caption
shuffle and dropout) comes from `batch_rng(seed, epoch, batch_index)`, so a resumed run replays
exactly what an uninterrupted one does. Shuffles use the PCG64 raw stream (stable across NumPy
releases), not Generator.shuffle, whose algorithm NumPy may change.
"""
import hashlib
import os
import re
from dataclasses import dataclass
from typing import Tuple

import numpy as np

from .. import _native
from ..captions import read_captions, with_trigger
from ..dataset import IMAGE_EXTENSIONS, list_images, parse_resolution, plan_image
from ..errors import DatasetError, UsageError
from ..fsutil import display_path

# kohya folder names: "<repeats>_<concept>" (sd-scripts splits at the first "_").
KOHYA_FOLDER = re.compile(r"^(\d+)_(.*)$", re.S)
SCAN_CHUNK = 1024
COLOR_JITTER = 0.1  # brightness, contrast and saturation factors are drawn from [1 - 0.1, 1 + 0.1]
# First words of the seed sequences: the epoch order and the per-batch stream never share a stream.
_ORDER_STREAM, _BATCH_STREAM = 0x6F72646572, 0x6261746368


@dataclass(frozen=True)
class Sample:
    """One usable training image (sizes after EXIF orientation, from the file header)."""

    path: str       # absolute path
    rel: str        # relative to train_data_dir
    caption: str    # from metadata.csv, the caption file, or the kohya concept; trigger word prepended
    repeats: int    # times per epoch (kohya "<N>_<concept>" folders; 1 otherwise)
    concept: str    # the kohya folder's concept ("style" for 10_style), "" outside kohya folders
    folder: str     # dataset dir name for ss_tag_frequency / ss_dataset_dirs
    width: int
    height: int
    file_hash: int  # XXH64 of the file bytes: loading refuses a file that changed since the scan
    file_size: int


@dataclass(frozen=True)
class DatasetScan:
    samples: Tuple[Sample, ...]
    warnings: Tuple[str, ...]  # unusable files (path and reason), caption problems, ignored folders
    root: str = ""
    layout: str = ""           # "metadata" (metadata.csv), "kohya" (<N>_<concept>/ folders) or "flat"

    @property
    def num_train_images(self):
        """Images per epoch counting repeats (sd-scripts' ss_num_train_images)."""
        return sum(s.repeats for s in self.samples)

    @property
    def tag_frequency(self):
        return tag_frequency(self.samples)

    @property
    def dataset_dirs(self):
        return dataset_dirs(self.samples)


def _kohya_folder(rel):
    """(repeats, concept, folder name) when rel lies in a top-level "<N>_<concept>" folder, else None."""
    parts = rel.split(os.sep)
    if len(parts) < 2:
        return None
    m = KOHYA_FOLDER.match(parts[0])
    return (int(m.group(1)), m.group(2), parts[0]) if m else None


def _analyze_headers(paths, threads, max_pixels):
    """Header-only analysis (read, XXH64, structure checks, size after orientation): no pixels."""
    results = []
    for start in range(0, len(paths), SCAN_CHUNK):
        results += _native.analyze_files(paths[start:start + SCAN_CHUNK], threads=threads, max_pixels=max_pixels,
                                         header_only=True)
    return results


def _first(items, limit=3):
    shown = ", ".join(display_path(i) for i in items[:limit])
    return shown + (", ..." if len(items) > limit else "")


def scan_dataset(train_data_dir, metadata_path=None, caption_extension=".txt", trigger_word=None, threads=None,
                 max_pixels=None, key="train_data_dir"):
    """Find the training images of a folder and their captions -> DatasetScan.

    Layouts: a folder with `metadata.csv` (filename,prompt, as `lora-native clean` writes; or
    `metadata_path`, file names relative to train_data_dir) uses every image below the folder;
    kohya folders `<dir>/<N>_<concept>/` and their subfolders (N repeats; images elsewhere are
    ignored with a warning; N = 0 leaves a folder out); otherwise every image below the folder,
    repeats 1. Inside a `<N>_<concept>` folder the repeats apply in the metadata layout too (a
    cleaned kohya folder keeps them).
    Captions: metadata.csv, else the caption file (`caption_extension`), else, in a kohya
    folder, the concept name (sd-scripts' class tokens), else empty; `trigger_word` is
    prepended when the caption does not start with it. Files are checked from their headers
    (no pixels decoded); a file that cannot be used is a warning, never an error. Raises
    DatasetError when the folder is missing or holds no usable image (`key`: the config key
    messages name, e.g. validation_data_dir)."""
    root = os.path.abspath(os.fspath(train_data_dir))
    if not os.path.isdir(root):
        raise DatasetError("%s %s is not a folder" % (key, display_path(root)), root)
    if not isinstance(caption_extension, str) or not caption_extension.startswith("."):
        raise UsageError("caption_extension must start with a dot, e.g. '.txt', got %r" % (caption_extension,))
    if metadata_path is not None:
        metadata_path = os.path.abspath(os.fspath(metadata_path))
        if not os.path.isfile(metadata_path):
            raise DatasetError("metadata_path %s does not exist" % display_path(metadata_path), metadata_path)
    elif os.path.isfile(os.path.join(root, "metadata.csv")):
        metadata_path = os.path.join(root, "metadata.csv")

    rels, _ = list_images(root)
    warnings = []
    kohya = {rel: _kohya_folder(rel) for rel in rels}
    if metadata_path:
        layout = "metadata"
    elif any(kohya.values()):
        layout = "kohya"
        ignored = [r for r in rels if not kohya[r]]
        if ignored:
            warnings.append("%d image(s) outside <repeats>_<concept> folders are not used in the kohya layout: %s"
                            % (len(ignored), _first(ignored)))
        rels = [r for r in rels if kohya[r]]
    else:
        layout = "flat"
    unused = sorted({kohya[r][2] for r in rels if kohya[r] and kohya[r][0] == 0})
    if unused:
        warnings.append("folder(s) with 0 repeats are not used: %s" % ", ".join(map(display_path, unused)))
        rels = [r for r in rels if not (kohya[r] and kohya[r][0] == 0)]

    captions = read_captions(root, rels, caption_extension, warnings, metadata_path=metadata_path)
    analyses = _analyze_headers([os.path.join(root, r) for r in rels], threads, max_pixels)
    samples, bad, from_concept, uncaptioned = [], [], [], []
    default_folder = os.path.basename(root.rstrip(os.sep)) or root
    for rel, a in zip(rels, analyses):
        path = os.path.join(root, rel)
        info = a["info"]
        if a["error"] or info["reason"] != "ok":
            bad.append(display_path(path))
            warnings.append("%s: skipped: %s (%s)" % (display_path(path), a["error"] or info["message"],
                                                       a["error"] and "internal_error" or info["reason"]))
            continue
        caption, source = captions[rel]
        repeats, concept, folder = kohya[rel] or (1, "", default_folder)
        if source is None:
            if kohya[rel]:
                caption = concept
                from_concept.append(rel)
            else:
                uncaptioned.append(rel)
        samples.append(Sample(path=path, rel=rel, caption=with_trigger(caption, trigger_word), repeats=repeats,
                              concept=concept, folder=folder, width=a["width"], height=a["height"],
                              file_hash=a["file_hash"], file_size=a["file_size"]))
    if from_concept:
        warnings.append("%d image(s) have no caption and use their folder's concept name instead (as sd-scripts "
                        "does): %s" % (len(from_concept), _first(from_concept)))
    if uncaptioned:
        warnings.append("%d image(s) have no caption (no %s file%s) and train with %s: %s"
                        % (len(uncaptioned), caption_extension, ", no metadata.csv row" if metadata_path else "",
                           "only the trigger word" if trigger_word else "an empty caption", _first(uncaptioned)))
    if not samples:
        where = "in <repeats>_<concept> folders of %s" if layout == "kohya" else "in %s and its subfolders"
        detail = "; %d file(s) were found but cannot be used, e.g. %s" % (len(bad), bad[0]) if bad else ""
        raise DatasetError("no usable %s images: looked for %s files %s%s"
                           % ("training" if key == "train_data_dir" else key.replace("_data_dir", ""),
                              "/".join(e[1:] for e in IMAGE_EXTENSIONS), where % display_path(root), detail), root)
    return DatasetScan(samples=tuple(samples), warnings=tuple(warnings), root=root, layout=layout)


def tag_frequency(samples):
    """sd-scripts' ss_tag_frequency: {folder: {tag: count}}, tags = the comma-separated parts of each
    caption, stripped and lower-cased, counted once per image (repeats do not count)."""
    out = {}
    for s in samples:
        freq = out.setdefault(s.folder, {})
        for tag in s.caption.split(","):
            tag = tag.strip().lower()
            if tag:
                freq[tag] = freq.get(tag, 0) + 1
    return out


def dataset_dirs(samples):
    """sd-scripts' ss_dataset_dirs: {folder: {"n_repeats": N, "img_count": images}}."""
    out = {}
    for s in samples:
        entry = out.setdefault(s.folder, {"n_repeats": s.repeats, "img_count": 0})
        entry["img_count"] += 1
    return out


# ---- buckets ----

def assign_buckets(samples, resolution=(512, 512), enable_bucket=False, min_bucket_reso=256, max_bucket_reso=1024,
                   bucket_reso_steps=64, bucket_no_upscale=False, warnings=None):
    """[(bucket_size (w, h), plan) or None] per sample, computed by the native sd-scripts bucket
    functions (bucket_resolutions, bucket_select, plan_bucket) or, without buckets, cover +
    center crop to `resolution` (plan_crop). None marks an image that cannot be placed (smaller
    than one bucket step with bucket_no_upscale); a line saying so goes to `warnings` (a list)."""
    w, h = parse_resolution(resolution)
    buckets = None
    if enable_bucket:
        step = int(bucket_reso_steps)
        if step <= 0 or step % 8:
            raise UsageError("bucket_reso_steps must be a positive multiple of 8 (latents are 1/8 of the pixels), "
                             "got %d" % step)
        if not bucket_no_upscale:  # sd-scripts' checks; with no_upscale the sizes come from each image
            if min_bucket_reso > min(w, h):
                raise UsageError("min_bucket_reso %d must be at most the resolution's short side %d"
                                 % (min_bucket_reso, min(w, h)))
            if max_bucket_reso < max(w, h):
                raise UsageError("max_bucket_reso %d must be at least the resolution's long side %d"
                                 % (max_bucket_reso, max(w, h)))
        try:
            buckets = _native.bucket_resolutions((w, h), min_size=int(min_bucket_reso),
                                                 max_size=int(max_bucket_reso), step=step)
        except ValueError as e:
            raise UsageError("bucket settings: %s" % e) from None
    elif w % 8 or h % 8:
        raise UsageError("resolution %dx%d must be a multiple of 8 in both sides (latents are 1/8 of the pixels)"
                         % (w, h))
    out = []
    for s in samples:
        try:
            plan = plan_image((s.width, s.height), (w, h), buckets, bool(bucket_no_upscale), int(bucket_reso_steps))
        except ValueError as e:
            if warnings is not None:
                warnings.append("%s: skipped: %s" % (display_path(s.path), e))
            out.append(None)
            continue
        out.append((tuple(plan["out_size"]), plan))
    return out


# ---- deterministic order ----

def _check_seed(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise UsageError("%s must be an integer >= 0, got %r" % (name, value))
    return int(value)


def _stream(*words):
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(w) for w in words])))


def batch_rng(seed, epoch, batch_index):
    """The numpy Generator for every random choice inside batch `batch_index` of `epoch`."""
    return _stream(_BATCH_STREAM, _check_seed("seed", seed), _check_seed("epoch", epoch),
                   _check_seed("batch_index", batch_index))


def permutation(rng, n):
    """A permutation of range(n) from the generator's raw 64-bit stream (Fisher-Yates); the same
    generator state gives the same order on every NumPy version."""
    perm = list(range(n))
    if n < 2:
        return perm
    raw = rng.bit_generator.random_raw(n - 1).tolist()
    for k, i in enumerate(range(n - 1, 0, -1)):
        j = raw[k] % (i + 1)  # modulo bias below n / 2**64
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def epoch_batches(samples, buckets, batch_size, seed, epoch):
    """The batches of one epoch: lists of sample indices.

    Each sample appears `repeats` times; a batch never mixes bucket sizes; samples without a
    bucket (None) are left out. As in sd-scripts, each bucket's entries are shuffled, cut into
    batches of `batch_size`, the last incomplete batch of a bucket is kept (it is smaller), and
    the list of batches is shuffled. The order depends only on (samples, buckets, batch_size,
    seed, epoch): a resumed run recomputes it and starts at its batch index."""
    if len(buckets) != len(samples):
        raise UsageError("buckets must have one entry per sample (%d), got %d" % (len(samples), len(buckets)))
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise UsageError("batch_size must be an integer >= 1, got %r" % (batch_size,))
    rng = _stream(_ORDER_STREAM, _check_seed("seed", seed), _check_seed("epoch", epoch))
    groups = {}
    for i, (s, b) in enumerate(zip(samples, buckets)):
        if b is not None:
            groups.setdefault(tuple(b[0]), []).extend([i] * s.repeats)
    batches = []
    for size in sorted(groups):
        members = groups[size]
        members = [members[p] for p in permutation(rng, len(members))]
        batches += [members[k:k + batch_size] for k in range(0, len(members), batch_size)]
    return [batches[p] for p in permutation(rng, len(batches))]


def holdout(names, fraction, seed):
    """The positions of the items held out for validation: round(fraction * n) of them (at least
    one when fraction > 0), those whose sha256(seed, name) sort first. `names` identify the items
    (relative paths): the choice depends on the seed and the set of names only, not on their
    order, so a resumed run holds out the same ones. Returns a sorted list of positions."""
    n = len(names)
    if not fraction or n == 0:
        return []
    count = max(1, int(round(fraction * n)))
    rank = sorted(range(n), key=lambda i: (hashlib.sha256(("%d\0%s" % (int(seed), names[i])).encode(
        "utf-8", "surrogateescape")).digest(), i))
    return sorted(rank[:count])


# ---- captions ----

def process_caption(caption, trigger_word=None, shuffle_caption=False, keep_tokens=0, caption_dropout_rate=0.0,
                    rng=None):
    """The caption one training step sees, with sd-scripts' semantics.

    Dropout first: with probability caption_dropout_rate the caption is "" (the trigger word
    too: an unconditional step). Otherwise the trigger word is prepended when the caption does
    not start with it. With shuffle_caption the caption is split at commas (tags stripped), the
    first keep_tokens tags stay in place and the rest are shuffled, joined with ", ". The
    trigger word's tags always stay first: they count among the kept tags (keep_tokens=1 keeps
    "sks" of "sks, a, b", as in sd-scripts where the trigger is the caption's first tag) and
    keep_tokens is raised to their number when smaller. Without shuffle the caption is used as
    it is. Random draws (dropout, then the shuffle) come from `rng`, a numpy Generator."""
    if caption_dropout_rate < 0 or caption_dropout_rate > 1:
        raise UsageError("caption_dropout_rate must be between 0 and 1, got %r" % (caption_dropout_rate,))
    if keep_tokens < 0:
        raise UsageError("keep_tokens must be >= 0, got %r" % (keep_tokens,))
    if (caption_dropout_rate > 0 or shuffle_caption) and rng is None:
        raise UsageError("process_caption needs rng (batch_rng(seed, epoch, batch_index)) to drop or shuffle")
    if caption_dropout_rate > 0 and rng.random() < caption_dropout_rate:
        return ""
    caption = with_trigger(caption, trigger_word)
    if not shuffle_caption:
        return caption
    tokens = [t.strip() for t in caption.strip().split(",")]
    keep = max(int(keep_tokens), len(trigger_word.split(",")) if trigger_word and trigger_word.strip() else 0)
    fixed, flex = tokens[:keep], tokens[keep:]
    return ", ".join(fixed + [flex[p] for p in permutation(rng, len(flex))])


# ---- loading ----

@dataclass(frozen=True)
class Augmentation:
    flip: bool = False
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0


def draw_augmentations(rng, n, flip_aug=False, color_aug=False):
    """Per-image augmentation for a batch of n requested images, drawn before loading so a file that
    fails does not shift the draws of the others: n uniforms for the flips (< 0.5 flips) when
    flip_aug, then n x 3 uniforms for brightness, contrast and saturation when color_aug. A
    trainer using cached latents calls this with color_aug=False to pick the flipped latents."""
    if (flip_aug or color_aug) and rng is None:
        raise UsageError("augmentation needs rng (batch_rng(seed, epoch, batch_index))")
    flips = rng.random(n) < 0.5 if flip_aug else np.zeros(n, bool)
    factors = 1.0 + COLOR_JITTER * (2.0 * rng.random((n, 3)) - 1.0) if color_aug else np.ones((n, 3))
    return [Augmentation(bool(f), *map(float, c)) for f, c in zip(flips, factors)]


def _color_jitter(x, factors):
    """x: float [B, 3, H, W] in [0, 1]; factors [B, 3] (brightness, contrast, saturation), as
    torchvision's adjust_* (luma weights 0.299, 0.587, 0.114), applied in that order."""
    import torch
    f = factors.to(x.dtype).view(-1, 3, 1, 1)
    luma = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)
    x = (x * f[:, 0:1]).clamp_(0, 1)
    mean = (x * luma).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    x = ((x - mean) * f[:, 1:2] + mean).clamp_(0, 1)
    gray = (x * luma).sum(1, keepdim=True)
    return ((x - gray) * f[:, 2:3] + gray).clamp_(0, 1)


def load_jobs(samples, indices, buckets):
    """The _native.load_images jobs for samples[indices]; UsageError when their buckets differ."""
    jobs, sizes = [], set()
    for i in indices:
        if buckets[i] is None:
            raise UsageError("sample %d (%s) has no bucket" % (i, display_path(samples[i].path)))
        size, plan = buckets[i]
        sizes.add(tuple(size))
        s = samples[i]
        jobs.append((s.path, (s.width, s.height), plan, s.file_hash))
    if len(sizes) > 1:
        raise UsageError("one batch must have one bucket size, got %s" % sorted(sizes))
    return jobs


def load_batch(samples, indices, buckets, flip_aug=False, color_aug=False, rng=None, threads=None,
               max_pixels=None, augs=None):
    """Load samples[indices] -> (pixels, kept, warnings).

    pixels: float32 torch tensor [B, 3, H, W] in [-1, 1] (B = len(kept)); kept: the indices that
    loaded, in order; warnings: one line per dropped image naming the file and the reason (it no
    longer decodes, or it changed since the scan). Decoding and Lanczos crop/resize run in C on
    native threads (GIL released). Flips and colour jitter come from draw_augmentations(rng, ...)
    for all requested images. When every image fails, pixels is an empty [0, 3, H, W] tensor and
    the caller skips the batch. `augs` (one per index) replaces the draws when the caller made them."""
    import torch
    indices = list(indices)
    if augs is None:
        augs = draw_augmentations(rng, len(indices), flip_aug, color_aug)
    if not indices:
        return torch.zeros((0, 3, 0, 0)), [], []
    array, errors = _native.load_images(load_jobs(samples, indices, buckets), threads=threads,
                                        max_pixels=max_pixels)
    rows = [k for k, e in enumerate(errors) if e is None]
    warnings = ["skipped %s: %s" % (display_path(samples[indices[k]].path), errors[k])
                for k, e in enumerate(errors) if e is not None]
    # NCHW while still uint8 (a third of the bytes to move), then one float pass.
    x = torch.from_numpy(array[rows] if len(rows) < len(indices) else array).permute(0, 3, 1, 2).contiguous()
    flips = [k for k, row in enumerate(rows) if augs[row].flip]
    if flips:
        x[flips] = x[flips].flip(3)
    if color_aug and rows:
        x = _color_jitter(x.to(torch.float32).div_(255.0),
                          torch.tensor([[augs[r].brightness, augs[r].contrast, augs[r].saturation] for r in rows]))
        x = x.mul_(2.0).sub_(1.0)
    else:
        x = x.to(torch.float32).mul_(2.0 / 255.0).sub_(1.0)
    return x, [indices[k] for k in rows], warnings


__all__ = ["Sample", "DatasetScan", "Augmentation", "scan_dataset", "tag_frequency", "dataset_dirs",
           "assign_buckets", "batch_rng", "permutation", "epoch_batches", "holdout", "process_caption",
           "draw_augmentations", "load_jobs", "load_batch"]
