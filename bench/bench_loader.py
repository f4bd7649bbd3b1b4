"""Training data benchmark: scanning a dataset folder, and loading batches (decode + Lanczos
crop/resize to 512x512, batch 8) with lora_native against Pillow doing the same work in one loop.

    python bench/bench_loader.py                    # appends a section to bench/RESULTS.md
    python bench/bench_loader.py --scan-count 200 --load-count 16 --no-record

Scan: a kohya folder (two <N>_<concept> folders, captions beside the images) of generated
1024x768 JPEGs and 768x512 PNGs, read with lora_native.train.data.scan_dataset (header-only
checks, XXH64 of every file, captions); files are in the page cache (written just before).
Load: 1024x768 JPEGs (quality 90) center-cropped to 512x512. Pillow's loop is open + convert +
resize(LANCZOS, box=the same source box) — one resample, the same work as ours — and, as kohya
does it, resize to cover + crop. The pixels of the first path are compared with ours.
"""
import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile

import numpy as np
import PIL
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))  # shared image builders
sys.path.insert(0, HERE)

from lora_native import _native  # noqa: E402
from lora_native.train.data import assign_buckets, load_batch, scan_dataset  # noqa: E402
from builders.images import make_image  # noqa: E402
from _common import append_section, machine_line, timed  # noqa: E402

SIDE = 512
BATCH = 8


def encoded(kind, size, fmt, seed):
    buf = io.BytesIO()
    Image.fromarray(make_image(kind, size[0], size[1], "RGB", seed)).save(buf, fmt, quality=90)
    return buf.getvalue()


def write_scan_folder(root, count):
    """count files: half 1024x768 JPEG in 10_style, half 768x512 PNG in 3_other, each with a caption.
    16 distinct encodings are written round-robin (scanning cost does not depend on content)."""
    sources = [encoded("photo", (1024, 768), "JPEG", s) for s in range(8)] + \
              [encoded("photo", (768, 512), "PNG", s) for s in range(8)]
    for i in range(count):
        jpeg = i % 2 == 0
        folder = os.path.join(root, "10_style" if jpeg else "3_other")
        os.makedirs(folder, exist_ok=True)
        name = os.path.join(folder, "img%05d" % i)
        with open(name + (".jpg" if jpeg else ".png"), "wb") as f:
            f.write(sources[(i // 2) % 8 + (0 if jpeg else 8)])
        with open(name + ".txt", "w") as f:
            f.write("sks, tag%d, photo\n" % (i % 50))


def pillow_box(paths, plans):
    out = []
    for p, plan in zip(paths, plans):
        with Image.open(p) as im:
            out.append(np.asarray(im.convert("RGB").resize((SIDE, SIDE), Image.Resampling.LANCZOS,
                                                           box=tuple(plan["box"]))))
    return out


def pillow_cover_crop(paths):
    out = []
    for p in paths:
        with Image.open(p) as im:
            im = im.convert("RGB")
            scale = SIDE / min(im.size)
            w, h = round(im.width * scale), round(im.height * scale)
            im = im.resize((w, h), Image.Resampling.LANCZOS)
            left, top = (w - SIDE) // 2, (h - SIDE) // 2
            out.append(np.asarray(im.crop((left, top, left + SIDE, top + SIDE))))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scan-count", type=int, default=2000)
    ap.add_argument("--load-count", type=int, default=64, help="images loaded per timed run (a multiple of 8)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_loader_")
    rows, notes = [], []
    try:
        root = os.path.join(tmp, "scan")
        write_scan_folder(root, args.scan_count)
        for threads in (2, 1):
            scan, t = timed(lambda: scan_dataset(root, threads=threads), args.repeat)
            assert len(scan.samples) == args.scan_count, scan.warnings[:3]
            rows.append("| scan_dataset, %d files | %d | %.3f | %.3f | %.3f | %.2f |" % (
                args.scan_count, threads, min(t), statistics.median(t), t.cpu_of_best,
                1000 * min(t) / args.scan_count))

        paths = []
        for i in range(args.load_count):
            p = os.path.join(tmp, "load", "img%03d.jpg" % i)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(encoded("photo", (1024, 768), "JPEG", 100 + i))
            paths.append(p)
        analyses = _native.analyze_files(paths, header_only=True)
        plans = [_native.plan_crop((a["width"], a["height"]), (SIDE, SIDE)) for a in analyses]
        jobs = [(p, (a["width"], a["height"]), plan, a["file_hash"]) for p, a, plan in zip(paths, analyses, plans)]
        batches = [jobs[k:k + BATCH] for k in range(0, len(jobs), BATCH)]
        n = len(jobs)

        def native(threads):
            return [_native.load_images(b, threads=threads)[0] for b in batches]

        load_root = os.path.join(tmp, "load")
        load_scan = scan_dataset(load_root)
        buckets = assign_buckets(load_scan.samples, SIDE)
        idx = [list(range(k, min(k + BATCH, n))) for k in range(0, n, BATCH)]

        def full(threads):
            return [load_batch(load_scan.samples, b, buckets, threads=threads)[0] for b in idx]

        full(2)  # warm-up: imports torch
        (box, t_box) = timed(lambda: pillow_box(paths, plans), args.repeat)
        (_, t_cover) = timed(lambda: pillow_cover_crop(paths), args.repeat)
        results = {}
        for threads in (1, 2):
            results[threads] = timed(lambda: native(threads), args.repeat)
        (_, t_full2) = timed(lambda: full(2), args.repeat)
        ref = min(t_box)
        for name, threads, t in [("Pillow open+convert+resize(box) loop", 1, t_box),
                                 ("Pillow open+convert+resize+crop loop (kohya way)", 1, t_cover),
                                 ("_native.load_images, batch 8", 1, results[1][1]),
                                 ("_native.load_images, batch 8", 2, results[2][1]),
                                 ("train.data.load_batch (+ float [-1,1] tensor), batch 8", 2, t_full2)]:
            rows.append("| %s, %d images | %d | %.3f | %.3f | %.3f | %.2f (%.1f img/s, %.2fx Pillow box) |" % (
                name, n, threads, min(t), statistics.median(t), t.cpu_of_best, 1000 * min(t) / n, n / min(t),
                ref / min(t)))
        ours = np.concatenate(results[1][0])
        diff = max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(ours, box))
        same = sum(np.array_equal(a, b) for a, b in zip(ours, box))
        notes.append("- parity: %d of %d crops identical to Pillow %s's resize(LANCZOS, box); max abs difference %d "
                     "(JPEG decoders: Pillow's bundled libjpeg-turbo vs the system one)" % (same, n, PIL.__version__,
                                                                                           diff))
        notes.append("- scan: header-only (structure checks, EXIF orientation, no pixels), XXH64 of every file, "
                     "caption files read; page cache warm. load: %d JPEG 1024x768 q90 -> 512x512 center crop"
                     % n)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    table = ["| case | threads | best (s) | median (s) | CPU of best (s) | ms/image |", "|---|---:|---:|---:|---:|---|"]
    table += rows
    print("\n".join(table + [""] + notes))
    if not args.no_record:
        append_section("training data, scan and batch loading", "bench_loader.py", machine_line(), table, notes)


if __name__ == "__main__":
    main()
