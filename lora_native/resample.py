"""Pillow-exact resizing and grayscale conversion of uint8 numpy images.

``resize`` equals ``Image.fromarray(a).resize(size, filter, box)`` bit for bit for L and RGB
images (Pillow's two-pass fixed-point filter, including Pillow 13's choice of which pass
runs first). RGBA is resized per channel without Pillow's alpha premultiplication:
composite alpha first. ``to_gray`` equals ``convert("L")``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np

from . import _native

__all__ = ["FILTERS", "resize", "to_gray"]

FILTERS = ("lanczos", "bicubic", "bilinear", "box")
# Pillow's Image.Resampling values, so PIL constants can be passed as they are.
_PIL_FILTERS = {1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box"}


def resize(
    array: np.ndarray,
    size: Tuple[int, int],
    filter: Union[str, int] = "lanczos",
    box: Optional[Sequence[float]] = None,
) -> np.ndarray:
    """Resize a uint8 (H, W) or (H, W, C) array to ``size = (width, height)``.

    ``filter``: "lanczos" (alias "antialias"), "bicubic", "bilinear", "box", or the matching
    ``PIL.Image.Resampling`` value. ``box``: the source region (x0, y0, x1, y1) in pixels,
    floats allowed, as Pillow's ``box``. Returns a new array with the input's layout.
    """
    if not isinstance(filter, str):
        try:
            filter = _PIL_FILTERS[int(filter)]
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"unsupported filter {filter!r}; use one of {', '.join(FILTERS)}") from None
    return _native.resize(array, tuple(size), filter.lower(), box)


def to_gray(array: np.ndarray) -> np.ndarray:
    """(H, W) luma of an (H, W, 3|4) uint8 image exactly as Pillow's convert("L")."""
    return _native.to_gray(array)
