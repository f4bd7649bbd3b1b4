"""Decoding with file checks: every broken or odd file gives the right reason and a useful
message, nothing crashes, and the pixels of good files equal Pillow's."""
import io
import os
import resource

import numpy as np
import pytest
from PIL import Image

from builders import files
from lora_native import _native, imageio

CASES = files.build_cases()


def case_id(c):
    return c.name if isinstance(c.name, str) else os.fsdecode(c.name).encode("ascii", "backslashreplace").decode()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    cases = files.write_corpus(tmp_path_factory.mktemp("corpus"))
    return {case_id(c): c for c in cases}


# ---------------------------------------------------------------- reasons, notes, messages


@pytest.mark.parametrize("name", [case_id(c) for c in CASES])
def test_corpus_file_gives_expected_record(corpus, name):
    case = corpus[name]
    r = imageio.decode_file(case.path)
    assert r.reason == case.reason, r.describe()
    assert r.format == case.format, r.describe()
    assert case.notes <= set(r.notes), r.describe()
    assert set(r.notes) <= set(imageio.NOTES)
    assert r.reason in imageio.REASONS
    for word in case.message:
        assert word in r.message.lower(), r.message
    if case.ok:
        assert r.message == ""
        assert r.pixels is not None and r.pixels.dtype == np.uint8 and r.pixels.ndim == 3
        assert r.pixels.shape[2] == 3
        assert r.width > 0 and r.height > 0 and r.frames >= 1
        assert r.bit_depth in (8, 16)
    else:
        assert r.pixels is None
        assert len(r.message) > 10, "a rejected file needs a message a person can act on"
    if case.size:
        assert (r.width, r.height) == case.size
    if "frames" in case.extra:
        assert r.frames == case.extra["frames"]
    if "orientation" in case.extra:
        assert r.orientation == case.extra["orientation"]
    if case.extra.get("no_alpha_note"):
        assert "alpha" not in r.notes, "alpha is noted only when some pixel is not opaque"


@pytest.mark.parametrize("name", [case_id(c) for c in CASES if c.kind == "file"])
def test_memory_and_file_agree(corpus, name):
    case = corpus[name]
    ext = os.path.splitext(os.fsdecode(case.path))[1]
    a, info_mem = _native.decode(case.data, ext=ext)
    b, info_file = _native.decode_file(case.path)
    assert info_mem == info_file
    assert (a is None and b is None) or np.array_equal(a, b)


@pytest.mark.parametrize("name", [case_id(c) for c in CASES if c.kind == "file"])
def test_header_only_reads_no_pixels(corpus, name):
    case = corpus[name]
    pixels, info = _native.decode_file(case.path, header_only=True)
    assert pixels is None
    full = imageio.decode_file(case.path)
    if case.ok:
        # Structure and size are known without decoding; only decoder findings can differ.
        assert info["reason"] == "ok"
        assert (info["width"], info["height"]) == (full.width, full.height)
        assert info["orientation"] == full.orientation
    elif info["reason"] != "ok":
        assert info["reason"] == full.reason


def test_non_utf8_name_through_bytes_path(corpus):
    case = corpus[case_id(files.Case(b"caf\xe9.png", b"", "ok", "png"))]
    assert isinstance(case.path, bytes) and b"\xe9" in case.path
    r = imageio.decode_file(case.path)
    assert r.ok and r.format == "png"
    assert r.path == os.fsdecode(case.path)


def test_rgba_composited_on_white_exactly(corpus):
    r = imageio.decode_file(corpus["rgba.png"].path)
    for (y, x), want in corpus["rgba.png"].extra["pixels"].items():
        assert tuple(r.pixels[y, x]) == want
    # (c*a + 255*(255-a) + 127) // 255 over the whole picture
    src = np.asarray(files.rgba_image()).astype(np.uint32)
    a = src[..., 3:4]
    want = (src[..., :3] * a + 255 * (255 - a) + 127) // 255
    assert np.array_equal(r.pixels, want.astype(np.uint8))


def test_decode_files_over_whole_corpus(corpus):
    cases = list(corpus.values())
    paths = [c.path for c in cases] * 3
    results = imageio.decode_files(paths, threads=4)
    assert len(results) == len(paths)
    for c, r in zip(cases * 3, results):
        one = imageio.decode_file(c.path)
        assert (r.reason, r.format, r.notes, r.message) == (one.reason, one.format, one.notes, one.message)
        assert (r.pixels is None and one.pixels is None) or np.array_equal(r.pixels, one.pixels)


def test_decode_files_accepts_pathlike_and_str(corpus, tmp_path):
    import pathlib

    p = corpus["baseline.jpg"].path
    res = imageio.decode_files([pathlib.Path(os.fsdecode(p)), os.fsdecode(p), p, str(tmp_path / "missing.png")])
    assert [r.reason for r in res] == ["ok", "ok", "ok", "unreadable"]
    assert "no such file" in res[3].message.lower()
    assert imageio.decode_files([]) == []


# ---------------------------------------------------------------- pixel parity with Pillow

PARITY = [case_id(c) for c in CASES if c.reference is not None]


@pytest.mark.parametrize("name", PARITY)
def test_pixels_match_pillow(corpus, name):
    case = corpus[name]
    r = imageio.decode_file(case.path)
    want = case.reference()
    assert r.pixels.shape == want.shape
    diff = np.abs(r.pixels.astype(int) - want.astype(int))
    if case.exact:
        assert diff.max() == 0, "%s: max diff %d over %d samples" % (name, diff.max(), (diff > 0).sum())
    else:
        assert diff.max() <= 2, "%s: max diff %d" % (name, diff.max())


@pytest.mark.parametrize("size", [(61, 37), (128, 96), (17, 200)])
@pytest.mark.parametrize("subsampling", [0, 1, 2])
@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_libjpeg_matches_pillow_exactly(size, subsampling, progressive):
    im = files.rgb_image(*size, seed=sum(size) + subsampling)
    data = files.encode(im, "JPEG", quality=88, subsampling=subsampling, progressive=progressive)
    r = imageio.decode(data)
    want = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.array_equal(r.pixels, want)


def test_jpeg_stb_decoder_is_close_to_libjpeg(corpus):
    for name in ("baseline.jpg", "progressive.jpg", "gray.jpg", "cmyk.jpg"):
        a = imageio.decode_file(corpus[name].path).pixels
        b = imageio.decode_file(corpus[name].path, jpeg_decoder="stb").pixels
        assert a.shape == b.shape
        diff = np.abs(a.astype(int) - b.astype(int))
        # stb uses its own IDCT and upsampling: close, not equal.
        assert diff.mean() < 3, (name, diff.max(), diff.mean())


def test_orientation_can_be_left_alone(corpus):
    r = imageio.decode_file(corpus["orient_6.jpg"].path, apply_orientation=False)
    assert r.ok and r.orientation == 6 and "exif_orientation" not in r.notes
    assert r.pixels.shape == (32, 48, 3)
    turned = imageio.decode_file(corpus["orient_6.jpg"].path)
    assert turned.pixels.shape == (48, 32, 3)
    assert np.array_equal(np.rot90(r.pixels, k=-1), turned.pixels)


# ---------------------------------------------------------------- DCT-scaled decode


@pytest.mark.parametrize("min_side, want", [(0, (480, 640)), (100, (120, 160)), (61, (120, 160)),
                                            (60, (60, 80)), (1, (60, 80)), (300, (300, 400)),
                                            (481, (480, 640))])
def test_jpeg_draft_picks_smallest_scale(min_side, want):
    data = files.encode(files.rgb_image(640, 480), "JPEG", quality=85)
    r = imageio.decode(data, jpeg_draft_min_side=min_side)
    assert r.pixels.shape[:2] == want
    assert (r.width, r.height) == (640, 480), "info keeps the stored size"


def test_jpeg_draft_is_close_to_a_downscale():
    im = files.rgb_image(640, 480)
    data = files.encode(im, "JPEG", quality=95)
    small = imageio.decode(data, jpeg_draft_min_side=120).pixels
    ref = np.asarray(im.resize((160, 120), Image.Resampling.BOX))
    assert np.abs(small.astype(int) - ref.astype(int)).mean() < 6


# ---------------------------------------------------------------- limits and arguments


def test_max_pixels_refuses_before_allocating():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for data in (files.png_bytes(30000, 30000, 6, 16, [b"\x00" * 8]),
                 files.jpeg_set_size(files.encode(files.rgb_image(), "JPEG"), 60000, 60000)):
        r = imageio.decode(data)
        assert r.reason == "too_large" and r.pixels is None
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert after - before < 200 * 1024, "a 30000x30000 buffer was allocated"  # ru_maxrss is in KiB


def test_max_pixels_option():
    data = files.encode(files.rgb_image(48, 32), "PNG")
    assert imageio.decode(data, max_pixels=48 * 32).ok
    r = imageio.decode(data, max_pixels=48 * 32 - 1)
    assert r.reason == "too_large" and "48x32" in r.message


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        _native.decode(b"x", jpeg_decoder="turbo")
    with pytest.raises(ValueError):
        _native.decode(b"x", max_pixels=0)
    with pytest.raises((ValueError, OverflowError)):
        _native.decode(b"x", max_pixels=-5)
    with pytest.raises(ValueError):
        _native.decode(b"x", jpeg_draft_min_side=-1)
    with pytest.raises(TypeError):
        _native.decode("not bytes")
    with pytest.raises(TypeError):
        _native.decode(b"x", ext=3)
    with pytest.raises(ValueError):
        _native.decode_file("a\0b.png")
    with pytest.raises(ValueError):
        _native.decode_files(["a.png"], threads=-1)


def test_any_bytes_like_object():
    data = files.encode(files.rgb_image(), "PNG")
    for buf in (data, bytearray(data), memoryview(data), np.frombuffer(data, np.uint8)):
        assert imageio.decode(buf).ok


def test_pixels_own_their_memory():
    r = imageio.decode(files.encode(files.rgb_image(), "PNG"))
    a = r.pixels
    assert a.flags.c_contiguous and a.flags.writeable
    a[0, 0] = 0  # writable, freed with the array


def test_name_tables_match_python_lists():
    names = _native.decode_names()
    assert names["reasons"] == list(imageio.REASONS)
    assert names["notes"] == list(imageio.NOTES)
    assert names["formats"] == ["unknown", "jpeg", "png", "gif", "bmp", "tga", "webp", "text", "other"]


def test_describe_is_one_line(corpus):
    for c in corpus.values():
        line = imageio.decode_file(c.path).describe()
        assert "\n" not in line and line


# ---------------------------------------------------------------- robustness


def test_mutated_files_never_crash(corpus):
    """Flip, cut and splice the corpus files: every result is a valid record."""
    rng = np.random.RandomState(1234)
    seeds = [c.data for c in corpus.values() if c.kind == "file" and c.data]
    reasons = set(imageio.REASONS)
    for i in range(400):
        data = bytearray(seeds[i % len(seeds)])
        op = i % 4
        if op == 0 and data:
            for _ in range(rng.randint(1, 8)):
                data[rng.randint(len(data))] = rng.randint(256)
        elif op == 1:
            data = data[: rng.randint(len(data) + 1)]
        elif op == 2 and data:
            at = rng.randint(len(data))
            data[at:at] = bytes(rng.randint(0, 256, rng.randint(1, 64), dtype=np.uint8))
        else:
            other = seeds[rng.randint(len(seeds))]
            data = data[: len(data) // 2] + other[len(other) // 2:]
        for kw in ({}, {"jpeg_decoder": "stb"}, {"header_only": True}):
            r = imageio.decode(bytes(data), ext=".png", **kw)
            assert r.reason in reasons
            assert (r.pixels is not None) == (r.ok and not kw.get("header_only"))


# ---------------------------------------------------------------- found by fuzzing


def test_overfull_huffman_table_is_corrupt_for_both_decoders():
    data = files.jpeg_with_overfull_huffman_table(files.encode(files.rgb_image(), "JPEG"))
    for dec in ("libjpeg", "stb"):
        r = imageio.decode(data, jpeg_decoder=dec)
        assert r.reason == "corrupt" and "huffman" in r.message.lower()


def test_jpeg_relying_on_standard_huffman_tables():
    """Motion-JPEG frames carry no DHT: libjpeg uses the standard tables, stb_image 2.27 would
    read uninitialised ones, so that path refuses the file."""
    full = files.encode(files.rgb_image(), "JPEG", quality=90)  # Pillow writes the standard tables
    data = files.jpeg_without_huffman_tables(full)
    assert b"\xff\xc4" not in data[: files.jpeg_scan_start(data)]
    r = imageio.decode(data)
    assert r.ok and np.array_equal(r.pixels, imageio.decode(full).pixels)
    s = imageio.decode(data, jpeg_decoder="stb")
    assert s.reason == "unsupported_format" and "huffman" in s.message.lower()


def test_stb_path_keeps_libjpeg_decode_for_damaged_data(corpus):
    r = imageio.decode_file(corpus["damaged_scan.jpg"].path, jpeg_decoder="stb")
    assert r.ok and "decoder_warning" in r.notes
    assert np.array_equal(r.pixels, imageio.decode_file(corpus["damaged_scan.jpg"].path).pixels)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_permission_denied_is_unreadable(tmp_path):
    p = tmp_path / "secret.png"
    p.write_bytes(files.encode(files.rgb_image(), "PNG"))
    p.chmod(0)
    r = imageio.decode_file(p)
    assert r.reason == "unreadable" and "permission denied" in r.message.lower()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_on_a_picture_larger_than_a_tile(orientation):
    data = files.jpeg_with_exif(files.encode(files.rgb_image(150, 97, seed=3), "JPEG", quality=90), orientation,
                                big_endian=orientation > 4)
    r = imageio.decode(data)
    assert np.array_equal(r.pixels, files.pillow_rgb(data))


def test_short_bmp_with_an_unsupported_header_size():
    """Found by fuzzing: a 16-byte OS/2 header in a 30-byte file; fields past it must not be read."""
    data = bytes.fromhex("424d9a03000000565038 4c010000 10000000 1400 0000 0000 0000 000c 66f1".replace(" ", ""))
    r = imageio.decode(data)
    assert r.format == "bmp" and r.reason == "unsupported_format" and "16-byte header" in r.message
