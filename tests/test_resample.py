"""lora_native.resample against Pillow, bit for bit, and the vector paths against the scalar ones."""
import numpy as np
import PIL
import pytest
from PIL import Image

import lora_native
from lora_native import resample
from builders.images import generate_images, make_image

PIL_FILTERS = {
    "lanczos": Image.Resampling.LANCZOS,
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "box": Image.Resampling.BOX,
}


def pil_resize(a, size, filt, box=None):
    return np.asarray(Image.fromarray(a).resize(size, PIL_FILTERS[filt], box=box))


def assert_same(got, want):
    assert got.dtype == np.uint8 and got.shape == want.shape
    if not np.array_equal(got, want):
        diff = np.argwhere(got != want)
        raise AssertionError(f"{len(diff)} pixels differ, first at {diff[0].tolist()}: "
                             f"{got[tuple(diff[0])]} != {want[tuple(diff[0])]}")


# (source w, h) -> (target w, h): down, up, mixed, one axis only, tall (vertical pass first
# in Pillow >= 13), tiny and identity.
SIZE_CASES = [
    ((64, 48), (8, 8)), ((64, 48), (32, 32)), ((100, 75), (9, 8)), ((31, 33), (64, 70)),
    ((40, 300), (8, 8)), ((40, 300), (30, 12)), ((300, 40), (30, 40)), ((50, 60), (50, 20)),
    ((7, 5), (3, 9)), ((1, 1), (5, 4)), ((2, 3), (1, 1)), ((17, 250), (16, 249)),
    ((640, 480), (640, 480)), ((640, 480), (333, 517)), ((97, 1023), (32, 32)), ((256, 256), (1000, 3)),
]


@pytest.mark.parametrize("src,dst", SIZE_CASES, ids=lambda v: "x".join(map(str, v)))
@pytest.mark.parametrize("filt", list(PIL_FILTERS))
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_resize_matches_pillow(src, dst, filt, mode):
    for kind in ("noise", "photo"):
        a = make_image(kind, *src, mode=mode, seed=sum(src) + len(filt))
        assert_same(resample.resize(a, dst, filt), pil_resize(a, dst, filt))


def test_pass_order_boundary_matches_pillow():
    # Pillow >= 13 runs the vertical pass first iff out_h < in_h and
    # 2 * (in_w - out_w) < in_h - out_h; the 8-bit rounding between passes shows the order.
    rng = np.random.default_rng(5)
    for w, h in [(60, 60), (90, 40), (45, 200), (200, 45)]:
        for ow in range(2, w + 20, 7):
            for tie in (-1, 0, 1):
                oh = h - 2 * (w - ow) + tie
                if not 1 <= oh <= 2 * h:
                    continue
                a = rng.integers(0, 256, (h, w), dtype=np.uint8)
                assert_same(resample.resize(a, (ow, oh)), pil_resize(a, (ow, oh), "lanczos"))


def test_random_sizes_filters_and_boxes_match_pillow():
    rng = np.random.default_rng(1234)
    for i in range(160):
        w, h = (int(v) for v in rng.integers(1, 140, 2))
        ow, oh = (int(v) for v in rng.integers(1, 140, 2))
        filt = list(PIL_FILTERS)[i % 4]
        mode = "RGB" if i % 2 else "L"
        a = make_image(["noise", "photo", "text", "checker"][i % 4], w, h, mode=mode, seed=i)
        box = None
        if i % 3:
            x0, y0 = rng.uniform(0, w / 2), rng.uniform(0, h / 2)
            box = (float(x0), float(y0), float(rng.uniform(x0, w)), float(rng.uniform(y0, h)))
            if i % 3 == 2:
                box = tuple(float(int(v)) for v in box)
        assert_same(resample.resize(a, (ow, oh), filt, box), pil_resize(a, (ow, oh), filt, box))


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_integer_box_of_target_size_is_a_crop(mode):
    a = make_image("noise", 50, 40, mode=mode, seed=3)
    box = (5.0, 7.0, 25.0, 37.0)
    out = resample.resize(a, (20, 30), "bicubic", box)
    assert_same(out, pil_resize(a, (20, 30), "bicubic", box))
    assert_same(out, a[7:37, 5:25])


def test_degenerate_boxes_match_pillow():
    a = make_image("photo", 40, 30, mode="RGB", seed=9)
    for box in [(10.0, 5.0, 10.0, 20.0), (0.0, 0.0, 0.5, 30.0), (39.5, 29.5, 40.0, 30.0), (3.25, 4.75, 3.5, 5.0)]:
        for filt in PIL_FILTERS:
            assert_same(resample.resize(a, (7, 6), filt, box), pil_resize(a, (7, 6), filt, box))


def test_generated_images_match_pillow():
    checked = 0
    for name, a in generate_images(60, seed=7, large_every=20, modes=("RGB", "L", "gray-RGB")):
        for size in [(8, 8), (37, 23), (max(1, a.shape[1] // 3), max(1, a.shape[0] // 2))]:
            got, want = resample.resize(a, size), pil_resize(a, size, "lanczos")
            assert np.array_equal(got, want), f"{name} -> {size}"
            checked += 1
    assert checked == 180


def test_rgba_is_resized_per_channel_without_premultiplying():
    a = make_image("photo", 90, 70, mode="RGBA", seed=4)
    out = resample.resize(a, (33, 21), "lanczos")
    assert out.shape == (21, 33, 4)
    assert_same(out[..., :3], resample.resize(np.ascontiguousarray(a[..., :3]), (33, 21)))
    assert_same(out[..., 3], resample.resize(np.ascontiguousarray(a[..., 3]), (33, 21)))


def test_channel_axis_of_one_is_kept():
    a = make_image("noise", 30, 20, mode="L", seed=2)
    out = resample.resize(a[..., None], (10, 5))
    assert out.shape == (5, 10, 1)
    assert_same(out[..., 0], pil_resize(a, (10, 5), "lanczos"))


def test_strided_inputs_equal_their_contiguous_copies():
    a = make_image("photo", 120, 90, mode="RGB", seed=8)
    for view in (a[::2, ::3], a[:, :, ::-1], np.asfortranarray(a), a[10:50, 20:90], a[::-1]):
        assert_same(resample.resize(view, (17, 13)), resample.resize(np.ascontiguousarray(view), (17, 13)))
        assert_same(resample.to_gray(view), resample.to_gray(np.ascontiguousarray(view)))


def test_pil_filter_constants_are_accepted():
    a = make_image("noise", 30, 20, mode="RGB", seed=1)
    for name, const in PIL_FILTERS.items():
        assert_same(resample.resize(a, (7, 9), const), resample.resize(a, (7, 9), name))
    with pytest.raises(ValueError, match="unsupported filter"):
        resample.resize(a, (7, 9), Image.Resampling.NEAREST)


def test_to_gray_matches_pillow_on_every_rgb_colour():
    v = np.arange(1 << 24, dtype=np.uint32)
    rgb = np.stack([(v >> 16) & 255, (v >> 8) & 255, v & 255], axis=-1).astype(np.uint8).reshape(4096, 4096, 3)
    want = np.asarray(Image.fromarray(rgb).convert("L"))
    assert_same(resample.to_gray(rgb), want)


def test_to_gray_rgba_ignores_alpha_like_pillow():
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (1024, 1024, 4), dtype=np.uint8)
    assert_same(resample.to_gray(rgba), np.asarray(Image.fromarray(rgba).convert("L")))
    # every width modulo the vector step, so tails are exercised
    for w in range(1, 40):
        assert_same(resample.to_gray(rgba[:3, :w]), np.asarray(Image.fromarray(rgba[:3, :w]).convert("L")))
        rgb = np.ascontiguousarray(rgba[:3, :w, :3])
        assert_same(resample.to_gray(rgb), np.asarray(Image.fromarray(rgb).convert("L")))


def test_to_gray_of_gray_is_a_copy():
    a = make_image("noise", 13, 7, mode="L", seed=5)
    out = resample.to_gray(a)
    assert_same(out, a)
    assert out is not a
    assert_same(resample.to_gray(a[..., None]), a)


def _vector_level():
    return lora_native.build_info()["simd"]


@pytest.mark.skipif(_vector_level() == "scalar", reason="no AVX2 on this machine: only the scalar path exists")
def test_scalar_and_vector_paths_agree(monkeypatch):
    rng = np.random.default_rng(77)
    cases = []
    for i in range(60):
        w, h = (int(v) for v in rng.integers(1, 300, 2))
        ow, oh = (int(v) for v in rng.integers(1, 300, 2))
        mode = ["L", "RGB", "RGBA"][i % 3]
        cases.append((make_image(["noise", "photo"][i % 2], w, h, mode=mode, seed=i), (ow, oh),
                      list(PIL_FILTERS)[i % 4]))
    cases.append((make_image("noise", 2000, 1500, mode="L", seed=1), (8, 8), "lanczos"))
    cases.append((make_image("noise", 1500, 1000, mode="RGB", seed=2), (97, 61), "bicubic"))
    cases.append((make_image("noise", 20, 10, mode="RGB", seed=3), (900, 700), "lanczos"))
    vector = [(resample.resize(a, s, f), resample.to_gray(a) if a.ndim == 3 else None) for a, s, f in cases]
    monkeypatch.setenv("LORA_NATIVE_SIMD", "scalar")
    for (a, s, f), (want_resize, want_gray) in zip(cases, vector):
        assert_same(resample.resize(a, s, f), want_resize)
        if want_gray is not None:
            assert_same(resample.to_gray(a), want_gray)


def test_fast_lanczos_tables_equal_libm_tables():
    # With AVX2, Lanczos weights come from a vectorised sin with a rounding certificate and
    # fall back to libm per output; the fixed-point tables must be identical either way.
    from lora_native import _native

    rng = np.random.default_rng(31)
    rows = libm_rows = 0
    cases = [(1024, 8), (1024, 9), (1024, 32), (768, 8), (768, 32), (4032, 9), (3024, 32), (1, 1), (5, 700),
             (8192, 8), (333, 333)]
    cases += [(int(rng.integers(1, 5000)), int(rng.integers(1, 400))) for _ in range(400)]
    for i, (n_in, n_out) in enumerate(cases):
        box = None
        if i % 4 == 3:
            x0 = float(rng.uniform(0, n_in / 2))
            box = (x0, float(rng.uniform(x0, n_in)))
        fast = _native.resample_weights(n_in, n_out, "lanczos", box)
        exact = _native.resample_weights(n_in, n_out, "lanczos", box, fast=False)
        for got, want, what in zip(fast[:3], exact[:3], ("start", "count", "weights")):
            assert np.array_equal(got, want), (n_in, n_out, box, what)
        assert exact[3] == n_out
        rows += n_out
        libm_rows += fast[3]
    if _vector_level() != "scalar":
        assert libm_rows < rows / 100  # the fast path did the work


def test_weight_tables_sum_to_one_in_fixed_point():
    from lora_native import _native

    for filt in PIL_FILTERS:
        start, count, weights, _ = _native.resample_weights(1000, 37, filt)
        sums = weights.sum(axis=1)
        assert np.all(np.abs(sums - (1 << 22)) <= count), filt
        assert start[0] == 0 and start[-1] + count[-1] == 1000


@pytest.mark.parametrize(
    "args,exc,match",
    [
        ((np.zeros((4, 4), np.float32), (2, 2)), TypeError, "dtype uint8"),
        (([[1, 2], [3, 4]], (2, 2)), TypeError, "numpy.ndarray"),
        ((np.zeros((4, 4, 2), np.uint8), (2, 2)), ValueError, "channels"),
        ((np.zeros((2, 4, 4, 3), np.uint8), (2, 2)), ValueError, "dimensions"),
        ((np.zeros((0, 4), np.uint8), (2, 2)), ValueError, "size"),
        ((np.zeros((4, 4), np.uint8), (0, 2)), ValueError, "size must be positive"),
        ((np.zeros((4, 4), np.uint8), (2,)), TypeError, "pair of integers"),
        ((np.zeros((4, 4), np.uint8), (2.5, 2)), TypeError, "pair of integers"),
        ((np.zeros((4, 4), np.uint8), (2, 2), "nearest"), ValueError, "unknown filter"),
        ((np.zeros((4, 4), np.uint8), (2, 2), "box", (-1, 0, 2, 2)), ValueError, "box offset can't be negative"),
        ((np.zeros((4, 4), np.uint8), (2, 2), "box", (0, 0, 5, 2)), ValueError, "box can't exceed"),
        ((np.zeros((4, 4), np.uint8), (2, 2), "box", (3, 0, 2, 2)), ValueError, "box can't be empty"),
        ((np.zeros((4, 4), np.uint8), (2, 2), "box", (0, 0, 2)), TypeError, "four numbers"),
        ((np.zeros((4, 4), np.uint8), (2, 2), "box", (0, 0, float("nan"), 2)), ValueError, "finite"),
    ],
)
def test_bad_arguments_raise_clear_errors(args, exc, match):
    with pytest.raises(exc, match=match):
        resample.resize(*args)


def test_to_gray_rejects_bad_input():
    with pytest.raises(TypeError, match="dtype uint8"):
        resample.to_gray(np.zeros((3, 3, 3), np.uint16))
    with pytest.raises(ValueError, match="channels"):
        resample.to_gray(np.zeros((3, 3, 5), np.uint8))


def test_pillow_compat_switch_selects_the_pass_order(monkeypatch):
    """A tall shrink is where Pillow 13 and older Pillow differ; the installed one is matched."""
    rng = np.random.default_rng(5)
    tall = rng.integers(0, 256, size=(900, 200), dtype=np.uint8)
    results = {}
    for compat in ("12", "13"):
        monkeypatch.setenv("LORA_NATIVE_PILLOW_COMPAT", compat)
        results[compat] = lora_native._native.resize(tall, (32, 32))
    assert not np.array_equal(results["12"], results["13"])
    major = int(PIL.__version__.split(".")[0])
    expected = np.asarray(Image.fromarray(tall).resize((32, 32), Image.LANCZOS))
    assert np.array_equal(results["13" if major >= 13 else "12"], expected)
