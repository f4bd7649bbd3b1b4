"""`clean --clip-dedup`: semantic duplicates from CLIP image embeddings, cached by content hash."""
import json
import os

import numpy as np
import pytest

import lora_native
from lora_native import cli
from lora_native.errors import UsageError
from builders.dataset import _save, textured

HUES = [(200, 120, 60), None, (40, 90, 210), (60, 200, 80), (210, 40, 160), (120, 200, 210)]


class FakeClip:
    """Embeds a picture as the mean colour of four horizontal bands (centred): blind to mirroring and
    small side crops, which pHash is not. Enough to drive the grouping, the cache and the report
    without a model."""
    model_id = "fake-clip-v1"
    prep = dict(size=(16, 16), mode="resize", filter="bilinear", layout="nchw", scale=1 / 255,
                mean=(0.5, 0.5, 0.5), std=(1.0, 1.0, 1.0))

    def __init__(self):
        self.embedded = 0

    def embed_images(self, pixels):
        self.embedded += len(pixels)
        e = pixels.reshape(len(pixels), 3, 4, 4, 16).mean(axis=(3, 4)).reshape(len(pixels), 12)
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


@pytest.fixture
def folder(tmp_path):
    src = tmp_path / "src"
    first = None
    for n, hue in enumerate(HUES):
        if hue is None:  # the first scene mirrored and re-cropped
            pixels = np.ascontiguousarray(first[:, ::-1][:, 16:-16])
        else:
            pixels = textured(100 + n * 17, (640 - 32 * n, 640), hue)
        first = pixels if n == 0 else first
        _save(str(src / ("pic_%d.png" % n)), pixels)
    return src


@pytest.fixture
def fake(monkeypatch):
    import lora_native.caption.clip_model as clip_model
    model = FakeClip()
    monkeypatch.setattr(clip_model, "load_clip", lambda path, device=None, **kw: model)
    return model


def _phash_distance(report, a, b):
    items = {it.rel: it for it in report.items}
    return bin(int(items[a].hashes["phash"], 16) ^ int(items[b].hashes["phash"], 16)).count("1")


def test_same_palette_grouped_as_semantic_duplicates(folder, fake, tmp_path):
    out = tmp_path / "out"
    cache = tmp_path / "cache"
    report = lora_native.clean(str(folder), str(out), resolution=256, min_side=256, clip_dedup=0.99,
                               clip_model="unused", embedding_cache=str(cache), threads=2)
    assert _phash_distance(report, "pic_0.png", "pic_1.png") > 6  # pixel hashes miss this pair
    items = {it.rel: it for it in report.items}
    assert items["pic_0.png"].status == "kept"  # the larger one
    dup = items["pic_1.png"]
    assert dup.status == "duplicate" and dup.duplicate_kind == "semantic"
    assert dup.duplicate_of == "pic_0.png" and dup.similarity >= 0.99
    assert all(items["pic_%d.png" % n].status == "kept" for n in range(2, len(HUES)))
    assert fake.embedded == len(HUES)

    data = json.loads((out / "report.json").read_text())
    row = next(r for r in data["items"] if r["path"] == "pic_1.png")
    assert row["duplicate_kind"] == "semantic" and row["similarity"] >= 0.99
    group = data["groups"][0]
    assert group["kept"] == "pic_0.png" and group["similarity"][0] >= 0.99
    html = (out / "report.html").read_text()
    assert "semantic duplicate" in html and "similarity %.3f" % dup.similarity in html

    # The second run embeds nothing: every picture is in the cache under the same model id.
    again = lora_native.clean(str(folder), str(tmp_path / "out2"), resolution=256, min_side=256, clip_dedup=0.99,
                              clip_model="unused", embedding_cache=str(cache), threads=2)
    assert fake.embedded == len(HUES)
    assert [it.status for it in again.items] == [it.status for it in report.items]
    # Without the cache everything is embedded again.
    lora_native.clean(str(folder), str(tmp_path / "out3"), resolution=256, min_side=256, clip_dedup=0.99,
                      clip_model="unused", embedding_cache="", threads=2)
    assert fake.embedded == 2 * len(HUES)
    # A dry run writes nothing, the cache included.
    dry_cache = tmp_path / "dry_cache"
    lora_native.clean(str(folder), str(tmp_path / "out4"), resolution=256, min_side=256, clip_dedup=0.99,
                      clip_model="unused", embedding_cache=str(dry_cache), dry_run=True)
    assert not dry_cache.exists() or not any(dry_cache.iterdir())


def test_threshold_controls_grouping(folder, fake, tmp_path):
    loose = lora_native.clean(str(folder), str(tmp_path / "a"), resolution=256, min_side=256, clip_dedup=0.2,
                              clip_model="unused", embedding_cache="", dry_run=True)
    strict = lora_native.clean(str(folder), str(tmp_path / "b"), resolution=256, min_side=256, clip_dedup=1.0,
                               clip_model="unused", embedding_cache="", dry_run=True)
    assert len(loose.duplicates) > 1
    # 1.0 keeps only pairs whose float64 dot reaches 1 exactly.
    assert len(strict.duplicates) <= 1


def test_clip_dedup_needs_a_model(folder, tmp_path, monkeypatch):
    monkeypatch.delenv("LORA_NATIVE_CLIP_MODEL", raising=False)
    with pytest.raises(UsageError, match="--clip-model"):
        lora_native.clean(str(folder), str(tmp_path / "out"), clip_dedup=0.95)
    with pytest.raises(UsageError, match="cosine"):
        lora_native.clean(str(folder), str(tmp_path / "out"), clip_dedup=1.5, clip_model="x")


def test_cli_flags(folder, fake, tmp_path, capsys):
    out = tmp_path / "out"
    status = cli.main(["clean", str(folder), "--out", str(out), "--resolution", "256", "--min-side", "256",
                       "--clip-dedup", "--clip-model", "unused", "--no-embedding-cache"])
    assert status == 0
    data = json.loads((out / "report.json").read_text())
    assert data["options"]["clip_dedup"] == 0.95
    kinds = {r["path"]: r.get("duplicate_kind") for r in data["items"]}
    assert kinds["pic_1.png"] == "semantic"


def test_real_tiny_clip_through_the_cli(folder, tmp_path):
    """A CLIP folder saved with save_pretrained, as users have it, end to end: every semantic
    duplicate reaches the threshold against its kept picture, and the cache serves the second run."""
    from builders.captioners import make_clip_folder
    model = make_clip_folder(str(tmp_path / "clip"))
    # A re-encoded copy: not the same pixels, and near duplicates are off, so only CLIP can group it.
    from PIL import Image
    Image.open(folder / "pic_3.png").convert("RGB").save(folder / "pic_3_copy.jpg", quality=98)
    args = ["clean", str(folder), "--out", str(tmp_path / "out"), "--resolution", "256", "--min-side", "256",
            "--near-dup", "-1", "--clip-dedup", "0.999", "--clip-model", model,
            "--embedding-cache", str(tmp_path / "cache")]
    assert cli.main(args) == 0
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["options"]["clip_dedup"] == 0.999
    semantic = [r for r in data["items"] if r.get("duplicate_kind") == "semantic"]
    # Same size, so --keep largest falls back to sharpness: either one may be kept.
    assert [{r["path"], r["duplicate_of"]} for r in semantic] == [{"pic_3.png", "pic_3_copy.jpg"}]
    assert all(r["similarity"] >= 0.999 - 1e-4 for r in semantic)  # within the JSON's 4 decimals
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 1  # one file for this model id
    mtime = cached[0].stat().st_mtime_ns
    args[3] = str(tmp_path / "out2")
    assert cli.main(args) == 0
    assert cached[0].stat().st_mtime_ns == mtime  # nothing new to embed, nothing rewritten
    again = json.loads((tmp_path / "out2" / "report.json").read_text())
    assert [r["status"] for r in again["items"]] == [r["status"] for r in data["items"]]
