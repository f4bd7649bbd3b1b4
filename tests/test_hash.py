"""lora_native.hashing against imagehash (identical hex), the exact DCT, batch vs single, XXH64."""
import struct

import imagehash
import numpy as np
import pytest
import scipy.fftpack
from PIL import Image

import lora_native
from lora_native import _native, hashing
from builders.images import KINDS, generate_images, make_image


def reference_hex(a):
    im = Image.fromarray(a)
    return str(imagehash.average_hash(im)), str(imagehash.dhash(im)), str(imagehash.phash(im))


def our_hex(a):
    return tuple(hashing.hash_hex(v) for v in hashing.image_hashes(a))


@pytest.fixture(scope="module")
def generated():
    return generate_images(240, seed=2024)


def test_hashes_equal_imagehash_on_generated_images(generated):
    assert len(generated) >= 200
    mismatches = [(name, our_hex(a), reference_hex(a)) for name, a in generated if our_hex(a) != reference_hex(a)]
    assert not mismatches, f"{len(mismatches)} of {len(generated)} differ, e.g. {mismatches[:3]}"


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (8, 8), (9, 8), (32, 32), (31, 33), (33, 300), (300, 33),
                                  (64, 1000), (1000, 64), (4, 400)], ids=lambda s: "%dx%d" % s)
def test_hashes_equal_imagehash_per_kind_and_size(kind, size):
    for mode in ("RGB", "L"):
        a = make_image(kind, *size, mode=mode, seed=size[0] * 31 + size[1])
        assert our_hex(a) == reference_hex(a), (kind, size, mode)


@pytest.mark.parametrize("value", [0, 1, 63, 64, 127, 128, 129, 200, 254, 255])
def test_flat_images_equal_imagehash(value):
    # Every DCT coefficient but the DC one is zero in exact arithmetic: the pHash bits are
    # decided by rounding noise alone.
    for w, h in [(32, 32), (100, 75), (640, 480), (33, 31)]:
        for a in (np.full((h, w), value, np.uint8), np.full((h, w, 3), value, np.uint8)):
            assert our_hex(a) == reference_hex(a), (value, w, h)


def test_gray_rgb_hashes_equal_l_hashes():
    for name, a in generate_images(30, seed=3, modes=("L",)):
        rgb = np.repeat(a[..., None], 3, axis=2)
        assert hashing.image_hashes(rgb) == hashing.image_hashes(a), name


def test_rgba_alpha_is_ignored_like_pillow_convert_l():
    a = make_image("photo", 120, 80, mode="RGBA", seed=6)
    assert hashing.image_hashes(a) == hashing.image_hashes(np.ascontiguousarray(a[..., :3]))
    assert our_hex(a) == reference_hex(a)


def test_hash_hex_formats_like_imagehash():
    a = make_image("photo", 200, 150, seed=1)
    assert hashing.hash_hex(hashing.image_hashes(a)[2]) == str(imagehash.phash(Image.fromarray(a)))
    assert hashing.hash_hex(1) == "0000000000000001"
    assert hashing.hash_hex(np.uint64(2**64 - 1)) == "f" * 16
    for bad in (-1, 2**64):
        with pytest.raises(ValueError):
            hashing.hash_hex(bad)


# ---- the DCT: equal to scipy.fftpack.dct(dct(x, axis=0), axis=1) as float64 bits ----

def dct_inputs():
    rng = np.random.default_rng(11)
    yield "zeros", np.zeros((32, 32))
    for v in (1.0, 7.0, 128.0, 255.0):
        yield f"const{v}", np.full((32, 32), v)
    r = np.arange(32.0)
    yield "row-gradient", np.tile(r * 8, (32, 1))
    yield "col-gradient", np.tile(r[:, None] * 8, (1, 32))
    yield "diag-gradient", r[:, None] + r[None, :]
    c = (r - 15.5) ** 2
    yield "symmetric", c[:, None] + c[None, :]
    yield "symmetric-lr", np.tile(np.minimum(r, 31 - r) * 16, (32, 1))
    yield "checker1", ((r[:, None] + r[None, :]) % 2) * 255
    yield "checker4", (((r[:, None] // 4) + (r[None, :] // 4)) % 2) * 255
    yield "stripes", np.tile((r % 2) * 255, (32, 1))
    for y, x in [(0, 0), (31, 31), (5, 17), (16, 16)]:
        imp = np.zeros((32, 32))
        imp[y, x] = 255
        yield f"impulse{y},{x}", imp
    for i in range(150):
        block = rng.integers(0, 256, (32, 32)).astype(np.float64)
        if i % 3 == 1:
            block = (block + block[:, ::-1]) // 2  # mirror-symmetric rows
        elif i % 3 == 2:
            block = (block + block[::-1, :] + block[:, ::-1] + block[::-1, ::-1]) // 4
        yield f"random{i}", block
    for name, a in generate_images(40, seed=5, modes=("L",)):
        px = np.asarray(Image.fromarray(a).resize((32, 32), Image.Resampling.LANCZOS)).astype(np.float64)
        yield name, px


def test_dct_bits_equal_scipy():
    count = 0
    for name, x in dct_inputs():
        want = scipy.fftpack.dct(scipy.fftpack.dct(x, axis=0), axis=1)
        got = _native.dct2_32x32(np.ascontiguousarray(x))
        assert np.array_equal(got, want), name
        assert np.array_equal(got.view(np.uint64), want.view(np.uint64)), f"{name}: signed zeros differ"
        count += 1
    assert count > 200


def test_dct_of_uint8_pixels_like_imagehash():
    # imagehash passes the uint8 array itself; scipy widens it to float64 first.
    px = make_image("photo", 32, 32, mode="L", seed=2)
    want = scipy.fftpack.dct(scipy.fftpack.dct(px, axis=0), axis=1)
    assert np.array_equal(_native.dct2_32x32(px.astype(np.float64)), want)


def test_dct_rejects_bad_input():
    with pytest.raises(TypeError, match="float64"):
        _native.dct2_32x32(np.zeros((32, 32), np.float32))
    with pytest.raises(ValueError, match="32, 32"):
        _native.dct2_32x32(np.zeros((32, 31)))


# ---- batch ----

def test_batch_equals_single():
    arrays = [a for _, a in generate_images(45, seed=9, large_every=15)]
    arrays += [make_image("noise", 40, 300, seed=1), make_image("noise", 1, 1, mode="L", seed=2)]
    single = np.array([hashing.image_hashes(a) for a in arrays], dtype=np.uint64)
    for threads in (None, 0, 1, 2, 3):
        got = hashing.hashes_batch(arrays, threads=threads)
        assert got.dtype == np.uint64 and got.shape == (len(arrays), 3)
        assert np.array_equal(got, single), threads


def test_batch_of_same_sized_images_reuses_tables_correctly():
    # The per-worker table cache must not mix up sizes that alternate or share one axis.
    sizes = [(640, 480), (480, 640), (640, 481), (641, 480), (640, 480), (100, 100), (640, 480)] * 2
    arrays = [make_image("photo", w, h, seed=i) for i, (w, h) in enumerate(sizes)]
    want = np.array([hashing.image_hashes(a) for a in arrays], dtype=np.uint64)
    for threads in (1, 2):
        assert np.array_equal(hashing.hashes_batch(arrays, threads=threads), want)
    assert [hashing.hash_hex(v) for v in want[0]] == list(reference_hex(arrays[0]))


def test_batch_accepts_any_iterable_and_empty():
    a = make_image("text", 50, 40, seed=3)
    assert np.array_equal(hashing.hashes_batch(iter([a, a])), hashing.hashes_batch([a, a]))
    empty = hashing.hashes_batch([])
    assert empty.shape == (0, 3) and empty.dtype == np.uint64


def test_batch_errors_name_the_bad_item():
    good = make_image("noise", 10, 10, seed=1)
    with pytest.raises(TypeError, match=r"arrays\[1\] must have dtype uint8"):
        hashing.hashes_batch([good, good.astype(np.float32)])
    with pytest.raises(ValueError, match=r"arrays\[2\]"):
        hashing.hashes_batch([good, good, np.zeros((5, 5, 2), np.uint8)])
    with pytest.raises(TypeError, match="sequence"):
        hashing.hashes_batch(5)
    with pytest.raises(ValueError, match="threads"):
        hashing.hashes_batch([good], threads=-1)


def test_single_rejects_bad_input():
    with pytest.raises(TypeError, match="dtype uint8"):
        hashing.image_hashes(np.zeros((8, 8), np.int64))
    with pytest.raises(TypeError, match="numpy.ndarray"):
        hashing.image_hashes(b"not an image")
    with pytest.raises(ValueError, match="channels"):
        hashing.image_hashes(np.zeros((8, 8, 2), np.uint8))


@pytest.mark.skipif(lora_native.build_info()["simd"] == "scalar", reason="no AVX2 on this machine")
def test_scalar_and_vector_hashes_agree(monkeypatch):
    arrays = [a for _, a in generate_images(40, seed=13, large_every=10)]
    vector = hashing.hashes_batch(arrays, threads=2)
    monkeypatch.setenv("LORA_NATIVE_SIMD", "scalar")
    assert np.array_equal(hashing.hashes_batch(arrays, threads=2), vector)


def test_strided_input_hashes_equal_contiguous():
    a = make_image("photo", 300, 200, seed=4)
    for view in (a[::2, ::2], a[:, ::-1], a[:, :, ::-1], np.asfortranarray(a)):
        assert hashing.image_hashes(view) == hashing.image_hashes(np.ascontiguousarray(view))


# ---- XXH64, against an independent pure-Python implementation of the published algorithm ----

M64 = (1 << 64) - 1
P1, P2, P3, P4, P5 = (0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                      0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5)


def _rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & M64


def _round(acc, lane):
    return (_rotl((acc + lane * P2) & M64, 31) * P1) & M64


def xxh64_reference(data: bytes, seed: int = 0) -> int:
    n, i = len(data), 0
    if n >= 32:
        v = [(seed + P1 + P2) & M64, (seed + P2) & M64, seed, (seed - P1) & M64]
        while i + 32 <= n:
            for j in range(4):
                v[j] = _round(v[j], struct.unpack_from("<Q", data, i + 8 * j)[0])
            i += 32
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & M64
        for lane in v:
            h = (((h ^ _round(0, lane)) * P1) + P4) & M64
    else:
        h = (seed + P5) & M64
    h = (h + n) & M64
    while i + 8 <= n:
        h = ((_rotl(h ^ _round(0, struct.unpack_from("<Q", data, i)[0]), 27) * P1) + P4) & M64
        i += 8
    if i + 4 <= n:
        h = ((_rotl(h ^ ((struct.unpack_from("<I", data, i)[0] * P1) & M64), 23) * P2) + P3) & M64
        i += 4
    while i < n:
        h = (_rotl(h ^ ((data[i] * P5) & M64), 11) * P1) & M64
        i += 1
    h = ((h ^ (h >> 33)) * P2) & M64
    h = ((h ^ (h >> 29)) * P3) & M64
    return h ^ (h >> 32)


def test_xxh64_known_value_of_empty_input():
    # The published XXH64 of zero bytes with seed 0.
    assert xxh64_reference(b"") == 0xEF46DB3751D8E999
    assert _native.xxh64(b"") == 0xEF46DB3751D8E999


def test_xxh64_matches_reference():
    rng = np.random.default_rng(99)
    blob = rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()
    lengths = list(range(0, 80)) + [100, 255, 256, 1000, 4099, 5000]
    for seed in (0, 1, 0x9E3779B97F4A7C15, M64):
        for n in lengths:
            assert _native.xxh64(blob[:n], seed) == xxh64_reference(blob[:n], seed), (seed, n)


def test_xxh64_buffers_and_errors():
    a = np.arange(1000, dtype=np.uint16)
    want = xxh64_reference(a.tobytes())
    assert _native.xxh64(a) == want
    assert _native.xxh64(memoryview(a.tobytes())) == want
    assert _native.xxh64(bytearray(a.tobytes()), seed=0) == want
    big = bytes(range(256)) * 1024  # over the size where the GIL is released
    assert _native.xxh64(big, 7) == xxh64_reference(big, 7)
    with pytest.raises((BufferError, ValueError)):
        _native.xxh64(a[::2])
    with pytest.raises(TypeError):
        _native.xxh64("text")
    with pytest.raises(ValueError, match="seed"):
        _native.xxh64(b"x", -1)
    with pytest.raises(TypeError, match="seed"):
        _native.xxh64(b"x", 1.5)


def test_hash_files_equal_imagehash_from_files(tmp_path, generated):
    """From files: our decode (libjpeg-turbo for JPEG) + hashes == Pillow's decode + imagehash."""
    paths, expected = [], []
    for i, (name, a) in enumerate(generated[:60]):
        if a.ndim == 3 and a.shape[2] == 4:
            a = a[..., :3]
        fmt, ext = [("PNG", ".png"), ("JPEG", ".jpg"), ("WEBP", ".webp")][i % 3]
        path = tmp_path / ("%03d%s" % (i, ext))
        kw = {"lossless": True} if fmt == "WEBP" else ({"quality": 90} if fmt == "JPEG" else {})
        Image.fromarray(a).save(path, fmt, **kw)
        with Image.open(path) as im:
            expected.append(reference_hex(np.asarray(im.convert("RGB"))))
        paths.append(str(path))
    paths.append(str(tmp_path / "missing.png"))
    hashes, reasons = hashing.hash_files(paths, threads=2, apply_orientation=False)
    assert hashes.shape == (61, 3) and hashes.dtype == np.uint64
    assert reasons[:60] == ["ok"] * 60 and reasons[60] == "unreadable"
    got = [tuple(hashing.hash_hex(v) for v in row) for row in hashes[:60].tolist()]
    assert got == expected
    assert hashes[60].tolist() == [0, 0, 0]


def test_hash_files_draft_mode_is_close_to_full_decode(tmp_path):
    """DCT-scaled JPEG decoding changes pixels a little: hashes stay within a few bits."""
    from lora_native.dedup import hamming
    paths = []
    for i in range(8):
        a = make_image("photo", 1600, 1200, mode="RGB", seed=i)
        path = tmp_path / ("%d.jpg" % i)
        Image.fromarray(a).save(path, quality=92)
        paths.append(str(path))
    full, _ = hashing.hash_files(paths)
    draft, reasons = hashing.hash_files(paths, jpeg_draft_min_side=256)
    assert reasons == ["ok"] * 8
    assert all(hamming(int(f), int(d)) <= 10 for f, d in zip(full[:, 2], draft[:, 2]))
