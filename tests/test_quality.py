"""Quality metrics (csrc/image/checks.c) against a NumPy reference, and the thresholds that use them."""
import numpy as np
import pytest
from PIL import Image

from lora_native import _native
from lora_native.quality import CHECKS, QualityThresholds, evaluate
from builders.images import generate_images


def reference_metrics(a):
    h, w = a.shape[:2]
    if max(w, h) > 256:
        lw, lh = (256, int(h * 256 / w + 0.5)) if w >= h else (int(w * 256 / h + 0.5), 256)
        small = np.asarray(Image.fromarray(a).resize((max(lw, 1), max(lh, 1)), Image.BOX))
    else:
        small = a
    gray = np.asarray(Image.fromarray(small).convert("L")).astype(np.int64)
    n = gray.size
    hist = np.bincount(gray.ravel(), minlength=256)
    cum = np.cumsum(hist)
    p = hist[hist > 0] / n
    lap = None
    if gray.shape[0] >= 3 and gray.shape[1] >= 3:
        lap = (gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:] - 4 * gray[1:-1, 1:-1]).astype(float)
    chroma = small.max(axis=2).astype(int) - small.min(axis=2).astype(int)
    return {
        "blur": float(lap.var()) if lap is not None else 0.0,
        "mean_luma": gray.mean(),
        "p1_luma": int(np.searchsorted(cum, np.ceil(0.01 * n))),
        "p99_luma": int(np.searchsorted(cum, np.ceil(0.99 * n))),
        "entropy": float(-(p * np.log2(p)).sum()),
        "color_fraction": float((chroma > 12).mean()),
    }


def test_metrics_match_numpy_reference():
    for name, a in generate_images(60, seed=9):
        if a.ndim == 2 or a.shape[2] != 3:
            continue
        got, ref = _native.quality_metrics(a), reference_metrics(a)
        for key in ref:
            assert got[key] == pytest.approx(ref[key], rel=1e-9, abs=1e-9), (name, key, got[key], ref[key])


def textured(h=600, w=600, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, size=(h // 8, w // 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(a).resize((w, h), Image.NEAREST))


def metrics_of(a):
    m = _native.quality_metrics(a)
    m["width"], m["height"] = a.shape[1], a.shape[0]
    return m


def codes(a, **kw):
    rejections, notes = evaluate(metrics_of(a), QualityThresholds(**kw))
    return [c for c, _ in rejections], [c for c, _ in notes]


def test_sharp_colourful_picture_passes():
    assert codes(textured()) == ([], [])


def test_each_check_fires_on_its_picture():
    flat = np.full((600, 600, 3), 128, np.uint8)
    assert codes(flat)[0] == ["low_information"]  # not also "blurry": a flat picture has no detail to judge
    assert codes(textured() // 10)[0] == ["too_dark"]
    assert "too_bright" in codes(np.full((600, 600, 3), 252, np.uint8))[0]
    assert codes(textured(300, 300))[0] == ["too_small"]
    assert codes(textured(600, 2000))[0] == ["odd_aspect"]
    gray = np.repeat(textured()[..., :1], 3, axis=2)
    assert codes(gray) == ([], ["grayscale"])
    assert codes(gray, reject_grayscale=True)[0] == ["grayscale"]
    soft = np.asarray(Image.fromarray(textured()).resize((60, 60), Image.BOX).resize((600, 600), Image.BILINEAR))
    assert codes(soft)[0] == ["blurry"]


def test_ignore_and_thresholds():
    small = textured(300, 300)
    assert codes(small, ignore=frozenset({"too_small"})) == ([], [])
    assert codes(small, min_side=256) == ([], [])
    assert set(CHECKS) >= {"too_small", "odd_aspect", "blurry", "too_dark", "too_bright", "low_information",
                           "grayscale"}


def test_metrics_reject_non_rgb():
    with pytest.raises(ValueError):
        _native.quality_metrics(np.zeros((10, 10), np.uint8))
    with pytest.raises(TypeError):
        _native.quality_metrics(np.zeros((10, 10, 3), np.float32))
