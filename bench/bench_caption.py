"""Auto-captioning benchmark: images per second, and how much of the captioning time goes to
preparing the model input (decode + resize in C, `_native.prepare_images`), with the prefetch
thread on (one batch prepared ahead while the model runs) and off.

    python bench/bench_caption.py                   # appends a section to bench/RESULTS.md
    python bench/bench_caption.py --count 40 --no-record

Data: generated 768x512 JPEGs (quality 90) in a temporary folder (in the page cache). Models,
random weights, built here: the test suite's tiny BLIP (32x32 input) and tiny WD14 tagger (64x64,
a mean-colour graph), which cost almost nothing per image, so they show the preparing cost itself;
and "small" models with the real input sizes (BLIP 384x384, ViT width 192 x 4 layers; WD14 448x448
with four convolutions, about 3 GMAC per image), whose model time is nearer what a real model
spends on a CPU (a real BLIP-base or wd-v1-4 tagger costs several times more again).

Figures per run, over the captioning loop only (model loading excluded: from the first to the last
progress call): images/s; prep share = time inside prepare_images / loop time (with prefetch that
time runs on the thread, beside the model); wait share = time the model waited for pixels / loop
time (what preparing really costs the run).
"""
import argparse
import io
import os
import shutil
import sys
import tempfile
import time

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))  # shared model builders
sys.path.insert(0, HERE)

from builders import captioners as B  # noqa: E402
from _common import append_section, machine_line  # noqa: E402
from lora_native.caption import caption  # noqa: E402
from lora_native.caption.batches import default_depth  # noqa: E402

WD14_TAGS = [("general", 9, (0, 0, 0), 2.0), ("sensitive", 9, (0, 0, 0), 0.0), ("red_theme", 0, (0, 0, 40), -20.0),
             ("blue_theme", 0, (40, 0, 0), -20.0), ("long_hair", 0, (0, 0, 0), 2.0), ("solo", 0, (0, 0, 0), 1.0),
             ("hatsune_miku", 4, (40, 0, 0), -20.0)]


def write_images(folder, count, size, seed=0):
    os.makedirs(folder, exist_ok=True)
    w, h = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    total = 0
    for i in range(count):
        base = np.stack([127 + 120 * np.sin(xx / (17 + 5 * c + i % 7) + yy / (23 + i % 5) + c) for c in range(3)], -1)
        base += rng.normal(0, 12, size=base.shape)
        buf = io.BytesIO()
        Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        with open(os.path.join(folder, "img_%04d.jpg" % i), "wb") as f:
            f.write(buf.getvalue())
        total += len(buf.getvalue())
    return total


def make_small_blip(folder):
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor

    os.makedirs(folder, exist_ok=True)
    vocab = B.BLIP_SPECIAL + list(B.BLIP_WORDS) + ["[DEC]"]
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True, bos_token="[DEC]")
    cfg = BlipConfig(vision_config=dict(hidden_size=192, intermediate_size=768, num_hidden_layers=4,
                                        num_attention_heads=3, image_size=384, patch_size=16),
                     text_config=dict(vocab_size=len(vocab), hidden_size=128, intermediate_size=512,
                                      num_hidden_layers=2, num_attention_heads=2, encoder_hidden_size=192,
                                      max_position_embeddings=64, bos_token_id=vocab.index("[DEC]"), pad_token_id=0,
                                      sep_token_id=3, eos_token_id=3),
                     projection_dim=128)
    torch.manual_seed(0)
    BlipForConditionalGeneration(cfg).eval().save_pretrained(folder)
    BlipImageProcessor(size={"height": 384, "width": 384}).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def make_small_wd14(folder, size=448):
    """A tagger of about 3 GMAC per image (a real wd-v1-4 tagger costs a few times more): NHWC input
    -> transpose -> conv 7x7/2 (3->64) -> conv 3x3/2 (64->128) -> conv 3x3/2 (128->256) ->
    conv 3x3/2 (256->512), each with a relu -> global mean -> matmul -> sigmoid."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    n = len(WD14_TAGS)
    convs = [(64, 3, 7), (128, 64, 3), (256, 128, 3), (512, 256, 3)]
    inits = [numpy_helper.from_array((rng.standard_normal((o, i, k, k)) * (2.0 / (i * k * k)) ** 0.5)
                                     .astype(np.float32), "w%d" % j) for j, (o, i, k) in enumerate(convs)]
    inits.append(numpy_helper.from_array((rng.standard_normal((512, n)) * 0.05).astype(np.float32), "fc"))
    nodes = [helper.make_node("Transpose", ["input_1:0"], ["r_in"], perm=[0, 3, 1, 2])]
    prev = "r_in"
    for j, (o, i, k) in enumerate(convs):
        nodes.append(helper.make_node("Conv", [prev, "w%d" % j], ["c%d" % j], strides=[2, 2], pads=[k // 2] * 4))
        nodes.append(helper.make_node("Relu", ["c%d" % j], ["r%d" % j]))
        prev = "r%d" % j
    nodes += [helper.make_node("ReduceMean", [prev], ["m"], axes=[2, 3], keepdims=0),
              helper.make_node("MatMul", ["m", "fc"], ["logits"]),
              helper.make_node("Sigmoid", ["logits"], ["predictions_sigmoid"])]
    graph = helper.make_graph(nodes, "small_wd14",
                              [helper.make_tensor_value_info("input_1:0", TensorProto.FLOAT, ["batch", size, size, 3])],
                              [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, ["batch", n])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, os.path.join(folder, "model.onnx"))
    B.write_tags_csv(os.path.join(folder, "selected_tags.csv"), [(t[0], t[1]) for t in WD14_TAGS])
    return folder


def run(images, out_csv, captioner, model, prefetch, batch_size, threads, options):
    stamps = []
    report = caption(images, captioner=captioner, model=model, output=out_csv, overwrite=True, batch_size=batch_size,
                     threads=threads, prefetch=prefetch, device="cpu",
                     progress=lambda stage, done, total: stamps.append(time.perf_counter()), **options)
    loop = stamps[-1] - stamps[0]
    n = len(report.captioned)
    return {"n": n, "loop": loop, "ips": n / loop, "prep": report.prep_seconds / loop,
            "wait": report.wait_seconds / loop, "prep_s": report.prep_seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--size", default="768x512")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="preparing threads (0: all cores)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; the fastest is reported")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))

    import torch
    import transformers.utils.logging as tlog
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()

    tmp = tempfile.mkdtemp(prefix="bench_caption_")
    try:
        images = os.path.join(tmp, "images")
        nbytes = write_images(images, args.count, size)
        models = {
            ("blip", "tiny 32x32"): (B.make_blip_folder(os.path.join(tmp, "blip_tiny")),
                                     {"num_beams": 3, "max_new_tokens": 20}),
            ("blip", "small 384x384"): (make_small_blip(os.path.join(tmp, "blip_small")),
                                        {"num_beams": 3, "max_new_tokens": 20}),
            ("wd14", "tiny 64x64"): (B.make_wd14_model(os.path.join(tmp, "wd14_tiny"), WD14_TAGS), {}),
            ("wd14", "small 448x448"): (make_small_wd14(os.path.join(tmp, "wd14_small")), {}),
        }
        rows = []
        for (captioner, label), (model, options) in models.items():
            run(images, os.path.join(tmp, "warm.csv"), captioner, model, 1, args.batch_size, args.threads, options)
            best = {}
            for _ in range(args.repeat):  # on and off alternate, so both see the same machine load
                for prefetch in (1, 0):
                    r = run(images, os.path.join(tmp, "out.csv"), captioner, model, prefetch, args.batch_size,
                            args.threads, options)
                    if prefetch not in best or r["loop"] < best[prefetch]["loop"]:
                        best[prefetch] = r
            for prefetch in (1, 0):
                r = best[prefetch]
                rows.append((captioner, label, prefetch, r))
                print("%-5s %-14s prefetch %-3s %6.1f img/s  prep %5.1f%%  wait %5.1f%%  (%d images, %.2f s)"
                      % (captioner, label, "on" if prefetch else "off", r["ips"], 100 * r["prep"],
                         100 * r["wait"], r["n"], r["loop"]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    table = ["| captioner | model | prefetch | images/s | in prepare_images (share of loop) | model waiting for "
             "pixels (share of loop) | prepare ms/img |",
             "|---|---|---|---:|---:|---:|---:|"]
    for captioner, label, prefetch, r in rows:
        table.append("| %s | %s | %s | %.1f | %.1f%% | %.1f%% | %.2f |" % (
            captioner, label, "on" if prefetch else "off", r["ips"], 100 * r["prep"], 100 * r["wait"],
            1000 * r["prep_s"] / max(r["n"], 1)))
    by = {(c, l, p): r for c, l, p, r in rows}
    notes = ["- data: %d generated %dx%d JPEGs (quality 90, %.1f MB), batch %d, preparing threads %s; CPU, fp32, "
             "torch threads %d; "
             "BLIP with num_beams 3, max_new_tokens 20; best of %d runs; model loading excluded"
             % (args.count, size[0], size[1], nbytes / 1e6, args.batch_size,
                args.threads or "auto (batches.default_threads)", torch.get_num_threads(), args.repeat),
             "- prep share = time inside `_native.prepare_images` / captioning loop time; waiting share = time the "
             "model thread waited for the next batch / loop time. With prefetch, preparing runs on its own thread "
             "beside the model, so only the waiting share costs the run."]
    for captioner, label in models:
        on, off = by[(captioner, label, 1)], by[(captioner, label, 0)]
        auto = "on" if default_depth(True, captioner != "wd14") else "off"
        notes.append("- %s %s: %.2fx the images/s with prefetch (waiting %.1f%% -> %.1f%% of the loop); "
                     "the default on this CPU (batches.default_depth): %s"
                     % (captioner, label, on["ips"] / off["ips"], 100 * off["wait"], 100 * on["wait"], auto))
    print("\n".join(table + [""] + notes))
    if not args.no_record:
        append_section("auto-captioning, preparing vs model time", "bench_caption.py",
                       machine_line(", torch %s" % torch.__version__), table, notes)


if __name__ == "__main__":
    main()
