"""lora_native.train.data / cache: scanning, buckets, deterministic batches, captions, loading, latent cache."""
import collections
import dataclasses
import json
import math
import os

import numpy as np
import pytest

from builders.dataset import _save, textured
from builders.files import encode, jpeg_with_exif, rgb_image
from lora_native import _native, clean
from lora_native.captions import format_metadata_csv
from lora_native.errors import DatasetError, UsageError
from lora_native.train.cache import LatentCache
from lora_native.train.data import (assign_buckets, batch_rng, draw_augmentations, epoch_batches, load_batch,
                                    load_jobs, permutation, process_caption, scan_dataset)

torch = pytest.importorskip("torch")  # the `train` extra; scanning itself does not import it


def _image(path, seed, size, fmt="PNG", caption=None, caption_ext=".txt", **kw):
    _save(str(path), textured(seed, size), fmt, **kw)
    if caption is not None:
        with open(os.path.splitext(str(path))[0] + caption_ext, "w") as f:
            f.write(caption + "\n")


def _full_analysis(path):
    return _native.analyze_files([str(path)])[0]


@pytest.fixture
def kohya(tmp_path):
    root = tmp_path / "train"
    for i in range(3):
        _image(root / "10_style" / ("s%d.png" % i), i, (640, 480), caption="painting, Red, tag%d" % i)
    _image(root / "3_other" / "o0.jpg", 10, (480, 704), "JPEG", caption="photo, red")
    _image(root / "3_other" / "o1.png", 11, (512, 512))  # no caption: the concept name
    _image(root / "loose.png", 12, (512, 512), caption="not used")
    return root


# ---------------------------------------------------------------- scanning


def test_metadata_csv_layout(tmp_path):
    root = tmp_path / "set"
    _image(root / "a.png", 1, (640, 480))
    _image(root / "sub" / "b.jpg", 2, (600, 800), "JPEG")
    _image(root / "c.png", 3, (512, 512), caption="from a caption file")
    # an EXIF-rotated JPEG: stored 640x400, shown 400x640
    (root / "d.jpg").write_bytes(jpeg_with_exif(encode(rgb_image(640, 400), "JPEG"), 6, False))
    (root / "metadata.csv").write_text(format_metadata_csv(
        [("a.png", "sks, a red picture"), ("sub/b.jpg", "a, b"), ("d.jpg", "turned"), ("gone.png", "missing")]))
    scan = scan_dataset(root, trigger_word="sks")
    assert scan.layout == "metadata" and scan.root == str(root)
    by_rel = {s.rel: s for s in scan.samples}
    assert sorted(by_rel) == ["a.png", "c.png", "d.jpg", os.path.join("sub", "b.jpg")]
    assert by_rel["a.png"].caption == "sks, a red picture"                # trigger already there
    assert by_rel[os.path.join("sub", "b.jpg")].caption == "sks, a, b"
    assert by_rel["c.png"].caption == "sks, from a caption file"          # the caption file when the CSV has none
    assert all(s.repeats == 1 and s.concept == "" and s.folder == "set" for s in scan.samples)
    assert any("gone.png" in w for w in scan.warnings)
    for s in scan.samples:
        full = _full_analysis(s.path)
        assert os.path.isabs(s.path) and s.path == str(root / s.rel)
        assert (s.width, s.height) == (full["width"], full["height"])  # after EXIF orientation
        assert s.file_hash == full["file_hash"] and s.file_size == os.path.getsize(s.path)
    assert (by_rel["d.jpg"].width, by_rel["d.jpg"].height) == (400, 640)


def test_scan_of_a_cleaned_folder(tmp_path):
    src = tmp_path / "src"
    _image(src / "a.png", 1, (800, 640), caption="one")
    _image(src / "b.png", 2, (640, 800), caption="two")
    report = clean(src, tmp_path / "out", resolution=512, thumbnails=False)
    assert len([it for it in report.items if it.status == "kept"]) == 2
    scan = scan_dataset(tmp_path / "out")
    assert scan.layout == "metadata"
    assert sorted((s.rel, s.caption, s.width, s.height) for s in scan.samples) == [
        ("a.png", "one", 512, 512), ("b.png", "two", 512, 512)]


def test_kohya_layout(kohya):
    scan = scan_dataset(kohya)
    assert scan.layout == "kohya"
    by_rel = {s.rel: s for s in scan.samples}
    assert sorted(by_rel) == sorted(os.path.join(*p) for p in [("10_style", "s0.png"), ("10_style", "s1.png"),
                                                              ("10_style", "s2.png"), ("3_other", "o0.jpg"),
                                                              ("3_other", "o1.png")])
    s0, o0, o1 = by_rel[os.path.join("10_style", "s0.png")], by_rel[os.path.join("3_other", "o0.jpg")], \
        by_rel[os.path.join("3_other", "o1.png")]
    assert (s0.repeats, s0.concept, s0.folder, s0.caption) == (10, "style", "10_style", "painting, Red, tag0")
    assert (o0.repeats, o0.concept, o0.caption) == (3, "other", "photo, red")
    assert o1.caption == "other"  # sd-scripts: no caption file -> the folder's class tokens
    assert scan.num_train_images == 3 * 10 + 2 * 3
    assert any("loose.png" in w and "not used" in w for w in scan.warnings)
    assert any("concept name" in w and "o1.png" in w for w in scan.warnings)


def test_tag_frequency_and_dataset_dirs_json_shape(kohya):
    scan = scan_dataset(kohya, trigger_word="sks")
    freq = json.loads(json.dumps(scan.tag_frequency))
    assert freq == {"10_style": {"sks": 3, "painting": 3, "red": 3, "tag0": 1, "tag1": 1, "tag2": 1},
                    "3_other": {"sks": 2, "photo": 1, "red": 1, "other": 1}}
    assert json.loads(json.dumps(scan.dataset_dirs)) == {"10_style": {"n_repeats": 10, "img_count": 3},
                                                         "3_other": {"n_repeats": 3, "img_count": 2}}


def test_wrong_caption_extension_is_a_loud_warning(tmp_path):
    for i in range(3):
        _image(tmp_path / "5_cat" / ("c%d.png" % i), i, (512, 512), caption="a cat %d" % i, caption_ext=".caption")
    scan = scan_dataset(tmp_path)
    warning = [w for w in scan.warnings if ".caption" in w]
    assert len(warning) == 1 and "3 image(s) have no .txt caption" in warning[0]
    assert "set the caption extension to .caption" in warning[0]
    assert {s.caption for s in scan.samples} == {"cat"}
    scan = scan_dataset(tmp_path, caption_extension=".caption")
    assert {s.caption for s in scan.samples} == {"a cat 0", "a cat 1", "a cat 2"}
    assert not [w for w in scan.warnings if ".caption" in w]
    with pytest.raises(UsageError):
        scan_dataset(tmp_path, caption_extension="txt")


def test_broken_images_are_warnings(tmp_path):
    _image(tmp_path / "good.png", 1, (512, 512), caption="fine")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "page.jpg").write_text("<html>403</html>")
    data = encode(rgb_image(256, 256), "PNG")
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "scan.tif").write_bytes(b"II*\x00" + b"\x00" * 64)
    scan = scan_dataset(tmp_path)
    assert [s.rel for s in scan.samples] == ["good.png"]
    for name, reason in [("empty.png", "empty_file"), ("page.jpg", "not_an_image"), ("cut.png", "truncated"),
                         ("scan.tif", "unsupported_format")]:
        assert any(str(tmp_path / name) in w and reason in w for w in scan.warnings), name


def test_empty_dataset_is_an_error(tmp_path):
    with pytest.raises(DatasetError, match="not a folder") as e:
        scan_dataset(tmp_path / "missing")
    assert e.value.path == str(tmp_path / "missing")
    (tmp_path / "notes.md").write_text("nothing here")
    with pytest.raises(DatasetError, match=r"no usable training images: looked for png/jpg/.* in .* subfolders"):
        scan_dataset(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"junk")
    with pytest.raises(DatasetError, match=r"1 file\(s\) were found but cannot be used, e.g. .*broken.png"):
        scan_dataset(tmp_path)
    os.makedirs(tmp_path / "2_empty")
    _image(tmp_path / "2_empty" / "x.png", 1, (64, 64))
    (tmp_path / "2_empty" / "x.png").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"in <repeats>_<concept> folders of"):
        scan_dataset(tmp_path)
    with pytest.raises(DatasetError, match="metadata_path"):
        scan_dataset(tmp_path, metadata_path=tmp_path / "nope.csv")


# ---------------------------------------------------------------- buckets


def test_buckets_are_the_native_ones(kohya):
    samples = scan_dataset(kohya).samples
    opts = dict(min_bucket_reso=256, max_bucket_reso=1024, bucket_reso_steps=64)
    buckets = assign_buckets(samples, (512, 512), enable_bucket=True, **opts)
    resos = _native.bucket_resolutions((512, 512), min_size=256, max_size=1024, step=64)
    for s, (size, plan) in zip(samples, buckets):
        bucket, resized = _native.bucket_select((s.width, s.height), resos, max_area=512 * 512, step=64)
        assert size == tuple(bucket) and plan == _native.plan_bucket((s.width, s.height), bucket, resized)
    assert {b[0] for b in buckets} == {(576, 448), (384, 640), (512, 512)}
    # without buckets: one size, cover + center crop
    fixed = assign_buckets(samples, 512)
    for s, (size, plan) in zip(samples, fixed):
        assert size == (512, 512) and plan == _native.plan_crop((s.width, s.height), (512, 512))
    # no upscale: an image smaller than one step cannot be placed
    small = dataclasses.replace(samples[0], width=40, height=40)
    warnings = []
    out = assign_buckets([small, samples[0]], 512, enable_bucket=True, bucket_no_upscale=True, warnings=warnings)
    assert out[0] is None and out[1] is not None and "smaller than one bucket step" in warnings[0]
    # the crops have the plan's size
    pixels, kept, _ = load_batch(samples, [0, 1], buckets)
    assert kept == [0, 1] and tuple(pixels.shape) == (2, 3, 448, 576)
    with pytest.raises(UsageError, match="min_bucket_reso"):
        assign_buckets(samples, 512, enable_bucket=True, min_bucket_reso=640)
    with pytest.raises(UsageError, match="max_bucket_reso"):
        assign_buckets(samples, 768, enable_bucket=True, max_bucket_reso=512)
    with pytest.raises(UsageError, match="multiple of 8"):
        assign_buckets(samples, 512, enable_bucket=True, bucket_reso_steps=12)
    with pytest.raises(UsageError, match="multiple of 8"):
        assign_buckets(samples, (500, 512))


# ---------------------------------------------------------------- batches


def test_epoch_batches_deterministic_and_complete(kohya):
    samples = scan_dataset(kohya).samples
    buckets = assign_buckets(samples, 512, enable_bucket=True)
    batches = epoch_batches(samples, buckets, 4, seed=7, epoch=0)
    counts = collections.Counter(i for b in batches for i in b)
    assert counts == {i: s.repeats for i, s in enumerate(samples)}
    assert all(len({buckets[i][0] for i in b}) == 1 for b in batches)
    per_bucket = collections.Counter()
    for s, b in zip(samples, buckets):
        per_bucket[b[0]] += s.repeats
    # the last incomplete batch of each bucket is kept
    assert len(batches) == sum(math.ceil(n / 4) for n in per_bucket.values())
    assert sorted(len(b) for b in batches if len(b) < 4) == sorted(n % 4 for n in per_bucket.values() if n % 4)
    assert epoch_batches(samples, buckets, 4, seed=7, epoch=0) == batches          # resume recomputes it
    assert epoch_batches(samples, buckets, 4, seed=7, epoch=1) != batches          # another epoch, another order
    assert epoch_batches(samples, buckets, 4, seed=8, epoch=0) != batches
    # samples without a bucket are left out
    assert all(0 not in b for b in epoch_batches(samples, [None] + buckets[1:], 4, 7, 0))
    with pytest.raises(UsageError):
        epoch_batches(samples, buckets, 0, 7, 0)
    with pytest.raises(UsageError):
        epoch_batches(samples, buckets, 4, -1, 0)
    with pytest.raises(UsageError):
        epoch_batches(samples, buckets[:-1], 4, 7, 0)


def test_permutation_and_batch_rng_replay():
    a, b = batch_rng(3, 1, 5), batch_rng(3, 1, 5)
    perm = permutation(a, 50)
    assert perm == permutation(b, 50) and sorted(perm) == list(range(50)) and perm != list(range(50))
    assert a.random() == b.random()
    assert batch_rng(3, 1, 6).random() != batch_rng(3, 1, 5).random()
    assert permutation(batch_rng(0, 0, 0), 1) == [0] and permutation(batch_rng(0, 0, 0), 0) == []


# ---------------------------------------------------------------- captions


def test_process_caption_semantics():
    cap = "sks, a, b, c, d, e, f"
    assert process_caption(cap) == cap  # no shuffle: as it is
    assert process_caption("a, b", "sks") == "sks, a, b"
    shuffled = process_caption(cap, shuffle_caption=True, keep_tokens=2, rng=batch_rng(1, 0, 0))
    assert shuffled == process_caption(cap, shuffle_caption=True, keep_tokens=2, rng=batch_rng(1, 0, 0))
    tags = shuffled.split(", ")
    assert tags[:2] == ["sks", "a"] and sorted(tags) == sorted(cap.split(", "))
    seen = {process_caption(cap, shuffle_caption=True, keep_tokens=2, rng=batch_rng(1, 0, k)) for k in range(20)}
    assert len(seen) > 5
    # the trigger is prepended and always stays first, counted among the kept tags
    for k in range(10):
        out = process_caption("x, y, z", "sks, woman", True, 0, rng=batch_rng(2, 0, k)).split(", ")
        assert out[:2] == ["sks", "woman"] and sorted(out[2:]) == ["x", "y", "z"]
        out = process_caption("sks, x, y, z", "sks", True, 2, rng=batch_rng(2, 0, k)).split(", ")
        assert out[:2] == ["sks", "x"]
    # dropout: the whole caption, trigger included; the draw comes from rng
    drops = [process_caption(cap, "sks", True, 1, 0.5, batch_rng(4, 0, k)) for k in range(200)]
    assert 60 < drops.count("") < 140
    assert drops == [process_caption(cap, "sks", True, 1, 0.5, batch_rng(4, 0, k)) for k in range(200)]
    assert process_caption(cap, "sks", False, 0, 1.0, batch_rng(0, 0, 0)) == ""
    with pytest.raises(UsageError):
        process_caption(cap, shuffle_caption=True)
    with pytest.raises(UsageError):
        process_caption(cap, caption_dropout_rate=1.5, rng=batch_rng(0, 0, 0))


# ---------------------------------------------------------------- loading


def test_load_images_equals_decode_and_apply_plan(tmp_path):
    paths, jobs = [], []
    for i, (size, fmt) in enumerate([((640, 480), "PNG"), ((481, 777), "JPEG"), ((512, 512), "WEBP")]):
        p = tmp_path / ("img%d.%s" % (i, fmt.lower()))
        _image(p, 20 + i, size, fmt)
        plan = _native.plan_crop(size, (320, 256)) if i != 2 else _native.plan_pad(size, (320, 256))
        jobs.append((str(p), size, plan, _full_analysis(p)["file_hash"]))
        paths.append(p)
    jobs.append((str(tmp_path / "missing.png"), (10, 10), _native.plan_crop((10, 10), (320, 256)), None))
    for threads in (1, 2):
        pixels, errors = _native.load_images(jobs, threads=threads)
        assert pixels.shape == (4, 256, 320, 3) and pixels.dtype == np.uint8
        assert errors[:3] == [None] * 3 and "missing.png" in errors[3]
        for k, p in enumerate(paths):
            decoded, _ = _native.decode_file(str(p))
            assert np.array_equal(pixels[k], _native.apply_plan(decoded, jobs[k][2]))
        assert not pixels[3].any()  # a failed slot is zero-filled
    with pytest.raises(ValueError, match="one output size"):
        _native.load_images([jobs[0], (jobs[1][0], jobs[1][1], _native.plan_crop(jobs[1][1], (64, 64)), None)])
    with pytest.raises(TypeError):
        _native.load_images([("a.png", (1, 1))])
    assert _native.load_images([])[0].shape == (0, 0, 0, 3)


def test_changed_file_is_refused_and_dropped(kohya):
    samples = scan_dataset(kohya).samples
    buckets = assign_buckets(samples, 512)
    s0 = samples[0]
    # same size, other bytes
    _image(s0.path, 99, (s0.width, s0.height))
    # another size
    _image(samples[1].path, 98, (s0.width + 64, s0.height))
    pixels, kept, warnings = load_batch(samples, [0, 1, 2], buckets)
    assert kept == [2] and pixels.shape[0] == 1
    assert len(warnings) == 2 and all("changed since it was scanned" in w for w in warnings)
    assert s0.path in warnings[0] and samples[1].path in warnings[1]
    # every image failed: an empty batch the caller skips
    pixels, kept, warnings = load_batch(samples, [0, 1], buckets)
    assert kept == [] and tuple(pixels.shape) == (0, 3, 512, 512) and len(warnings) == 2


def test_pixels_range_flip_and_colour(kohya):
    samples = scan_dataset(kohya).samples
    buckets = assign_buckets(samples, 512, enable_bucket=True)
    idx = [0, 1, 2]
    plain, _, _ = load_batch(samples, idx, buckets)
    assert plain.dtype == torch.float32 and plain.min() >= -1 and plain.max() <= 1
    array, _ = _native.load_images(load_jobs(samples, idx, buckets))
    expect = torch.from_numpy(array).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert torch.allclose(plain, expect, atol=1e-6)
    seed = next(k for k in range(100) if {a.flip for a in draw_augmentations(batch_rng(0, 0, k), 3, True)} ==
                {True, False})
    flips = [a.flip for a in draw_augmentations(batch_rng(0, 0, seed), 3, True)]
    flipped, _, _ = load_batch(samples, idx, buckets, flip_aug=True, rng=batch_rng(0, 0, seed))
    for k, f in enumerate(flips):
        assert torch.equal(flipped[k], plain[k].flip(2) if f else plain[k])
    coloured, _, _ = load_batch(samples, idx, buckets, color_aug=True, rng=batch_rng(0, 0, 1))
    again, _, _ = load_batch(samples, idx, buckets, color_aug=True, rng=batch_rng(0, 0, 1))
    assert torch.equal(coloured, again) and not torch.equal(coloured, plain)
    assert coloured.min() >= -1 and coloured.max() <= 1
    assert (coloured - plain).abs().mean() < 0.2  # small ranges
    with pytest.raises(UsageError):
        load_batch(samples, idx, buckets, flip_aug=True)
    with pytest.raises(UsageError, match="one bucket size"):
        load_batch(samples, [0, 3], buckets)


# ---------------------------------------------------------------- latent cache


def _encode(pixels):
    """A stand-in VAE: 8x8 average pooling (so flips and crops show in the latents)."""
    return torch.nn.functional.avg_pool2d(pixels, 8)


def test_latent_cache_round_trip_persistence_and_corruption(kohya, tmp_path):
    samples = scan_dataset(kohya).samples
    buckets = assign_buckets(samples, 512, enable_bucket=True)
    calls = []

    def encode_fn(x):
        calls.append(len(x))
        return _encode(x)

    folder = tmp_path / "latents"
    cache = LatentCache(folder, namespace="vae-a")
    done = []
    report = cache.prepare(samples, buckets, encode_fn, batch_size=3, flip_aug=True,
                           progress=lambda d, t: done.append((d, t)))
    n = 2 * len(samples)
    assert (report.computed, report.reused, report.failed) == (n, 0, ())
    assert max(calls) <= 3 and sum(calls) == n and done[-1] == (n, n)
    pixels, _, _ = load_batch(samples, [0], buckets)
    got = cache.get(samples[0].file_hash, buckets[0], False)
    assert torch.allclose(got, _encode(pixels)[0])
    assert torch.allclose(cache.get(samples[0].file_hash, buckets[0], True), _encode(pixels.flip(3))[0])
    assert len(os.listdir(folder)) == n
    # a new instance finds them; another VAE does not
    calls.clear()
    again = LatentCache(folder, namespace="vae-a").prepare(samples, buckets, encode_fn, 3, flip_aug=True)
    assert (again.computed, again.reused, calls) == (0, n, [])
    assert LatentCache(folder, namespace="vae-b").get(samples[0].file_hash, buckets[0], False) is None
    # a truncated file is a miss and is recomputed
    victim = cache._path(cache.key(samples[1].file_hash, buckets[1], True))
    with open(victim, "r+b") as f:
        f.truncate(os.path.getsize(victim) // 2)
    assert cache.get(samples[1].file_hash, buckets[1], True) is None
    report = cache.prepare(samples, buckets, encode_fn, 3, flip_aug=True)
    assert (report.computed, report.reused) == (1, n - 1)
    assert cache.get(samples[1].file_hash, buckets[1], True) is not None
    with open(victim, "wb") as f:
        f.write(b"\xff" * 100)
    assert cache.get(samples[1].file_hash, buckets[1], True) is None
    assert not [p for p in os.listdir(folder) if p.startswith(".")]  # no temp files left behind


def test_latent_cache_in_memory_and_failed_images(kohya):
    samples = scan_dataset(kohya).samples
    buckets = assign_buckets(samples, 512)
    os.unlink(samples[2].path)
    cache = LatentCache()
    report = cache.prepare(samples, buckets, _encode, batch_size=2, flip_aug=True)
    assert report.failed == (2,) and len(report.warnings) == 1 and samples[2].path in report.warnings[0]
    assert report.computed == 2 * (len(samples) - 1)
    assert cache.get(samples[2].file_hash, buckets[2], False) is None
    latent = cache.get(samples[0].file_hash, buckets[0], False)
    assert tuple(latent.shape) == (3, 64, 64)
    with pytest.raises(UsageError, match="returned"):
        LatentCache().prepare(samples[:2], buckets[:2], lambda x: x[:1], batch_size=2)
