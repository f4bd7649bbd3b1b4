"""lora_native.prep: captioner input tensors against transformers' PIL image processors (BLIP, CLIP)
and SmilingWolf's WD14 preprocessing, on the same decoded pixels.

Tolerance against transformers: 1e-5. The pixels (resize, crop, pad) are bit-identical, which
test_pixels_are_exact checks by redoing transformers' arithmetic on our integer pixels; the only
difference is that transformers rounds pixel * scale from a float64 1/255 while the native code
multiplies by a float32 scale, one float32 ulp (<= 6e-8) before the division by std (>= 0.26 for
CLIP's std), so the values differ by a few 1e-7 at most (4.8e-7 seen). WD14 (scale 1, no
normalisation) is compared for equality.
"""
import os

import numpy as np
import pytest
from PIL import Image

from builders.images import make_image
from lora_native import _native, imageio
from lora_native.prep import prepare_image, prepare_images, spec_from_processor_config, wd14_spec

TOL = 1e-5

# name -> (kind, width, height, mode, file format): odd sizes, portrait and landscape, square,
# smaller than any crop, tiny, RGBA with transparency, grayscale, JPEG.
IMAGES = {
    "landscape": ("photo", 300, 200, "RGB", "PNG"),
    "portrait-odd": ("gradient-radial", 201, 333, "RGB", "PNG"),
    "square-224": ("checker", 224, 224, "RGB", "PNG"),
    "one-over": ("stripes", 225, 224, "RGB", "PNG"),
    "small": ("noise", 100, 50, "RGB", "PNG"),
    "tiny": ("text", 17, 9, "RGB", "PNG"),
    "one-pixel": ("flat", 1, 1, "RGB", "PNG"),
    "tall-jpeg": ("photo", 223, 500, "RGB", "JPEG"),
    "wide-jpeg": ("symmetric", 640, 480, "RGB", "JPEG"),
    "rgba": ("photo", 97, 129, "RGBA", "PNG"),
    "gray": ("gradient-h", 150, 99, "L", "PNG"),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """name -> path of each IMAGES entry written as a file."""
    folder = tmp_path_factory.mktemp("prep")
    out = {}
    for i, (name, (kind, w, h, mode, fmt)) in enumerate(IMAGES.items()):
        a = make_image(kind, w, h, mode, seed=i)
        if mode == "RGBA":
            a[: h // 3, :, 3] = 0  # a fully transparent band beside the random alpha
        path = folder / f"{name}.{fmt.lower()}"
        Image.fromarray(a).save(path, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        out[name] = str(path)
    return out


@pytest.fixture(scope="module")
def decoded(files):
    """name -> the HxWx3 RGB pixels our decoder makes of the file (the references' input)."""
    return {name: imageio.decode_file(path).pixels for name, path in files.items()}


@pytest.fixture(scope="module")
def transformers_pil():
    pytest.importorskip("transformers")
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    return BlipImageProcessorPil, CLIPImageProcessorPil


def processor_reference(processor, rgb):
    return processor(images=Image.fromarray(rgb), return_tensors="np")["pixel_values"][0]


def assert_close(got, want, what):
    assert got.dtype == np.float32 and got.shape == want.shape, (what, got.shape, want.shape)
    diff = float(np.abs(got - want).max())
    assert diff <= TOL, f"{what}: max abs diff {diff}"
    return diff


def processors(transformers_pil):
    """Default and non-default BLIP and CLIP processors, by name."""
    blip, clip = transformers_pil
    return {
        "blip-384-bicubic": blip(),
        "blip-256-bilinear": blip(size={"height": 256, "width": 256}, resample=2),
        "blip-lanczos-nonsquare": blip(size={"height": 96, "width": 130}, resample=1, image_mean=0.5, image_std=0.5),
        "clip-224-bicubic": clip(),
        "clip-256-bilinear": clip(size={"shortest_edge": 256}, crop_size={"height": 256, "width": 256}, resample=2),
        # a crop larger than the short side (zero padding on one axis, odd margins) and box resampling
        "clip-crop-over-short": clip(size={"shortest_edge": 200}, crop_size={"height": 257, "width": 181}, resample=4),
        "clip-no-normalize": clip(do_normalize=False),
        "clip-no-rescale": clip(do_rescale=False, image_mean=(10.0, 20.0, 30.0), image_std=(2.0, 3.0, 4.0)),
    }


@pytest.mark.parametrize("name", ["blip-384-bicubic", "blip-256-bilinear", "blip-lanczos-nonsquare",
                                  "clip-224-bicubic", "clip-256-bilinear", "clip-crop-over-short",
                                  "clip-no-normalize", "clip-no-rescale"])
def test_matches_transformers_processor(name, files, decoded, transformers_pil):
    processor = processors(transformers_pil)[name]
    spec = spec_from_processor_config(processor.to_dict())
    names = list(files)
    batch, errors = prepare_images([files[n] for n in names], **spec, threads=2)
    assert errors == [None] * len(names)
    for i, n in enumerate(names):
        want = processor_reference(processor, decoded[n])
        assert_close(batch[i], want, f"{name} {n}")
        assert_close(prepare_image(decoded[n], **spec), want, f"{name} {n} (array)")


@pytest.mark.parametrize("name", ["blip-384-bicubic", "clip-224-bicubic", "clip-crop-over-short"])
def test_pixels_are_exact(name, files, decoded, transformers_pil):
    """Our integer pixels through transformers' own arithmetic (float64 rescale, float32 normalise)
    give its output bit for bit: resize, crop and padding are exact; only the scale's rounding differs."""
    processor = processors(transformers_pil)[name]
    spec = dict(spec_from_processor_config(processor.to_dict()), scale=1.0, mean=0.0, std=1.0)
    for n, rgb in decoded.items():
        pixels = prepare_image(rgb, **spec)
        assert np.array_equal(pixels, np.round(pixels)) and pixels.min() >= 0 and pixels.max() <= 255
        t = (pixels.astype(np.float64) * processor.rescale_factor).astype(np.float32)
        mean = np.asarray(processor.image_mean, np.float32)[:, None, None]
        std = np.asarray(processor.image_std, np.float32)[:, None, None]
        assert np.array_equal((t - mean) / std, processor_reference(processor, rgb)), (name, n)


def test_png_files_straight_into_transformers(files, transformers_pil):
    """The file opened by PIL (transformers composites RGBA on white and expands L itself) gives
    the same as our decoder's pixels: RGBA and grayscale included."""
    processor = processors(transformers_pil)["clip-224-bicubic"]
    spec = spec_from_processor_config(processor.to_dict())
    names = [n for n, v in IMAGES.items() if v[4] == "PNG"]
    batch, _ = prepare_images([files[n] for n in names], **spec)
    for i, n in enumerate(names):
        with Image.open(files[n]) as im:
            want = processor(images=im, return_tensors="np")["pixel_values"][0]
        assert_close(batch[i], want, n)


def wd14_reference(rgb, size):
    """SmilingWolf's wd-tagger app (alpha already composited on white by the decoder)."""
    image = Image.fromarray(rgb)
    max_dim = max(image.size)
    pad_left, pad_top = (max_dim - image.size[0]) // 2, (max_dim - image.size[1]) // 2
    padded = Image.new("RGB", (max_dim, max_dim), (255, 255, 255))
    padded.paste(image, (pad_left, pad_top))
    if max_dim != size:
        padded = padded.resize((size, size), Image.BICUBIC)
    return np.asarray(padded, dtype=np.float32)[:, :, ::-1]


@pytest.mark.parametrize("size", [448, 61, 224])
def test_pad_square_equals_wd14_reference(size, files, decoded):
    names = list(files)
    batch, errors = prepare_images([files[n] for n in names], **wd14_spec(size))
    assert errors == [None] * len(names) and batch.shape == (len(names), size, size, 3)
    for i, n in enumerate(names):
        want = wd14_reference(decoded[n], size)
        assert np.array_equal(batch[i], want), n
        assert np.array_equal(prepare_image(decoded[n], **wd14_spec(size)), want), n


def test_pad_square_other_filters_and_nonsquare_slot(decoded):
    rgb = decoded["portrait-odd"]
    side = max(rgb.shape[:2])
    canvas = Image.new("RGB", (side, side), (255, 255, 255))
    canvas.paste(Image.fromarray(rgb), ((side - rgb.shape[1]) // 2, (side - rgb.shape[0]) // 2))
    for name, pil in (("lanczos", Image.LANCZOS), ("bilinear", Image.BILINEAR), ("box", Image.BOX)):
        want = np.asarray(canvas.resize((80, 50), pil), dtype=np.float32)
        got = prepare_image(rgb, size=(80, 50), mode="pad_square", filter=name, layout="nhwc_bgr",
                            scale=1.0, mean=0.0, std=1.0)
        assert np.array_equal(got, want[:, :, ::-1]), name


def test_layouts_and_arithmetic_order(decoded):
    rgb = decoded["landscape"]
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    nchw = prepare_image(rgb, size=(40, 30), mean=mean, std=std, scale=0.01)
    nhwc = prepare_image(rgb, size=(40, 30), mean=mean, std=std, scale=0.01, layout="nhwc_bgr")
    assert nchw.shape == (3, 30, 40) and nhwc.shape == (30, 40, 3)
    assert np.array_equal(nhwc, nchw.transpose(1, 2, 0)[:, :, ::-1])
    pixels = prepare_image(rgb, size=(40, 30), scale=1.0)
    t = pixels * np.float32(0.01)  # documented order: float32(pixel * scale), then - mean, then / std
    want = (t - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[:, None, None]
    assert np.array_equal(nchw, want)


def test_unusable_files_get_a_message_and_a_zero_slot(files, tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image at all\n")
    cut = tmp_path / "cut.png"
    cut.write_bytes(open(files["landscape"], "rb").read()[:200])
    missing = tmp_path / "missing.png"
    good = [files["landscape"], files["rgba"]]
    paths = [good[0], str(empty), str(text), good[1], str(cut), missing]
    spec = dict(size=(64, 48), mode="short_crop", short_side=48, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    batch, errors = prepare_images(paths, **spec)
    assert errors[0] is None and errors[3] is None
    for i, (path, reason) in {1: (empty, "empty_file"), 2: (text, "not_an_image"), 4: (cut, "truncated"),
                              5: (missing, "unreadable")}.items():
        assert errors[i] and str(path) in errors[i] and reason in errors[i], errors[i]
        assert not batch[i].any()
    alone, _ = prepare_images(good, **spec)
    assert np.array_equal(batch[[0, 3]], alone)


def test_too_large_intermediates_are_per_file_errors(tmp_path):
    wide = tmp_path / "wide.png"
    Image.fromarray(make_image("gradient-h", 400, 2)).save(wide)
    ok = tmp_path / "ok.png"
    Image.fromarray(make_image("photo", 30, 20)).save(ok)
    # The square canvas may be 4x the decode limit (panoramas pad), no more: 160 000 > 4 x 39 000.
    batch, errors = prepare_images([wide, ok], **wd14_spec(32), max_pixels=39_000)
    assert str(wide) in errors[0] and "pads to a 400x400 square" in errors[0] and errors[1] is None and not batch[0].any()
    batch, errors = prepare_images([wide, ok], **wd14_spec(32), max_pixels=40_000)
    assert errors == [None, None] and batch[0].any()
    batch, errors = prepare_images([wide, ok], size=(8, 8), mode="short_crop", short_side=100, max_pixels=20_000)
    assert "max_pixels" in errors[0] and errors[1] is None  # 100 x 20000 before the crop, 150 x 100


def test_threads_give_identical_output(files):
    paths = list(files.values()) * 3
    for spec in (dict(size=(96, 80), mode="short_crop", short_side=90, filter="lanczos"), wd14_spec(64)):
        one, e1 = prepare_images(paths, **spec, threads=1)
        two, e2 = prepare_images(paths, **spec, threads=2)
        assert e1 == e2 == [None] * len(paths)
        assert np.array_equal(one, two)


def test_paths_and_empty_batch(files):
    import pathlib
    a, _ = prepare_images([pathlib.Path(files["tiny"]), os.fsencode(files["tiny"]), files["tiny"]], size=(5, 7))
    assert a.shape == (3, 3, 7, 5) and np.array_equal(a[0], a[1]) and np.array_equal(a[0], a[2])
    empty, errors = prepare_images([], size=(5, 7), layout="nhwc_bgr")
    assert empty.shape == (0, 7, 5, 3) and empty.dtype == np.float32 and errors == []


def test_spec_from_processor_config(transformers_pil):
    blip, clip = transformers_pil
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    assert spec_from_processor_config(clip().to_dict()) == {
        "size": (224, 224), "mode": "short_crop", "short_side": 224, "filter": "bicubic", "layout": "nchw",
        "scale": 1 / 255, "mean": mean, "std": std}
    assert spec_from_processor_config(blip().to_dict()) == {
        "size": (384, 384), "mode": "resize", "short_side": 0, "filter": "bicubic", "layout": "nchw",
        "scale": 1 / 255, "mean": mean, "std": std}
    # preprocessor_config.json of older checkpoints: bare ints, lists, missing keys
    old_clip = {"crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
                "image_mean": list(mean), "image_std": list(std), "resample": 3, "size": 224}
    assert spec_from_processor_config(old_clip) == spec_from_processor_config(clip().to_dict())
    assert spec_from_processor_config({"size": 384})["size"] == (384, 384)
    assert spec_from_processor_config({"size": {"height": 96, "width": 130}, "do_rescale": False,
                                       "do_normalize": False, "resample": 4}) == {
        "size": (130, 96), "mode": "resize", "short_side": 0, "filter": "box", "layout": "nchw",
        "scale": 1.0, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
    for bad, words in [({"resample": 0}, "nearest"), ({"resample": 5}, "hamming"),
                       ({"size": {"shortest_edge": 224}}, "shortest_edge"),
                       ({"size": {"shortest_edge": 224, "longest_edge": 400}, "do_center_crop": True}, "longest_edge"),
                       ({"do_resize": False}, "do_resize"),
                       ({"size": {"height": 256, "width": 256}, "do_center_crop": True, "crop_size": 224}, "crop")]:
        with pytest.raises(ValueError, match=words):
            spec_from_processor_config(bad)


def test_wd14_spec():
    assert wd14_spec(448) == {"size": (448, 448), "mode": "pad_square", "short_side": 0, "filter": "bicubic",
                              "layout": "nhwc_bgr", "scale": 1.0, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
    with pytest.raises(ValueError):
        wd14_spec(0)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(mode="short_crop"), ValueError, "short_side"),
    (dict(size=(0, 5)), ValueError, "size must be positive"),
    (dict(size=(5, -1)), ValueError, "size must be positive"),
    (dict(size=5), TypeError, "size must be a pair"),
    (dict(std=(1.0, 0.0, 1.0)), ValueError, "std must be non-zero"),
    (dict(std=0), ValueError, "std must be non-zero"),
    (dict(mean=(0.5, 0.5)), TypeError, "three numbers"),
    (dict(mean=(0.5, float("nan"), 0.5)), ValueError, "finite"),
    (dict(scale=float("inf")), ValueError, "scale"),
    (dict(mode="crop"), ValueError, "short_crop"),
    (dict(layout="nhwc"), ValueError, "nhwc_bgr"),
    (dict(filter="nearest"), ValueError, "bicubic"),
    (dict(filter=3), TypeError, "filter must be a string"),
    (dict(short_side=-3, mode="short_crop"), ValueError, "short_side"),
])
def test_argument_errors(kwargs, error, words, files):
    with pytest.raises(error, match=words):
        prepare_images([files["tiny"]], **kwargs)
    with pytest.raises(error, match=words):
        prepare_image(np.zeros((4, 4, 3), np.uint8), **kwargs)


def test_batch_argument_errors(files):
    with pytest.raises(TypeError, match="single str"):
        _native.prepare_images(files["tiny"])
    with pytest.raises(ValueError, match="threads"):
        prepare_images([files["tiny"]], threads=-1)
    with pytest.raises(ValueError, match="max_pixels"):
        prepare_images([files["tiny"]], max_pixels=0)
    with pytest.raises(TypeError):
        prepare_images([files["tiny"], 3])
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        prepare_image(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        prepare_image(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        prepare_image(np.zeros((4, 4, 3), np.float32))
