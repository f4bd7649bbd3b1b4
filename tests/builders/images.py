"""Deterministic generated test images (numpy uint8), varied in content, size and mode.

    from builders.images import generate_images
    for name, array in generate_images(200, seed=0): ...

Content kinds cover what breaks image code in practice: noise, smooth gradients, flat
colours (where hash bits hang on rounding noise), mirror-symmetric shapes, checkerboards and
stripes, photo-like blurred scenes, text-like strokes, grayscale-looking RGB. Sizes run from
1x1 through odd and tall/wide shapes up to ~2000 px. Arrays are (H, W) for "L", (H, W, 3)
for "RGB" and (H, W, 4) for "RGBA"; the same (count, seed) always gives the same images.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["KINDS", "SIZES_SMALL", "generate_images", "make_image"]

# (width, height) sizes cycled through by generate_images; the odd, tiny and tall ones are on purpose.
SIZES_SMALL: Sequence[Tuple[int, int]] = (
    (1, 1), (2, 3), (7, 5), (31, 33), (8, 8), (9, 8), (32, 32), (33, 31), (64, 48), (100, 75),
    (127, 129), (256, 256), (40, 300), (300, 40), (17, 250), (320, 240), (500, 333), (640, 480),
    (97, 1023), (713, 401),
)
SIZES_LARGE: Sequence[Tuple[int, int]] = ((1024, 768), (2000, 1500), (1500, 2000), (1920, 1080))


def _grid(h: int, w: int) -> Tuple[np.ndarray, np.ndarray]:
    """Broadcastable (h, 1) and (1, w) coordinate arrays."""
    return np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]


def _to_u8(v: np.ndarray) -> np.ndarray:
    if v.dtype == np.uint8:
        return v
    return np.clip(np.rint(v), 0, 255).astype(np.uint8)


def _colours(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3)).astype(np.float32)


def _blur(img: np.ndarray, radius: int) -> np.ndarray:
    """Separable box blur (edge-clamped) of an (H, W, C) float image."""
    if radius <= 0:
        return img
    out = img
    for axis in (0, 1):
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius + 1, radius)
        c = np.cumsum(np.pad(out, pad, mode="edge"), axis=axis)
        n = out.shape[axis]
        hi = np.take(c, np.arange(2 * radius + 1, 2 * radius + 1 + n), axis=axis)
        lo = np.take(c, np.arange(0, n), axis=axis)
        out = (hi - lo) / (2 * radius + 1)
    return out


def _noise(rng, h, w):
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _gradient_h(rng, h, w):
    a, b = _colours(rng, 2)
    t = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :, None]
    return np.broadcast_to(a + (b - a) * t, (h, w, 3)).copy()


def _gradient_v(rng, h, w):
    a, b = _colours(rng, 2)
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    return np.broadcast_to(a + (b - a) * t, (h, w, 3)).copy()


def _gradient_radial(rng, h, w):
    a, b = _colours(rng, 2)
    y, x = _grid(h, w)
    r = np.hypot(y - (h - 1) / 2, x - (w - 1) / 2)
    t = (r / max(r.max(), 1e-9))[..., None]
    return a + (b - a) * t


def _flat(rng, h, w):
    choice = rng.integers(0, 5)
    colour = [(0, 0, 0), (255, 255, 255), (128, 128, 128), (127, 127, 127)][choice] if choice < 4 else _colours(rng, 1)[0]
    return np.broadcast_to(np.asarray(colour, np.float32), (h, w, 3)).copy()


def _symmetric_shape(rng, h, w):
    """A centred circle or rectangle: symmetric about both image axes."""
    bg, fg = _colours(rng, 2)
    y, x = _grid(h, w)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    if rng.integers(0, 2):
        r = rng.uniform(0.15, 0.45) * min(h, w)
        mask = np.hypot(y - cy, x - cx) <= r
    else:
        ry, rx = rng.uniform(0.1, 0.45) * h, rng.uniform(0.1, 0.45) * w
        mask = (np.abs(y - cy) <= ry) & (np.abs(x - cx) <= rx)
    return np.where(mask[..., None], fg, bg)


def _checkerboard(rng, h, w):
    a, b = _colours(rng, 2)
    cell = int(rng.integers(1, max(2, min(h, w) // 2 + 1)))
    y, x = _grid(h, w)
    mask = ((y // cell + x // cell) % 2) == 1
    return np.where(mask[..., None], a, b)


def _stripes(rng, h, w):
    a, b = _colours(rng, 2)
    period = int(rng.integers(2, 17))
    y, x = _grid(h, w)
    coord = x if rng.integers(0, 2) else y
    mask = np.broadcast_to((coord % period) < period / 2, (h, w))
    return np.where(mask[..., None], a, b)


def _photo(rng, h, w):
    """Blurred coloured noise with a few soft shapes: a smooth, photo-like scene.

    Drawn at up to 1/8 resolution, blurred, then enlarged and lightly blurred again
    (fine grain added), which keeps 2000 px images cheap to make."""
    f = max(1, min(h, w) // 64, max(h, w) // 256)
    sh, sw = -(-h // f), -(-w // f)
    base = rng.integers(0, 256, size=(sh, sw, 3)).astype(np.float32) * 0.35 + _colours(rng, 1)[0] * 0.65
    y, x = _grid(sh, sw)
    for colour in _colours(rng, int(rng.integers(2, 6))):
        cy, cx = rng.uniform(0, sh), rng.uniform(0, sw)
        r = rng.uniform(0.05, 0.4) * max(sh, sw)
        mask = np.hypot(y - cy, x - cx) <= r
        base[mask] = base[mask] * 0.3 + colour * 0.7
    base = _blur(base, max(1, min(sh, sw) // 40))
    big = np.repeat(np.repeat(base, f, axis=0), f, axis=1)[:h, :w]
    grain = rng.normal(0.0, 3.0, size=(h, w, 1)).astype(np.float32)
    return _blur(big, min(f, 4) // 2) + grain


def _text(rng, h, w):
    """Dark thin strokes in rows on a light page, like scanned text."""
    page = np.full((h, w, 3), rng.uniform(200, 255), dtype=np.float32)
    ink = rng.uniform(0, 60)
    line_h = max(3, h // int(rng.integers(4, 12)))
    glyph_w = max(2, line_h // 2)
    for top in range(line_h // 2, h - line_h // 2, line_h):
        x0 = int(rng.integers(0, max(1, glyph_w)))
        while x0 + glyph_w < w:
            if rng.random() < 0.8:  # a glyph: a few vertical/horizontal/diagonal strokes
                for _ in range(int(rng.integers(1, 4))):
                    kind = rng.integers(0, 3)
                    if kind == 0:
                        xs = x0 + int(rng.integers(0, glyph_w))
                        page[top : min(h, top + line_h // 2 + 1), xs] = ink
                    elif kind == 1:
                        ys = top + int(rng.integers(0, line_h // 2 + 1))
                        page[min(ys, h - 1), x0 : x0 + glyph_w] = ink
                    else:
                        n = min(glyph_w, line_h // 2 + 1)
                        ys, xs = top + np.arange(n), x0 + np.arange(n)
                        keep = ys < h
                        page[ys[keep], xs[keep]] = ink
            x0 += glyph_w + 1
    return page


KINDS: Dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "noise": _noise,
    "gradient-h": _gradient_h,
    "gradient-v": _gradient_v,
    "gradient-radial": _gradient_radial,
    "flat": _flat,
    "symmetric": _symmetric_shape,
    "checker": _checkerboard,
    "stripes": _stripes,
    "photo": _photo,
    "text": _text,
}

MODES = ("RGB", "L", "gray-RGB", "RGB", "RGBA")


def make_image(kind: str, width: int, height: int, mode: str = "RGB", seed: int = 0) -> np.ndarray:
    """One image of a given kind, size and mode ("RGB", "L", "gray-RGB" or "RGBA")."""
    rng = np.random.default_rng(seed)
    rgb = _to_u8(KINDS[kind](rng, height, width))
    if mode == "RGB":
        return rgb
    # Pillow's own luma, so "L" images look like decoded grayscale files.
    luma = ((rgb[..., 0].astype(np.uint32) * 19595 + rgb[..., 1].astype(np.uint32) * 38470
             + rgb[..., 2].astype(np.uint32) * 7471 + 0x8000) >> 16).astype(np.uint8)
    if mode == "L":
        return luma
    if mode == "gray-RGB":
        return np.repeat(luma[..., None], 3, axis=2)
    if mode == "RGBA":
        alpha = rng.integers(0, 256, size=(height, width, 1), dtype=np.uint8)
        return np.concatenate([rgb, alpha], axis=2)
    raise ValueError(f"unknown mode {mode!r}")


def generate_images(count: int, seed: int = 0, large_every: Optional[int] = 40,
                    modes: Sequence[str] = MODES) -> List[Tuple[str, np.ndarray]]:
    """``count`` varied images as (name, array) pairs, deterministic in (count, seed).

    Kinds and sizes cycle with different periods so every kind meets many sizes; every
    ``large_every``-th image is a large one (1024 to 2000 px; None: never).
    """
    rng = np.random.default_rng(seed)
    kinds = list(KINDS)
    out = []
    for i in range(count):
        kind = kinds[i % len(kinds)]
        if large_every and i % large_every == large_every - 1:
            w, h = SIZES_LARGE[(i // large_every) % len(SIZES_LARGE)]
        else:
            w, h = SIZES_SMALL[(i * 7 + i // len(kinds)) % len(SIZES_SMALL)]
        mode = modes[int(rng.integers(0, len(modes)))]
        sub_seed = int(rng.integers(0, 2**31))
        out.append((f"{i:03d}-{kind}-{w}x{h}-{mode}", make_image(kind, w, h, mode, sub_seed)))
    return out
