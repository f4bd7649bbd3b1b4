"""Model-input preprocessing for captioners and CLIP: image files -> one float32 batch tensor.

Each file is decoded natively (EXIF orientation applied, alpha composited on white, grayscale
expanded) and written into its slot of the batch on native threads with the GIL released:

- ``mode="resize"`` (BLIP): the whole image resized to ``size``.
- ``mode="short_crop"`` (CLIP): the shortest edge resized to ``short_side``, the other to
  ``int(short_side * long / short)``, then a center crop of ``size`` by transformers' rules (an
  image smaller than the crop is padded with pixel 0, before normalisation).
- ``mode="pad_square"`` (WD14 taggers): pasted on a white square of the long side at
  ``((side - w) // 2, (side - h) // 2)``, then resized to ``size``.

Resizing is Pillow's exact fixed-point filter, so the pixels equal what transformers' PIL image
processors (or SmilingWolf's tagger app) compute from the same decoded pixels. Each value is
``(pixel * scale - mean[c]) / std[c]`` in float32, in that order: ``t = float32(pixel * scale)``,
then ``float32(t - mean[c]) / std[c]``. transformers rounds ``pixel * scale`` from a float64
``scale``, which can put ``t`` one float32 ulp away from ours; the results differ by at most a few
1e-7 (4.8e-7 measured with CLIP's mean/std). With ``scale=1, mean=0, std=1`` a value is the pixel.

Layouts: ``"nchw"`` gives ``[n, 3, h, w]`` RGB, ``"nhwc_bgr"`` gives ``[n, h, w, 3]`` BGR.

The resampler reproduces Pillow >= 13's pass order; set ``LORA_NATIVE_PILLOW_COMPAT=12`` to match
an older Pillow bit for bit (it changes some pixels of tall shrinks by one level).
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import _native

__all__ = ["MODES", "LAYOUTS", "prepare_images", "prepare_image", "spec_from_processor_config", "wd14_spec"]

MODES = ("resize", "short_crop", "pad_square")
LAYOUTS = ("nchw", "nhwc_bgr")
PathLike = Union[str, bytes, "os.PathLike[str]"]
Triple = Union[float, Sequence[float]]

# transformers' OPENAI_CLIP_MEAN / OPENAI_CLIP_STD: the CLIP and BLIP processors' defaults.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# PIL.Image.Resampling values as preprocessor_config.json stores them.
_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def prepare_images(
    paths: Sequence[PathLike],
    size: Tuple[int, int] = (224, 224),
    mode: str = "resize",
    short_side: int = 0,
    filter: str = "bicubic",
    layout: str = "nchw",
    scale: float = 1 / 255,
    mean: Triple = (0.0, 0.0, 0.0),
    std: Triple = (1.0, 1.0, 1.0),
    threads: Optional[int] = None,
    max_pixels: Optional[int] = None,
) -> Tuple[np.ndarray, List[Optional[str]]]:
    """Decode ``paths`` and fill one float32 slot per file.

    ``size`` is the slot's (width, height); ``short_side`` is needed by ``mode="short_crop"`` only;
    ``filter`` is "bicubic", "bilinear", "lanczos" or "box"; ``mean``/``std`` are R, G, B (or one
    number for all three). ``threads``: None or 0 = all cores. ``max_pixels`` limits the decoded
    image and the intermediates (the resized image before a crop, the padded square).

    Returns ``(array, errors)``: ``array`` is ``[n, 3, h, w]`` (nchw) or ``[n, h, w, 3]``
    (nhwc_bgr); ``errors[i]`` is None, or the message for a file that could not be used, whose
    slot is then all zeros. Bad arguments raise ValueError / TypeError.
    """
    return _native.prepare_images(
        list(paths) if not isinstance(paths, (str, bytes)) else paths,
        size=size, mode=mode, short_side=short_side, filter=filter, layout=layout,
        scale=scale, mean=mean, std=std, threads=threads, max_pixels=max_pixels,
    )


def prepare_image(
    array: np.ndarray,
    size: Tuple[int, int] = (224, 224),
    mode: str = "resize",
    short_side: int = 0,
    filter: str = "bicubic",
    layout: str = "nchw",
    scale: float = 1 / 255,
    mean: Triple = (0.0, 0.0, 0.0),
    std: Triple = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """``prepare_images`` for one (H, W, 3) uint8 RGB array already in memory.

    Returns ``[3, h, w]`` (nchw) or ``[h, w, 3]`` (nhwc_bgr) float32.
    """
    return _native.prepare_image(
        array, size=size, mode=mode, short_side=short_side, filter=filter, layout=layout,
        scale=scale, mean=mean, std=std,
    )


def wd14_spec(size: int) -> Dict[str, Any]:
    """``prepare_images`` arguments for a WD14 tagger whose input is ``size`` x ``size``
    (``session.get_inputs()[0].shape[1]``): white square pad, bicubic, NHWC BGR 0..255."""
    size = int(size)
    if size < 1:
        raise ValueError(f"WD14 input size must be positive, got {size}")
    return {"size": (size, size), "mode": "pad_square", "short_side": 0, "filter": "bicubic",
            "layout": "nhwc_bgr", "scale": 1.0, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}


def _triple(value: Any, what: str) -> Tuple[float, float, float]:
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    values = tuple(float(v) for v in value)
    if len(values) != 3:
        raise ValueError(f"preprocessor config: {what} must have 3 values (R, G, B), got {len(values)}")
    return values  # type: ignore[return-value]


def _hw(value: Any, what: str) -> Tuple[int, int]:
    """crop_size (or a square size) as (height, width): int, [h, w] or {"height", "width"}."""
    if isinstance(value, Mapping):
        if "height" in value and "width" in value:
            return int(value["height"]), int(value["width"])
        raise ValueError(f"preprocessor config: {what} must have 'height' and 'width', got {sorted(value)}")
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"preprocessor config: {what} must be (height, width), got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


def spec_from_processor_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """``prepare_images`` keyword arguments doing what a transformers image processor with this
    ``preprocessor_config.json`` (or ``processor.to_dict()``) does, for CLIP- and BLIP-style
    processors (PIL backend rules).

    Reads do_resize, size ({"shortest_edge"} -> short_crop, {"height", "width"} -> resize; a bare
    int means shortest_edge when do_center_crop is set, as CLIP's processor reads it, else a square,
    as BLIP's), resample (1 lanczos, 2 bilinear, 3 bicubic, 4 box), do_center_crop, crop_size,
    do_rescale, rescale_factor, do_normalize, image_mean, image_std; missing keys take the CLIP/BLIP
    processors' defaults (bicubic, rescale 1/255, OpenAI CLIP mean/std). A configuration whose
    output size would vary per image, or that needs a step prepare_images has not, raises
    ValueError naming it.
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"preprocessor config must be a dict, got {type(config).__name__}")
    if not config.get("do_resize", True):
        raise ValueError("preprocessor config: do_resize=false is not supported (a batch needs one size per image)")
    if config.get("do_pad"):
        raise ValueError("preprocessor config: do_pad is not supported")
    crop = bool(config.get("do_center_crop", False))
    size = config.get("size", {"shortest_edge": 224} if crop else {"height": 384, "width": 384})
    if isinstance(size, int) and not isinstance(size, bool):
        size = {"shortest_edge": size} if crop else {"height": size, "width": size}
    elif isinstance(size, (list, tuple)):
        h, w = _hw(size, "size")
        size = {"height": h, "width": w}
    if not isinstance(size, Mapping):
        raise ValueError(f"preprocessor config: unsupported size {size!r}")
    keys = {k for k, v in size.items() if v is not None}

    resample = config.get("resample", 3)
    name = _PIL_RESAMPLE.get(int(resample)) if isinstance(resample, (int, float)) else None
    if name is None:
        raise ValueError(f"preprocessor config: unknown resample {resample!r}")
    if name in ("nearest", "hamming"):
        raise ValueError(f"preprocessor config: resample={int(resample)} ({name}) is not supported; "
                         "use 1 (lanczos), 2 (bilinear), 3 (bicubic) or 4 (box)")

    spec: Dict[str, Any] = {"short_side": 0, "filter": name, "layout": "nchw"}
    if keys == {"shortest_edge"}:
        if not crop:
            raise ValueError("preprocessor config: size {'shortest_edge'} without do_center_crop gives a "
                             "different size per image; not supported")
        ch, cw = _hw(config.get("crop_size", {"height": 224, "width": 224}), "crop_size")
        spec.update(size=(cw, ch), mode="short_crop", short_side=int(size["shortest_edge"]))
    elif keys == {"height", "width"}:
        h, w = int(size["height"]), int(size["width"])
        if crop:
            ch, cw = _hw(config.get("crop_size", {"height": h, "width": w}), "crop_size")
            if (ch, cw) != (h, w):
                raise ValueError(f"preprocessor config: a resize to {w}x{h} followed by a {cw}x{ch} center crop "
                                 "is not supported")
        spec.update(size=(w, h), mode="resize")
    else:
        raise ValueError(f"preprocessor config: size with keys {sorted(keys)} is not supported "
                         "(only {'shortest_edge'} or {'height', 'width'})")

    if config.get("do_rescale", True):
        spec["scale"] = float(config.get("rescale_factor", 1 / 255))
    else:
        spec["scale"] = 1.0
    if config.get("do_normalize", True):
        mean = config.get("image_mean")
        std = config.get("image_std")
        spec["mean"] = _triple(OPENAI_CLIP_MEAN if mean is None else mean, "image_mean")
        spec["std"] = _triple(OPENAI_CLIP_STD if std is None else std, "image_std")
    else:
        spec["mean"], spec["std"] = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return spec
