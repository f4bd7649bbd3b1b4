"""Perceptual image hashes bit-identical to Python ``imagehash`` (hash_size 8).

``image_hashes(a)`` gives the same bits as ``imagehash.average_hash``, ``dhash`` and ``phash``
of ``Image.fromarray(a)``: Pillow's convert("L"), its fixed-point Lanczos resize and
scipy's DCT are reproduced exactly in C (see csrc/hash/). Hashes are plain 64-bit ints with
the first pixel of the hash grid in the most significant bit, so ``hash_hex`` prints what
``str(imagehash_result)`` prints.

Pillow 13 resizes vertically first when the height shrinks by more than twice as many
pixels as the width (python-pillow/Pillow#9549); the resampler follows that rule, so the
hashes of such tall images match imagehash running on Pillow >= 13. Set the environment
variable LORA_NATIVE_PILLOW_COMPAT=12 to match imagehash on older Pillow instead.

``hash_files`` decodes JPEG with libjpeg-turbo exactly as Pillow does, so for files it gives
what ``imagehash.xxx(Image.open(path))`` gives (pass apply_orientation=False: Image.open does
not rotate by EXIF).
"""
from __future__ import annotations

from typing import Iterable, Optional, Tuple

import numpy as np

from . import _native

__all__ = ["image_hashes", "hashes_batch", "hash_files", "hash_hex"]


def image_hashes(array: np.ndarray) -> Tuple[int, int, int]:
    """(ahash, dhash, phash) of one uint8 image of shape (H, W) or (H, W, C), C in 1/3/4.

    RGBA alpha is ignored, as Pillow's convert("L") ignores it. The GIL is released.
    """
    return _native.image_hashes(array)


def hashes_batch(arrays: Iterable[np.ndarray], threads: Optional[int] = None) -> np.ndarray:
    """Hashes of many images on ``threads`` threads (None or 0: all cores).

    Returns a uint64 array of shape (N, 3) whose rows are (ahash, dhash, phash). Workers
    reuse resample tables between images of the same size, so batches of same-sized
    images are the fastest path.
    """
    return _native.image_hashes_batch(arrays, threads=threads)


def hash_files(paths, threads: Optional[int] = None, apply_orientation: bool = True, jpeg_draft_min_side: int = 0,
               jpeg_decoder: str = "libjpeg", max_pixels: Optional[int] = None):
    """Decode and hash many files on the thread pool -> (uint64 array (N, 3), list of reasons).

    A file that cannot be used has the row (0, 0, 0) and its reason ("truncated", ...);
    "ok" otherwise. ``jpeg_draft_min_side`` > 0 decodes JPEGs DCT-scaled (much faster, the
    pHash then differs from imagehash's for some files; see bench/RESULTS.md).
    """
    return _native.hash_files(list(paths), threads=threads, max_pixels=max_pixels, jpeg_decoder=jpeg_decoder,
                              jpeg_draft_min_side=jpeg_draft_min_side, apply_orientation=apply_orientation)


def hash_hex(value: int) -> str:
    """A 64-bit hash as 16 lowercase hex digits, the format of ``str(imagehash.ImageHash)``."""
    v = int(value)
    if not 0 <= v < 1 << 64:
        raise ValueError(f"hash value {value!r} is not a 64-bit unsigned integer")
    return format(v, "016x")
