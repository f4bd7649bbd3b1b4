"""Buckets and crop plans (csrc/image/geometry.c) against sd-scripts' rules written out in Python."""
import math

import numpy as np
import pytest

from lora_native import _native


def reference_buckets(max_reso, min_size=256, max_size=1024, step=64):
    max_area = max_reso[0] * max_reso[1]
    resos = {(int(math.sqrt(max_area) // step) * step,) * 2}
    width = min_size
    while width <= max_size:
        height = min(max_size, int((max_area // width) // step) * step)
        if height >= min_size:
            resos.add((width, height))
            resos.add((height, width))
        width += step
    return sorted(resos)


def reference_select(w, h, resos, no_upscale, max_area, step):
    ar = w / h
    if not no_upscale:
        if (w, h) in set(resos):
            reso = (w, h)
        else:
            errors = np.abs(np.array([a / b for a, b in resos]) - ar)
            reso = resos[int(errors.argmin())]
        scale = reso[1] / h if ar > reso[0] / reso[1] else reso[0] / w
        return reso, (int(w * scale + 0.5), int(h * scale + 0.5))

    def rnd(x):
        x = int(x + 0.5)
        return x - x % step
    if w * h > max_area:
        rw = math.sqrt(max_area * ar)
        rh = max_area / rw
        bw = rnd(rw)
        bhw = rnd(bw / ar)
        arw = bw / bhw if bhw > 0 else 0
        bh = rnd(rh)
        bwh = rnd(bh * ar)
        arh = bwh / bh if bh > 0 else 0
        resized = (bw, int(bw / ar + 0.5)) if abs(arw - ar) < abs(arh - ar) else (int(bh * ar + 0.5), bh)
    else:
        resized = (w, h)
    return (resized[0] - resized[0] % step, resized[1] - resized[1] % step), resized


@pytest.mark.parametrize("reso,lo,hi", [((512, 512), 256, 1024), ((768, 768), 256, 1024), ((1024, 1024), 256, 2048),
                                        ((640, 448), 256, 1024)])
def test_bucket_resolutions_match_sd_scripts(reso, lo, hi):
    assert [tuple(b) for b in _native.bucket_resolutions(reso, min_size=lo, max_size=hi, step=64)] == \
        reference_buckets(reso, lo, hi, 64)


def test_bucket_select_matches_sd_scripts():
    rng = np.random.default_rng(3)
    sizes = [(1024, 1024), (512, 512), (2000, 2000), (768, 1024), (1024, 768), (1000, 500), (500, 1000),
             (1234, 567), (1920, 1080), (4096, 4096), (640, 448), (3000, 1000), (300, 900)]
    sizes += [tuple(int(v) for v in rng.integers(64, 5000, size=2)) for _ in range(300)]
    for reso in [(512, 512), (1024, 1024)]:
        resos = reference_buckets(reso, 256, 1024 if reso[0] == 512 else 2048)
        area = reso[0] * reso[1]
        for w, h in sizes:
            for no_upscale in (False, True):
                expected = reference_select(w, h, resos, no_upscale, area, 64)
                if no_upscale and (expected[0][0] == 0 or expected[0][1] == 0):
                    with pytest.raises(ValueError, match="smaller than one bucket step"):
                        _native.bucket_select((w, h), resos, no_upscale=True, max_area=area, step=64)
                    continue
                got = _native.bucket_select((w, h), resos, no_upscale=no_upscale, max_area=area, step=64)
                assert (tuple(got[0]), tuple(got[1])) == expected, (w, h, no_upscale)


def test_plan_crop_is_centered_with_target_aspect():
    p = _native.plan_crop((1000, 500), (512, 512))
    assert p["out_size"] == (512, 512)
    x0, y0, x1, y1 = p["box"]
    assert (x1 - x0) == pytest.approx(500) and (y1 - y0) == pytest.approx(500)
    assert x0 == pytest.approx(250) and y0 == 0
    p = _native.plan_crop((600, 900), (512, 768))
    x0, y0, x1, y1 = p["box"]
    assert (x1 - x0) / (y1 - y0) == pytest.approx(512 / 768)
    assert x0 == 0 and y0 == pytest.approx(0)


def test_plan_bucket_maps_center_trim_back_to_source():
    bucket, resized = (640, 384), (683, 384)
    p = _native.plan_bucket((1366, 768), bucket, resized)
    x0, y0, x1, y1 = p["box"]
    assert p["out_size"] == bucket
    left = (683 - 640) // 2
    assert x0 == pytest.approx(left * 2.0, rel=1e-6) and x1 == pytest.approx((left + 640) * 2.0, rel=1e-6)
    assert y0 == 0 and y1 == pytest.approx(768)


def test_plan_pad_fits_and_pads_with_white():
    img = np.zeros((100, 300, 3), np.uint8)
    p = _native.plan_pad((300, 100), (256, 256))
    assert p["inner_size"] == (256, 85) and p["offset"] == (0, 85)
    out = _native.apply_plan(img, p)
    assert out.shape == (256, 256, 3)
    assert (out[:85] == 255).all() and (out[85 + 85:] == 255).all()
    assert (out[90:160] == 0).all()


def test_apply_plan_output_size_and_content():
    img = np.zeros((400, 800, 3), np.uint8)
    img[:, :400] = 200  # left half bright, right half dark
    out = _native.apply_plan(img, _native.plan_crop((800, 400), (256, 256)))
    assert out.shape == (256, 256, 3)
    assert out[:, :100].mean() > 190 and out[:, 160:].mean() < 10


@pytest.mark.parametrize("bad", [((0, 10), (10, 10)), ((10, 10), (0, 5)), ((-1, 5), (5, 5))])
def test_plans_reject_bad_sizes(bad):
    with pytest.raises(ValueError):
        _native.plan_crop(*bad)
    with pytest.raises(ValueError):
        _native.plan_pad(*bad)


def test_degenerate_bucket_parameters_never_crash():
    # a step larger than the square's side: no zero-sized bucket is produced
    resos = _native.bucket_resolutions((512, 512), min_size=256, max_size=1024, step=1024)
    assert all(w > 0 and h > 0 for w, h in resos)
    with pytest.raises(ValueError, match="no usable bucket"):
        _native.bucket_select((640, 640), [(0, 0)], step=64)
    # steps near INT_MAX must not overflow the loop
    resos = _native.bucket_resolutions((512, 512), min_size=1, max_size=2**31 - 1, step=2**30 - 1)
    assert all(w > 0 and h > 0 for w, h in resos)


def test_plan_with_overflowing_offset_is_refused():
    plan = {"out_size": (10, 10), "box": (0, 0, 20, 20), "inner_size": (5, 5), "offset": (2**31 - 3, 0)}
    with pytest.raises(ValueError, match="malformed"):
        _native.apply_plan(np.zeros((20, 20, 3), np.uint8), plan)
