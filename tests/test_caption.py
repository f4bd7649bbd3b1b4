"""Auto-captioning: BLIP, WD14 and CLIP interrogation from tiny local models built here, through the
API, `lora-native caption` and tools/auto_label.py; model location and its errors; writing rules
(merge, never overwrite, txt beside images); the report; the prefetch thread."""
import csv
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from builders import captioners as B
from lora_native import _native, cli
from lora_native.caption import caption, models
from lora_native.caption.batches import prepared_batches
from lora_native.errors import CaptionModelError, UsageError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RED, BLUE, GREEN, GRAY = (255, 0, 0), (0, 0, 255), (0, 200, 0), (50, 50, 50)

# The tiny tagger: logits from the mean B, G, R (0..1) of the padded picture.
WD14_TAGS = [
    ("general", 9, (0, 0, 0), 2.0),
    ("sensitive", 9, (0, 0, 0), 0.5),
    ("questionable", 9, (0, 0, 0), -1.0),
    ("explicit", 9, (0, 0, 0), -2.0),
    ("red_theme", 0, (0, 0, 40), -20.0),       # R > 0.5
    ("blue_theme", 0, (40, 0, 0), -24.0),      # B > 0.6
    ("half_green", 0, (0, 40, 0), -10.0),      # G > 0.25 (white padding raises G)
    ("^_^", 0, (0, 0, 0), 3.0),                 # kaomoji: kept with its underscore
    ("(o)_(o)", 0, (0, 0, 0), 1.5),             # long kaomoji from the list
    ("long_hair", 0, (0, 0, 0), 2.5),           # -> "long hair"
    ("watermark", 0, (0, 0, 0), 2.0),
    ("solo", 0, (0, 0, 0), B.logit(0.4)),       # 0.4: in at 0.35, out at 0.5
    ("hatsune_miku", 4, (40, 0, 0), -24.0),     # character, fires on blue
    ("kirby", 4, (0, 0, 0), B.logit(0.8)),      # 0.8: out at 0.85, in at 0.75
]


@pytest.fixture(autouse=True)
def _no_model_env(monkeypatch):
    for name in ("BLIP", "WD14", "CLIP"):
        monkeypatch.delenv("LORA_NATIVE_%s_MODEL" % name, raising=False)


# ---- models, built once

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def wd14_model(model_dir):
    B.make_wd14_model(str(model_dir / "wd14"), WD14_TAGS)
    return str(model_dir / "wd14")


@pytest.fixture(scope="module")
def blip_model(model_dir):
    return B.make_blip_folder(str(model_dir / "blip"))


@pytest.fixture(scope="module")
def clip_model(model_dir):
    return B.make_clip_folder(str(model_dir / "clip"))


def make_folder(root, broken=True):
    """A small image folder: solid squares (names say the colour), one in a subfolder, and broken files."""
    root = str(root)
    B.save_solid(os.path.join(root, "blue.png"), BLUE)
    B.save_solid(os.path.join(root, "red.png"), RED)
    B.save_solid(os.path.join(root, "gray.png"), GRAY)
    B.save_solid(os.path.join(root, "sub", "green.png"), GREEN)
    if broken:
        with open(os.path.join(root, "empty.png"), "wb"):
            pass
        with open(os.path.join(root, "notes.jpg"), "wb") as f:
            f.write(b"this is not a picture at all, just text saved as .jpg\n" * 4)
    return root


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["filename", "prompt"]
    return rows[1:]


# ---- the prefetch thread

def _fake_prepare(log, delay=0.0, fail_at=None):
    def prepare(paths, threads=None, max_pixels=None, **spec):
        log.append((threading.current_thread().name, list(paths)))
        if fail_at is not None and paths[0] == fail_at:
            raise RuntimeError("preparing failed at %s" % fail_at)
        time.sleep(delay)
        arr = np.array([[float(p)] for p in paths], dtype=np.float32)
        return arr, [None if int(p) % 5 else "bad %s" % p for p in paths]
    return prepare


def test_prefetch_returns_batches_in_order_on_a_thread():
    log = []
    paths = [str(i) for i in range(1, 12)]
    out = list(prepared_batches(paths, {}, batch_size=3, prepare=_fake_prepare(log, 0.01)))
    assert [b.start for b in out] == [0, 3, 6, 9]
    assert [p for b in out for p in b.items] == paths
    assert np.concatenate([b.pixels[:, 0] for b in out]).tolist() == [float(p) for p in paths]
    assert out[1].errors == [None, "bad 5", None] and out[1].ok == [0, 2]
    assert all(name == "lora-native-prepare" for name, _ in log)
    # without prefetch the caller prepares
    log.clear()
    again = list(prepared_batches(paths, {}, batch_size=4, depth=0, prepare=_fake_prepare(log)))
    assert [b.start for b in again] == [0, 4, 8] and {name for name, _ in log} == {threading.current_thread().name}


def test_prefetch_overlaps_preparing_with_the_model():
    log = []
    started = time.perf_counter()
    for batch in prepared_batches([str(i) for i in range(1, 9)], {}, batch_size=2,
                                  prepare=_fake_prepare(log, 0.05)):
        time.sleep(0.05)  # the "model"
    elapsed = time.perf_counter() - started
    assert elapsed < 0.05 * 8 * 0.85  # serial would take 8 x 0.05 s


def test_prefetch_raises_the_preparing_error_and_stops():
    log = []
    got = []
    with pytest.raises(RuntimeError, match="preparing failed at 7"):
        for batch in prepared_batches([str(i) for i in range(1, 12)], {}, batch_size=3,
                                      prepare=_fake_prepare(log, fail_at="7")):
            got.append(batch.start)
    assert got == [0, 3]
    assert not [t for t in threading.enumerate() if t.name == "lora-native-prepare"]


def test_prefetch_stops_when_the_consumer_leaves_early():
    log = []
    for batch in prepared_batches([str(i) for i in range(1, 40)], {}, batch_size=1, prepare=_fake_prepare(log)):
        break
    assert not [t for t in threading.enumerate() if t.name == "lora-native-prepare"]
    assert len(log) <= 4  # the thread was at most a couple of batches ahead


# ---- WD14

def test_wd14_tags_order_thresholds_underscores(tmp_path, wd14_model):
    folder = make_folder(tmp_path / "imgs", broken=False)
    report = caption(folder, captioner="wd14", model=wd14_model)
    rows = dict(read_csv(os.path.join(folder, "metadata.csv")))
    base = "^_^, long hair, watermark, (o)_(o), solo"
    # character tags first; then general by probability: red/blue theme (~1.0) above the constants
    assert rows["red.png"] == "red theme, " + base
    assert rows["blue.png"] == "hatsune miku, blue theme, " + base
    assert rows["gray.png"] == base
    assert rows[os.path.join("sub", "green.png")] == "half green, " + base
    assert len(report.captioned) == 4 and not report.skipped
    # thresholds, blacklist (with or without underscores), ratings
    report = caption(folder, captioner="wd14", model=wd14_model, overwrite=True, general_threshold=0.5,
                     character_threshold=0.75, exclude_tags="watermark, Long_Hair", include_ratings=True)
    rows = dict(read_csv(os.path.join(folder, "metadata.csv")))
    assert rows["red.png"] == "general, kirby, red theme, ^_^, (o)_(o)"
    assert rows["blue.png"] == "general, hatsune miku, kirby, blue theme, ^_^, (o)_(o)"


def test_wd14_pads_to_a_white_square_in_bgr(tmp_path, wd14_model):
    folder = tmp_path / "imgs"
    B.save_solid(str(folder / "wide_red.png"), RED, size=(40, 20))   # padded: G = B = 127.5 on average
    B.save_solid(str(folder / "square_red.png"), RED, size=(40, 40))
    caption(str(folder), captioner="wd14", model=wd14_model, format="txt")
    wide = (folder / "wide_red.txt").read_text().strip().split(", ")
    square = (folder / "square_red.txt").read_text().strip().split(", ")
    assert "red theme" in wide and "half green" in wide and "blue theme" not in wide
    assert "red theme" in square and "half green" not in square


def test_wd14_comfy_layout_and_fixed_batch(tmp_path):
    models_root = tmp_path / "wd"
    B.make_wd14_model(str(models_root), WD14_TAGS, name="wd-v1-4-moat-tagger-v2", fixed_batch=1)
    folder = make_folder(tmp_path / "imgs", broken=False)
    onnx_file = str(models_root / "wd-v1-4-moat-tagger-v2.onnx")
    report = caption(folder, captioner="wd14", model=onnx_file, batch_size=3)
    assert len(report.captioned) == 4
    # a folder holding exactly one <name>.onnx + <name>.csv pair is found too
    assert models.resolve_model(__import__("lora_native.caption.wd14", fromlist=["x"]),
                                model=str(models_root))[0] == onnx_file


def test_wd14_model_and_tag_list_must_agree(tmp_path):
    bad = tmp_path / "bad"
    B.make_wd14_model(str(bad), WD14_TAGS)
    B.write_tags_csv(str(bad / "selected_tags.csv"), [("a", 0), ("b", 0)])
    make_folder(tmp_path / "imgs", broken=False)
    with pytest.raises(CaptionModelError, match="outputs 14 scores but its tag list"):
        caption(str(tmp_path / "imgs"), captioner="wd14", model=str(bad))


# ---- BLIP

def test_blip_through_the_cli_csv_and_txt(tmp_path, blip_model, capsys):
    import torch
    from transformers import AutoTokenizer, BlipForConditionalGeneration

    from lora_native.caption import blip

    folder = make_folder(tmp_path / "imgs")
    assert cli.main(["caption", folder, "--captioner", "blip", "--model", blip_model, "--trigger", "sks",
                     "--num-beams", "2", "--max-new-tokens", "6", "--batch-size", "3"]) == 0
    printed = capsys.readouterr().out
    assert "4 captioned, 2 skipped, 0 already captioned" in printed
    rows = read_csv(os.path.join(folder, "metadata.csv"))
    assert [r[0] for r in rows] == ["blue.png", "gray.png", "red.png", "sub/green.png"]
    # the same text as transformers' generate on the same pixels
    spec = models.prep_spec(blip_model)
    assert spec["size"] == (32, 32) and spec["mode"] == "resize"
    paths = [os.path.join(folder, r[0]) for r in rows]
    pixels, errors = _native.prepare_images(paths, **spec)
    assert errors == [None] * 4
    model = BlipForConditionalGeneration.from_pretrained(blip_model).eval()
    tok = AutoTokenizer.from_pretrained(blip_model)
    with torch.inference_mode():
        ids = model.generate(pixel_values=torch.from_numpy(pixels), num_beams=2, max_new_tokens=6)
    expected = [" ".join(t.split()) for t in tok.batch_decode(ids, skip_special_tokens=True)]
    assert [r[1] for r in rows] == ["sks, " + t if t else "sks" for t in expected]
    assert set(" ".join(expected).split()) <= set(B.BLIP_WORDS)
    # the pixels are what BLIP's own processor makes of the picture
    ref, _ = B.reference_prepare(paths, **spec)
    np.testing.assert_allclose(pixels, ref, atol=1e-5)

    # txt beside each image, with a prefix (joined with a space: BLIP writes sentences)
    assert cli.main(["caption", folder, "--model", blip_model, "--format", "txt", "--prefix", "a picture:",
                     "--num-beams", "1", "--max-new-tokens", "6"]) == 0
    for rel in ("blue.png", "sub/green.png"):
        text = open(os.path.join(folder, os.path.splitext(rel)[0] + ".txt"), encoding="utf-8").read()
        assert text.startswith("a picture: ") and text.endswith("\n")
    assert blip.OPTIONS["num_beams"] == 3


def test_blip_folder_as_transformers_5_saves_a_processor(tmp_path, blip_model):
    """processor_config.json (transformers 5's whole-processor save) instead of preprocessor_config.json."""
    folder = tmp_path / "blip5"
    shutil.copytree(blip_model, folder)
    cfg = json.loads((folder / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").unlink()
    (folder / "processor_config.json").write_text(json.dumps({"image_processor": cfg,
                                                              "processor_class": "BlipProcessor"}))
    assert models.prep_spec(str(folder))["size"] == (32, 32)
    imgs = make_folder(tmp_path / "imgs", broken=False)
    assert len(caption(imgs, captioner="blip", model=str(folder), num_beams=1, max_new_tokens=4).captioned) == 4


# ---- CLIP

def test_clip_model_embeddings_and_id(tmp_path, clip_model):
    from lora_native.caption.clip_model import load_clip

    clip = load_clip(clip_model)
    assert clip.prep["mode"] == "short_crop" and clip.prep["size"] == (32, 32)
    folder = make_folder(tmp_path / "imgs", broken=False)
    paths = sorted(os.path.join(folder, n) for n in ("red.png", "blue.png", "gray.png"))
    pixels, errors = _native.prepare_images(paths, **clip.prep)
    img = clip.embed_images(pixels)
    txt = clip.embed_texts(["a red picture", "a dog", "a cat"])
    assert img.shape == (3, 16) and txt.shape == (3, 16) and img.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1, atol=1e-5)
    # the id is stable, and a changed weight file gives a new one
    assert load_clip(clip_model).model_id == clip.model_id
    copy = tmp_path / "clip2"
    shutil.copytree(clip_model, copy)
    assert load_clip(str(copy)).model_id == clip.model_id  # same files, another place
    with open(copy / "model.safetensors", "r+b") as f:
        f.seek(os.path.getsize(copy / "model.safetensors") // 2)
        f.write(b"\x01\x02\x03\x04")
    data = (copy / "model.safetensors").read_bytes()
    (copy / "model.safetensors").write_bytes(data[:-4] + bytes(4))
    assert load_clip(str(copy)).model_id != clip.model_id


def test_clip_interrogation_picks_the_closest_phrase(tmp_path, clip_model):
    import torch
    from transformers import AutoTokenizer, CLIPModel

    lists = tmp_path / "phrases"
    lists.mkdir()
    (lists / "subject.txt").write_text("# what\na cat\na dog\na house\na tree\n")
    (lists / "a_medium.txt").write_text("a photo\na painting\n\na drawing\n")
    folder = make_folder(tmp_path / "imgs", broken=False)
    assert cli.main(["caption", folder, "--captioner", "clip", "--model", clip_model, "--phrases", str(lists),
                     "--format", "txt"]) == 0
    # the expected phrases, computed with transformers directly
    model = CLIPModel.from_pretrained(clip_model).eval()
    tok = AutoTokenizer.from_pretrained(clip_model)
    spec = models.prep_spec(clip_model)
    for rel in ("red.png", "sub/green.png"):
        pixels, _ = B.reference_prepare([os.path.join(folder, rel)], **spec)
        with torch.inference_mode():
            image = model.visual_projection(model.vision_model(pixel_values=torch.from_numpy(pixels)).pooler_output)
            words = []
            for phrases in (["a cat", "a dog", "a house", "a tree"], ["a photo", "a painting", "a drawing"]):
                enc = tok(phrases, padding="max_length", max_length=77, return_tensors="pt")
                text = model.text_projection(model.text_model(**enc).pooler_output)
                scores = torch.nn.functional.cosine_similarity(image, text)
                words.append(phrases[int(scores.argmax())])
        text = open(os.path.join(folder, os.path.splitext(rel)[0] + ".txt"), encoding="utf-8").read().strip()
        assert text == ", ".join(words)  # subject first, then the other lists by name


def test_clip_interrogation_ranks_by_cosine():
    from lora_native.caption.clip import ClipInterrogator

    class Fake:
        path, prep = "fake", {}
        calls = []

        def embed_texts(self, texts):
            self.calls.append(list(texts))
            table = {"a cat": [1, 0, 0], "a dog": [0, 1, 0], "a house": [0, 0, 1],
                     "in the rain": [0.6, 0.8, 0], "at night": [0, 0.6, 0.8]}
            return np.array([table[t] for t in texts], np.float32)

        def embed_images(self, pixels):
            return np.asarray(pixels, np.float32)

        def close(self):
            pass

    import tempfile
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "weather.txt"), "w") as f:
            f.write("in the rain\nat night\n")
        with open(os.path.join(d, "subject.txt"), "w") as f:
            f.write("a cat\na dog\na house\n")
        fake = Fake()
        cap = ClipInterrogator(phrases=d, clip=fake)
        pixels = np.array([[0.1, 0.9, 0.1], [0.0, 0.2, 0.9]], np.float32)
        pixels /= np.linalg.norm(pixels, axis=1, keepdims=True)
        assert cap.caption(pixels) == ["a dog, in the rain", "a house, at night"]
        assert len(fake.calls) == 2  # the phrase embeddings were computed once, at the start
        cap.caption(pixels)
        assert len(fake.calls) == 2


def test_builtin_phrase_lists():
    from lora_native.caption.clip import BUILTIN_LISTS, phrase_lists

    lists = phrase_lists()
    assert [name for name, _ in lists] == list(BUILTIN_LISTS) and lists[0][0] == "subject"
    for name, items in lists:
        assert 20 <= len(items) <= 60, name
        assert all(p == p.strip() and "," not in p for p in items)


def test_open_clip_checkpoint_without_open_clip(tmp_path):
    from lora_native.caption.clip_model import load_clip, open_clip_available

    if open_clip_available():
        pytest.skip("open_clip is installed here")
    folder = tmp_path / "laion"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text('{"model_cfg": {}, "preprocess_cfg": {}}')
    (folder / "open_clip_pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(CaptionModelError, match="open_clip checkpoint.*open_clip package is not installed"):
        load_clip(str(folder))


# ---- where models come from

def test_missing_model_says_how_to_get_one(tmp_path, capsys):
    folder = make_folder(tmp_path / "imgs", broken=False)
    assert cli.main(["caption", folder]) == 2
    err = capsys.readouterr().err
    for words in ("no BLIP model given", "never downloads", "--model PATH", "LORA_NATIVE_BLIP_MODEL",
                  "caption_model", "config.json", "preprocessor_config.json",
                  "huggingface-cli download Salesforce/blip-image-captioning-base"):
        assert words in err, words
    with pytest.raises(CaptionModelError, match="SmilingWolf/wd-v1-4-moat-tagger-v2") as e:
        caption(folder, captioner="wd14")
    assert "model.onnx + selected_tags.csv" in str(e.value)
    with pytest.raises(CaptionModelError, match="openai/clip-vit-large-patch14"):
        caption(folder, captioner="clip")
    assert not os.path.exists(os.path.join(folder, "metadata.csv"))


def test_incomplete_model_names_the_missing_files(tmp_path, blip_model, wd14_model):
    partial = tmp_path / "blip"
    partial.mkdir()
    shutil.copy(os.path.join(blip_model, "config.json"), partial)
    folder = make_folder(tmp_path / "imgs", broken=False)
    with pytest.raises(CaptionModelError) as e:
        caption(folder, model=str(partial))
    msg = str(e.value)
    assert "missing the weights (model.safetensors or pytorch_model.bin), preprocessor_config.json, the tokenizer" \
           in msg and "Salesforce/blip-image-captioning-base" in msg
    half = tmp_path / "wd"
    half.mkdir()
    shutil.copy(os.path.join(wd14_model, "model.onnx"), half)
    with pytest.raises(CaptionModelError, match="missing selected_tags.csv"):
        caption(folder, captioner="wd14", model=str(half))
    with pytest.raises(CaptionModelError, match="does not exist"):
        caption(folder, captioner="wd14", model=str(tmp_path / "nowhere"))


def test_model_from_env_config_and_host_folders(tmp_path, wd14_model, monkeypatch):
    from lora_native.caption import wd14

    # host folders: <models>/captioners/wd14/<name>/
    host = tmp_path / "host_models"
    shutil.copytree(wd14_model, host / "captioners" / "wd14" / "b-tagger")
    (host / "captioners" / "wd14" / "a-broken").mkdir()
    path, source = models.resolve_model(wd14, search_dirs=[str(tmp_path / "none"), str(host)])
    assert path == str(host / "captioners" / "wd14" / "b-tagger" / "model.onnx") and source == "search"
    # a training YAML's keys, the path taken from the YAML's folder
    cfg = tmp_path / "cfg" / "train.yaml"
    cfg.parent.mkdir()
    shutil.copytree(wd14_model, tmp_path / "cfg" / "tagger")
    cfg.write_text("base_model: x.safetensors\ntrain_data_dir: ../imgs\ncaptioner: wd14\ncaption_model: tagger\n")
    assert models.resolve_model(wd14, config=str(cfg), search_dirs=[str(host)])[0] == \
        str(tmp_path / "cfg" / "tagger" / "model.onnx")
    # the environment beats the config; --model beats both
    monkeypatch.setenv("LORA_NATIVE_WD14_MODEL", str(host / "captioners" / "wd14" / "b-tagger"))
    assert "b-tagger" in models.resolve_model(wd14, config=str(cfg))[0]
    assert models.resolve_model(wd14, model=wd14_model, config=str(cfg))[0] == os.path.join(wd14_model, "model.onnx")
    monkeypatch.delenv("LORA_NATIVE_WD14_MODEL")
    # `lora-native caption --config`: the captioner, its model and train_data_dir from the YAML
    make_folder(tmp_path / "imgs", broken=False)
    assert cli.main(["caption", "--config", str(cfg)]) == 0
    assert len(read_csv(str(tmp_path / "imgs" / "metadata.csv"))) == 4
    # the config's caption_model belongs to its captioner: asking for blip does not take it
    with pytest.raises(CaptionModelError, match="no BLIP model given"):
        caption(str(tmp_path / "imgs"), captioner="blip", config=str(cfg), overwrite=True)


def test_options_of_another_captioner_are_refused(tmp_path, wd14_model, capsys):
    folder = make_folder(tmp_path / "imgs", broken=False)
    assert cli.main(["caption", folder, "--captioner", "wd14", "--model", wd14_model, "--num-beams", "2"]) == 2
    assert "--num-beams is an option for the blip captioner, not wd14" in capsys.readouterr().err
    with pytest.raises(UsageError, match="takes no option"):
        caption(folder, captioner="wd14", model=wd14_model, num_beams=2)


# ---- writing rules

def test_csv_merge_keeps_rows_and_never_overwrites(tmp_path, wd14_model):
    folder = make_folder(tmp_path / "imgs", broken=False)
    meta = os.path.join(folder, "metadata.csv")
    with open(meta, "w", encoding="utf-8", newline="") as f:
        f.write("file_name,text\nred.png,my own red caption\ngone.png,a file that was deleted\nblue.png,\n")
    report = caption(folder, captioner="wd14", model=wd14_model, trigger="sks")
    rows = read_csv(meta)
    assert rows[0] == ["red.png", "my own red caption"]                 # kept, in place
    assert rows[1] == ["gone.png", "a file that was deleted"]           # a row of the user's, kept
    assert rows[2][0] == "blue.png" and rows[2][1].startswith("sks, hatsune miku")  # empty row filled in place
    assert [r[0] for r in rows[3:]] == ["gray.png", "sub/green.png"]    # new ones appended, sorted
    assert report.existing == ["red.png"] and len(report.captioned) == 3
    # a second run has nothing to do and leaves the file as it is
    before = open(meta, "rb").read()
    report = caption(folder, captioner="wd14", model=wd14_model)
    assert not report.captioned and len(report.existing) == 4 and open(meta, "rb").read() == before
    # --overwrite replaces captions, rows stay where they were
    assert cli.main(["caption", folder, "--captioner", "wd14", "--model", wd14_model, "--overwrite"]) == 0
    rows = read_csv(meta)
    assert [r[0] for r in rows] == ["red.png", "gone.png", "blue.png", "gray.png", "sub/green.png"]
    assert rows[0][1].startswith("red theme") and not rows[2][1].startswith("sks")


def test_txt_beside_images_kept_unless_overwrite(tmp_path, wd14_model):
    folder = make_folder(tmp_path / "imgs", broken=False)
    with open(os.path.join(folder, "red.txt"), "w") as f:
        f.write("hand written\n")
    with open(os.path.join(folder, "gray.txt"), "w") as f:
        f.write("  \n")  # empty: captioned
    report = caption(folder, captioner="wd14", model=wd14_model, format="txt")
    assert open(os.path.join(folder, "red.txt")).read() == "hand written\n"
    assert open(os.path.join(folder, "gray.txt")).read().startswith("^_^")
    assert open(os.path.join(folder, "sub", "green.txt")).read().startswith("half green")
    assert report.existing == ["red.png"] and not os.path.exists(os.path.join(folder, "metadata.csv"))
    caption(folder, captioner="wd14", model=wd14_model, format="txt", overwrite=True)
    assert open(os.path.join(folder, "red.txt")).read().startswith("red theme")


def test_output_folder_and_name_clash(tmp_path, wd14_model):
    folder = make_folder(tmp_path / "imgs", broken=False)
    B.save_solid(os.path.join(folder, "red.jpg"), RED, fmt="JPEG")
    out = tmp_path / "captions"
    report = caption(folder, captioner="wd14", model=wd14_model, output=str(out))  # a folder: txt
    assert report.format == "txt"
    assert sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs) == \
        ["blue.txt", "gray.txt", "red.txt", "sub/green.txt"]
    assert [(r, m.split(" with ")[0]) for r, m in report.skipped] == [("red.png", "shares its caption file red.txt")]
    with pytest.raises(UsageError, match="is a .csv file, but the format is txt"):
        caption(folder, captioner="wd14", model=wd14_model, output=str(tmp_path / "x.csv"), format="txt")


def test_broken_images_are_skipped_with_the_reasons_clean_gives(tmp_path, wd14_model):
    import lora_native

    folder = make_folder(tmp_path / "imgs")
    report = caption(folder, captioner="wd14", model=wd14_model)
    skipped = dict(report.skipped)
    assert sorted(skipped) == ["empty.png", "notes.jpg"]
    assert sorted(r[0] for r in read_csv(os.path.join(folder, "metadata.csv"))) == \
        ["blue.png", "gray.png", "red.png", "sub/green.png"]
    clean = lora_native.clean(folder, str(tmp_path / "clean_out"), dry_run=True)
    reasons = {it.rel: "%s (%s)" % it.reasons[0][::-1] for it in clean.items if it.rel in skipped}
    assert skipped == reasons == {"empty.png": "file is empty (0 bytes) (empty_file)",
                                  "notes.jpg": "file is plain text, not an image (not_an_image)"}


def test_report_summary_json_and_tag_frequency(tmp_path, wd14_model, capsys):
    from lora_native.train.data import scan_dataset

    folder = make_folder(tmp_path / "10_style", broken=True)
    report_path = tmp_path / "r.json"
    assert cli.main(["caption", folder, "--captioner", "wd14", "--model", wd14_model, "--exclude-tags",
                     "watermark,solo,long_hair,(o)_(o)", "--report", str(report_path)]) == 0
    printed = capsys.readouterr().out
    assert "4 captioned, 2 skipped, 0 already captioned" in printed
    assert "most frequent tags: ^_^ (4), blue theme (1)" in printed
    assert "caption(s) shorter than 3 words" in printed and "gray.png: '^_^'" in printed
    data = json.loads(report_path.read_text())
    assert data["top_tags"][0] == ["^_^", 4] and len(data["skipped"]) == 2
    # the tag counts are what training will write into ss_tag_frequency
    scan = scan_dataset(folder)
    assert data["tag_frequency"] == scan.tag_frequency == {"10_style": {
        "^_^": 4, "red theme": 1, "blue theme": 1, "hatsune miku": 1, "half green": 1}}
    assert not os.path.exists(os.path.join(folder, "caption_report.json"))


def test_auto_label_script_seed_usage(tmp_path, wd14_model):
    folder = make_folder(tmp_path / "style_train")
    env = dict(os.environ, PYTHONPATH="", LORA_NATIVE_WD14_MODEL=wd14_model)
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "auto_label.py"), "--input", folder,
                        "--output", os.path.join(folder, "metadata.csv"), "--captioner", "wd14"],
                       capture_output=True, text=True, cwd=str(tmp_path), env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "4 captioned, 2 skipped" in r.stdout
    assert len(read_csv(os.path.join(folder, "metadata.csv"))) == 4
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "auto_label.py"), "--input", folder,
                        "--output", folder, "--captioner", "wd14", "--model", wd14_model],
                       capture_output=True, text=True, cwd=str(tmp_path), env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert os.path.isfile(os.path.join(folder, "sub", "green.txt"))


def test_progress_callback(tmp_path, wd14_model):
    folder = make_folder(tmp_path / "imgs")
    seen = []
    caption(folder, captioner="wd14", model=wd14_model, batch_size=2, progress=lambda *a: seen.append(a))
    assert seen[0] == ("caption", 0, 6) and seen[-1] == ("caption", 6, 6)
    assert [d for _, d, _ in seen] == sorted(d for _, d, _ in seen)
