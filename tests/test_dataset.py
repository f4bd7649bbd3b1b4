"""`lora_native.clean` end to end on a generated messy folder."""
import csv
import json
import os

import numpy as np
import pytest
from PIL import Image, ImageFilter

import lora_native
from lora_native import cli
from lora_native.errors import DatasetError, UsageError
from builders.dataset import make_messy_folder, tree_checksums


@pytest.fixture(scope="module")
def messy(tmp_path_factory):
    root = tmp_path_factory.mktemp("messy") / "src"
    expect = make_messy_folder(str(root))
    return str(root), expect


@pytest.fixture(scope="module")
def cleaned(messy, tmp_path_factory):
    src, expect = messy
    before = tree_checksums(src)
    out = str(tmp_path_factory.mktemp("out") / "dst")
    report = lora_native.clean(src, out, resolution=512, trigger="sks", threads=2)
    return src, out, expect, report, before


def _by_path(report):
    return {it.rel: it for it in report.items}


def test_every_file_gets_its_expected_fate(cleaned):
    _, _, expect, report, _ = cleaned
    items = _by_path(report)
    assert set(items) == set(expect)
    for rel, (status, detail) in expect.items():
        it = items[rel]
        assert it.status == status, (rel, it.status, it.reasons)
        if status == "rejected":
            assert detail in [code for code, _ in it.reasons], (rel, it.reasons)
            assert all(message for _, message in it.reasons)
        elif status == "duplicate":
            assert it.duplicate_kind == detail, (rel, it.duplicate_kind)
        elif detail:
            assert detail in [code for code, _ in it.notes], (rel, it.notes)


def test_src_is_untouched(cleaned):
    src, _, _, _, before = cleaned
    assert tree_checksums(src) == before


def test_outputs_and_metadata_csv(cleaned):
    src, out, _, report, _ = cleaned
    with open(os.path.join(out, "metadata.csv"), newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["filename", "prompt"]
    prompts = dict(rows[1:])
    kept = report.kept
    assert len(prompts) == len(kept) == 9
    for it in kept:
        path = os.path.join(out, it.output)
        assert os.path.isfile(path)
        with Image.open(path) as im:
            assert im.size == (512, 512) and im.mode == "RGB"
        assert prompts[it.output].startswith("sks")
    assert prompts["a_red.png"] == "sks, a red picture"
    assert prompts["10_style/d_sub.png"] == "sks, in a kohya folder"
    assert prompts["f_listed.png"] == "sks, from the csv, with a comma"
    assert prompts["c_wide.png"] == "sks"
    assert "n_caf_.png" in prompts  # non-UTF-8 name written under a safe name
    assert "n_really_png.png" in prompts
    # nothing else but our outputs in DST
    written = {os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs}
    assert written == {it.output for it in kept} | {"metadata.csv", "report.json", "report.html",
                                                     ".lora-native-clean.json"}
    with open(os.path.join(out, ".lora-native-clean.json")) as f:
        assert set(json.load(f)["files"]) == written - {".lora-native-clean.json"}


def test_output_pixels_are_a_center_crop_of_the_source(cleaned):
    src, out, _, report, _ = cleaned
    it = _by_path(report)["c_wide.png"]  # 900x600 -> box (150, 0, 750, 600) -> 512x512
    source = np.asarray(Image.open(os.path.join(src, "c_wide.png")).convert("RGB"))
    expected = np.asarray(Image.fromarray(source).resize((512, 512), Image.LANCZOS, box=(150, 0, 750, 600)))
    got = np.asarray(Image.open(os.path.join(out, it.output)))
    assert np.array_equal(got, expected)


def test_report_json(cleaned):
    _, out, expect, report, _ = cleaned
    with open(os.path.join(out, "report.json"), encoding="utf-8") as f:
        data = json.load(f)
    assert data["counts"] == report.counts()
    assert data["counts"]["total"] == len(expect)
    assert len(data["items"]) == len(expect)
    by_path = {it["path"]: it for it in data["items"]}
    red = by_path["a_red.png"]
    assert red["status"] == "kept" and red["output"] == "a_red.png" and red["output_size"] == [512, 512]
    assert set(red["hashes"]) == {"ahash", "dhash", "phash", "pixels", "file"}
    assert all(len(v) == 16 for v in red["hashes"].values())
    assert {"blur", "mean_luma", "p1_luma", "p99_luma", "entropy", "color_fraction"} <= set(red["metrics"])
    copy = by_path["z_copy_of_red.png"]
    assert copy["duplicate_of"] == "a_red.png" and copy["distance"] == 0
    assert by_path["x_cut.jpg"]["reasons"][0]["code"] == "truncated"
    assert by_path["n_caf\\xe9.png"]["notes"][0]["code"] == "non_utf8_name"
    groups = {g["kept"]: g["members"] for g in data["groups"]}
    assert groups["a_red.png"] == ["a_red.png", "z_copy_of_red.png"]
    assert groups["b_blue.jpg"] == ["b_blue.jpg", "y_blue_edit.jpg"]
    assert any(".caption" in w for w in data["warnings"])


def test_report_html(cleaned):
    _, out, _, report, _ = cleaned
    with open(os.path.join(out, "report.html"), encoding="utf-8") as f:
        page = f.read()
    for it in report.rejected:
        assert it.path in page.replace("&#x27;", "'")
    assert page.count("class='badge'") + page.count('class="badge"') == len(report.groups) == 2
    assert page.count("data:image/jpeg;base64,") >= len(report.items) - 4  # broken files have no preview
    assert "truncated" in page and "empty_file" in page


def test_dry_run_writes_nothing(messy, tmp_path):
    src, _ = messy
    out = tmp_path / "never"
    report = lora_native.clean(src, str(out), dry_run=True)
    assert not out.exists()
    assert report.dry_run and len(report.kept) == 9


def test_rerun_into_previous_output_replaces_it(messy, tmp_path):
    src, _ = messy
    out = str(tmp_path / "dst")
    lora_native.clean(src, out)
    report = lora_native.clean(src, out, ignore=["too_small"], caption_output="both")
    assert _by_path(report)["q_tiny.png"].status == "kept"
    assert os.path.isfile(os.path.join(out, "q_tiny.png")) and os.path.isfile(os.path.join(out, "q_tiny.txt"))
    report = lora_native.clean(src, out)  # q_tiny rejected again: its old output is removed
    assert not os.path.exists(os.path.join(out, "q_tiny.png"))


def test_rerun_removes_old_captions_and_never_leaves_out(messy, tmp_path):
    src, _ = messy
    out = tmp_path / "dst"
    lora_native.clean(src, str(out), caption_output="txt")
    assert (out / "a_red.txt").exists() and not (out / "metadata.csv").exists()
    # an interrupted run leaves the manifest: the folder is still ours
    (out / "report.json").unlink()
    victim = tmp_path / "victim.txt"
    victim.write_text("user file")
    manifest = out / ".lora-native-clean.json"
    data = json.loads(manifest.read_text())
    data["files"] += ["../victim.txt", str(victim), "a_red.md"]
    manifest.write_text(json.dumps(data))
    (out / "a_red.md").write_text("not ours to delete")
    lora_native.clean(src, str(out), caption_output="csv")
    assert not (out / "a_red.txt").exists() and (out / "metadata.csv").exists()
    assert victim.read_text() == "user file" and (out / "a_red.md").exists()


def test_refuses_foreign_nonempty_output_and_src_inside_out(messy, tmp_path):
    src, _ = messy
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("user file")
    with pytest.raises(DatasetError, match="not empty"):
        lora_native.clean(src, str(foreign))
    (foreign / "report.json").write_text("{}")  # a report alone does not make a folder ours
    with pytest.raises(DatasetError, match="not empty"):
        lora_native.clean(src, str(foreign))
    assert (foreign / "mine.txt").read_text() == "user file"
    with pytest.raises(DatasetError, match="must not be the source"):
        lora_native.clean(src, src)
    with pytest.raises(DatasetError, match="does not exist"):
        lora_native.clean(str(tmp_path / "nope"), str(tmp_path / "o"))
    with pytest.raises(UsageError):
        lora_native.clean(src, str(tmp_path / "o2"), keep="smallest")
    with pytest.raises(UsageError):
        lora_native.clean(src, str(tmp_path / "o3"), no_such_option=1)
    with pytest.raises(UsageError, match="threads"):
        lora_native.clean(src, str(tmp_path / "o4"), threads=-1)
    with pytest.raises(UsageError, match="bucket step"):
        lora_native.clean(src, str(tmp_path / "o5"), bucket=True, bucket_step=4096)
    assert not any((tmp_path / d).exists() for d in ("o2", "o3", "o4", "o5"))


def test_unreadable_caption_is_a_warning(tmp_path):
    from builders.dataset import textured
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(textured(1, (600, 600))).save(src / "p0.png")
    (src / "p0.txt").mkdir()  # a folder where the caption file should be
    report = lora_native.clean(str(src), str(tmp_path / "out"))
    assert [it.status for it in report.items] == ["kept"]
    assert any("cannot read caption" in w for w in report.warnings)


def test_output_inside_src_is_not_walked(tmp_path):
    src = tmp_path / "src"
    make_messy_folder(str(src))
    first = lora_native.clean(str(src), str(src / "cleaned"))
    second = lora_native.clean(str(src), str(src / "cleaned"))
    assert len(second.items) == len(first.items)


def test_buckets_and_pad(messy, tmp_path):
    src, _ = messy
    report = lora_native.clean(src, str(tmp_path / "b"), resolution=512, bucket=True)
    buckets = {tuple(b) for b in lora_native._native.bucket_resolutions((512, 512), max_size=1024)}
    sizes = {it.rel: it.output_size for it in report.kept}
    assert all(tuple(s) in buckets for s in sizes.values())
    assert sizes["c_wide.png"][0] > sizes["c_wide.png"][1]       # 3:2 landscape bucket
    assert sizes["e_tall.webp"][0] < sizes["e_tall.webp"][1]     # 2:3 portrait bucket
    for it in report.kept:
        with Image.open(os.path.join(str(tmp_path / "b"), it.output)) as im:
            assert im.size == tuple(it.output_size)
    report = lora_native.clean(src, str(tmp_path / "p"), resolution="640x480", fit="pad", output_format="jpg")
    it = _by_path(report)["e_tall.webp"]
    with Image.open(os.path.join(str(tmp_path / "p"), it.output)) as im:
        assert im.size == (640, 480) and im.format == "JPEG"
        px = np.asarray(im)
    assert px[:, :10].min() > 240  # white padding left and right of a portrait picture


def test_keep_sharpest(tmp_path):
    from builders.dataset import textured
    src = tmp_path / "src"
    src.mkdir()
    img = textured(21, (800, 800))
    Image.fromarray(img).filter(ImageFilter.GaussianBlur(1.0)).save(src / "big_soft.png")
    Image.fromarray(np.asarray(Image.fromarray(img).resize((700, 700), Image.LANCZOS))).save(src / "sharp.png")
    r1 = lora_native.clean(str(src), str(tmp_path / "l"), keep="largest", blur=1.0)
    r2 = lora_native.clean(str(src), str(tmp_path / "s"), keep="sharpest", blur=1.0)
    assert [it.rel for it in r1.kept] == ["big_soft.png"]
    assert [it.rel for it in r2.kept] == ["sharp.png"]


def test_cli_clean_exit_codes(messy, tmp_path, capsys):
    src, _ = messy
    assert cli.main(["clean", src, "--out", str(tmp_path / "c1"), "--trigger", "sks"]) == 0
    captured = capsys.readouterr()
    assert "kept" in captured.out and "report.html" in captured.out
    assert "rejected" in captured.err
    assert cli.main(["clean", src, "--out", str(tmp_path / "c2"), "--strict"]) == 3
    assert cli.main(["clean", src, "--out", src]) == 2
    assert "error:" in capsys.readouterr().err


def test_progress_callback_reports_both_stages(messy, tmp_path):
    src, expect = messy
    seen = []
    lora_native.clean(src, str(tmp_path / "o"), progress=lambda stage, done, total: seen.append((stage, done, total)))
    assert ("analyze", len(expect), len(expect)) in seen
    assert seen[-1][0] == "export" and seen[-1][1] == seen[-1][2] == 9


def test_native_analyze_and_export_entry_points(tmp_path):
    from builders.dataset import textured
    from lora_native import _native
    src = tmp_path / "a.png"
    Image.fromarray(textured(30, (700, 500))).save(src)
    (tmp_path / "bad.png").write_bytes(b"")
    (rec, bad) = _native.analyze_files([str(src), str(tmp_path / "bad.png")], threads=2, thumb_size=64)
    assert rec["info"]["reason"] == "ok" and rec["decoded"] and (rec["width"], rec["height"]) == (700, 500)
    assert rec["thumb"][:2] == b"\xff\xd8" and rec["error"] is None
    assert bad["info"]["reason"] == "empty_file" and not bad["decoded"] and bad["thumb"] is None
    plan = _native.plan_crop((700, 500), (256, 256))
    dst = tmp_path / "out.jpg"
    assert _native.export_files([(str(src), str(dst), (700, 500), plan)], format="jpg") == [None]
    with Image.open(dst) as im:
        assert im.size == (256, 256) and im.format == "JPEG"
    # the file changed since it was analyzed: refused, nothing written
    errors = _native.export_files([(str(src), str(tmp_path / "x.png"), (640, 480), plan)])
    assert "changed while cleaning" in errors[0] and not (tmp_path / "x.png").exists()
    ok = _native.export_files([(str(src), str(tmp_path / "y.png"), (700, 500), plan, rec["file_hash"])])
    assert ok == [None]
    errors = _native.export_files([(str(src), str(tmp_path / "z.png"), (700, 500), plan, rec["file_hash"] ^ 1)])
    assert "content is not what was analyzed" in errors[0] and not (tmp_path / "z.png").exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp files left behind
    with pytest.raises(ValueError):
        _native.export_files([], format="gif")
    with pytest.raises(ValueError):
        _native.analyze_files([str(src)], thumb_size=-1)
    with pytest.raises(ValueError):
        _native.analyze_files([str(src)], jpeg_decoder="magic")
