"""The lora-native command: demo, info, errors."""
import csv
import json
import os
import subprocess
import sys

from lora_native import cli
from lora_native.demo import generate


def test_demo_generates_and_cleans(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), "--count", "10"]) == 0
    printed = capsys.readouterr().out
    assert "report.html" in printed and "duplicate" in printed
    report = json.loads((out / "clean" / "report.json").read_text())
    status = {it["path"]: it for it in report["items"]}
    assert status["cut_off.jpg"]["reasons"][0]["code"] == "truncated"
    assert status["empty.png"]["reasons"][0]["code"] == "empty_file"
    assert status["download.png"]["reasons"][0]["code"] == "not_an_image"
    assert status["blurry_shot.png"]["reasons"][0]["code"] == "blurry"
    assert status["thumbnail.png"]["reasons"][0]["code"] == "too_small"
    assert status["copy_of_landscape_01.png"]["duplicate_kind"] == "exact"
    assert status["landscape_02_edit.jpg"]["duplicate_kind"] == "near"
    assert status["landscape_04_crop.png"]["duplicate_kind"] == "near"
    assert status["really_a_png.jpg"]["status"] == "kept"
    assert status["really_a_png.jpg"]["notes"][0]["code"] == "wrong_extension"
    kept = [p for p, it in status.items() if it["status"] == "kept"]
    assert len(kept) == 11  # the 10 pictures and the PNG named .jpg
    with open(out / "clean" / "metadata.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 12 and all(r[1].startswith("lnstyle, a paper-cut landscape") for r in rows[1:])
    # training ran on the cleaned set and the LoRA was inspected
    assert "<lora:demo:0.8>" in printed and "format:      kohya" in printed
    lora = out / "output" / "demo.safetensors"
    assert lora.is_file() and (out / "demo.yaml").is_file()
    from lora_native.config import load_config
    assert load_config(str(out / "demo.yaml")).output_dir == str(out / "output")
    # a second run regenerates the raw folder and replaces the clean output
    assert cli.main(["demo", "--out", str(out), "--count", "10", "--no-train"]) == 0


def test_demo_says_how_to_configure_a_captioner_and_uses_one(tmp_path, capsys, monkeypatch):
    for name in ("LORA_NATIVE_CAPTION_MODEL", "LORA_NATIVE_CAPTIONER", "LORA_NATIVE_BLIP_MODEL",
                 "LORA_NATIVE_WD14_MODEL", "LORA_NATIVE_CLIP_MODEL"):
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out), "--count", "5", "--no-train"]) == 0
    printed = capsys.readouterr().out
    assert "no captioning model configured" in printed and "make demo CAPTION_MODEL=" in printed
    assert not (out / "auto_captions").exists()

    from builders.captioners import make_wd14_model
    tags = [("outdoors", 0, (0.0, 0.0, 0.0), 20.0), ("never", 0, (0.0, 0.0, 0.0), -20.0)]
    model = make_wd14_model(str(tmp_path / "wd14"), tags, size=32)
    monkeypatch.setenv("LORA_NATIVE_CAPTION_MODEL", os.path.dirname(model))
    assert cli.main(["demo", "--out", str(out), "--count", "5", "--no-train"]) == 0
    printed = capsys.readouterr().out
    assert "auto-captioning the clean set with wd14" in printed
    with open(out / "auto_captions" / "metadata.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["filename", "prompt"] and len(rows) == 7  # 5 pictures + the PNG named .jpg
    assert all(r[1] == "outdoors" for r in rows[1:])
    with open(out / "clean" / "metadata.csv", newline="") as f:  # the training captions are left alone
        assert all(r[1].startswith("lnstyle") for r in list(csv.reader(f))[1:])


def test_demo_needs_five_pictures(tmp_path, capsys):
    assert cli.main(["demo", "--out", str(tmp_path / "demo"), "--count", "4", "--no-train"]) != 0
    assert "at least 5 pictures" in capsys.readouterr().err


def test_examples_demo_yaml_matches_the_demo():
    from lora_native.config import load_config
    from lora_native.demo import DEMO_TRAINING
    cfg = load_config(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples",
                                   "demo.yaml"))
    for key, value in DEMO_TRAINING.items():
        expected = (value, value) if key == "resolution" else value  # Config keeps (w, h)
        assert getattr(cfg, key) == expected, key


def test_demo_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("x")
    try:
        generate(str(tmp_path), count=5)
    except Exception as e:
        assert "not made by the demo" in str(e)
    else:
        raise AssertionError("generate() overwrote a foreign folder")
    assert (tmp_path / "mine.txt").read_text() == "x"


def test_info_prints_build(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "simd" in out and "version" in out and "gpus" in out or "gpu 0" in out


def test_console_entry_and_module_run():
    r = subprocess.run([sys.executable, "-m", "lora_native", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("lora-native ")
    r = subprocess.run([sys.executable, "-m", "lora_native", "clean", "/nonexistent/dir", "--out", "/tmp/x-ln"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: source folder") and "Traceback" not in r.stderr
    assert not os.path.exists("/tmp/x-ln")
