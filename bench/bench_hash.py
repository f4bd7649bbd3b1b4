"""Image hashing benchmark: aHash + dHash + pHash with Python imagehash (Pillow decode) against
lora_native, in one run, on the same generated JPEG folder and on the same decoded arrays.

    python bench/bench_hash.py                      # appends a section to bench/RESULTS.md
    python bench/bench_hash.py --count 40 --no-record

Every timed path is also checked for parity: how many files' hashes differ from imagehash's.
"""
import argparse
import os
import statistics
import sys
import tempfile

import imagehash
import numpy as np
import PIL
import PIL.features
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))  # shared image builders
sys.path.insert(0, HERE)

from lora_native import _native, hashing  # noqa: E402
from builders.images import make_image  # noqa: E402
from _common import append_section, machine_line, timed  # noqa: E402


def imagehash_of(im):
    return (int(str(imagehash.average_hash(im)), 16), int(str(imagehash.dhash(im)), 16),
            int(str(imagehash.phash(im)), 16))


def imagehash_files(paths):
    out = []
    for p in paths:
        with Image.open(p) as im:
            out.append(imagehash_of(im))
    return np.array(out, dtype=np.uint64)


def imagehash_arrays(arrays):
    return np.array([imagehash_of(Image.fromarray(a)) for a in arrays], dtype=np.uint64)


def pillow_decode(paths):
    arrays = []
    for p in paths:
        with Image.open(p) as im:
            arrays.append(np.asarray(im.convert("RGB")))
    return arrays


def differing(a, b):
    """Per hash kind: number of files whose hash differs."""
    return [int(np.count_nonzero(a[:, k] != b[:, k])) for k in range(3)]


def make_folder(folder, count, size, seed):
    paths = []
    for i in range(count):
        a = make_image("photo", size[0], size[1], mode="RGB", seed=seed + i)
        path = os.path.join(folder, "%04d.jpg" % i)
        Image.fromarray(a).save(path, quality=90)
        paths.append(path)
    return paths


def run_size(size, count, repeat, seed, threads):
    with tempfile.TemporaryDirectory() as folder:
        paths = make_folder(folder, count, size, seed)
        mb = sum(os.path.getsize(p) for p in paths) / 2**20
        ref, t_ref = timed(lambda: imagehash_files(paths), repeat)
        rows = [("imagehash, Pillow decode (from files)", 1, t_ref, None)]

        def ours(**kw):
            return lambda: hashing.hash_files(paths, apply_orientation=False, **kw)[0]
        for label, th, kw in [("lora_native.hash_files", threads, {}),
                              ("lora_native.hash_files", 1, {}),
                              ("lora_native.hash_files, stb_image JPEG", threads, {"jpeg_decoder": "stb"}),
                              ("lora_native.hash_files, DCT-scaled JPEG (fast mode)", threads,
                               {"jpeg_draft_min_side": 256})]:
            got, t = timed(ours(threads=th, **kw), repeat)
            rows.append((label, th, t, differing(got, ref)))
        _, t_pil_dec = timed(lambda: pillow_decode(paths), repeat)
        _, t_our_dec = timed(lambda: _native.decode_files(paths, threads=1, apply_orientation=False), repeat)
        _, t_stb_dec = timed(lambda: _native.decode_files(paths, threads=1, apply_orientation=False,
                                                           jpeg_decoder="stb"), repeat)
        arrays = pillow_decode(paths)
        ref_a, t_ref_a = timed(lambda: imagehash_arrays(arrays), repeat)
        arr_rows = [("imagehash on arrays (Image.fromarray)", 1, t_ref_a, None)]
        for th in (threads, 1):
            got, t = timed(lambda: hashing.hashes_batch(arrays, threads=th), repeat)
            arr_rows.append(("lora_native.hashes_batch", th, t, differing(got, ref_a)))
        decode_rows = [("Pillow (libjpeg-turbo %s)" % PIL.features.version("libjpeg_turbo"), t_pil_dec),
                       ("lora_native libjpeg-turbo (system)", t_our_dec), ("lora_native stb_image", t_stb_dec)]
    return mb, rows, arr_rows, decode_rows


def fmt_rows(rows, count, base):
    out = []
    for label, th, t, diff in rows:
        ms = min(t) / count * 1000
        ratio = min(base) / min(t)
        parity = "reference" if diff is None else ("identical" if not any(diff) else
                                                    "differs in %d/%d/%d files" % tuple(diff))
        out.append("| %s | %d | %.2f | %.2f | %.1fx | %s |" % (label, th, ms, statistics.median(t) / count * 1000,
                                                                ratio, parity))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=100, help="images per size")
    ap.add_argument("--sizes", default="1024x768,2048x1536")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    table, notes = [], []
    for size_text in args.sizes.split(","):
        size = tuple(int(v) for v in size_text.split("x"))
        mb, rows, arr_rows, decode_rows = run_size(size, args.count, args.repeat, args.seed, args.threads)
        table += ["", "**%s, %d JPEGs (quality 90, %.1f MB)**: aHash + dHash + pHash per image" % (
            size_text, args.count, mb), "",
            "| path | threads | best ms/img | median ms/img | vs imagehash | parity (aHash/dHash/pHash) |",
            "|---|---:|---:|---:|---:|---|"]
        table += fmt_rows(rows, args.count, rows[0][2])
        table += fmt_rows(arr_rows, args.count, arr_rows[0][2])
        notes.append("- %s decode only, 1 thread, ms/img: %s" % (size_text, ", ".join(
            "%s %.2f" % (name, min(t) / args.count * 1000) for name, t in decode_rows)))
    notes += [
        "- parity: hashes compared with imagehash %s on Pillow %s in the same run; 'identical' means every "
        "file's three hashes are bit-identical" % (imagehash.__version__, PIL.__version__),
        "- fast mode decodes JPEG DCT-scaled (libjpeg scale_num/8, smallest scale with short side >= 256): "
        "the hashes are computed from other pixels, so some differ from imagehash's",
    ]
    machine = machine_line(", Pillow %s, imagehash %s" % (PIL.__version__, imagehash.__version__))
    print("machine: " + machine)
    print("\n".join(table))
    print("\n".join(notes))
    if not args.no_record:
        append_section("image hashing vs imagehash", "bench_hash.py", machine, table, notes)


if __name__ == "__main__":
    main()
