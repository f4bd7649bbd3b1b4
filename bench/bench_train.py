"""Training speed: lora_native.train against a plain diffusers + peft loop doing the same work
(same model, LoRA targets, rank, batch, resolution, precision, optimizer; latents precomputed
for both, text encoded every step), each in its own process for a clean peak-memory reading.

    python bench/bench_train.py                          # tiny SD1.5-like model on the CPU
    python bench/bench_train.py --kind sdxl --no-record
    python bench/bench_train.py --full sd15 --device cuda --precision fp16 --resolution 512 --batch 1
        (full SD1.5 architecture with random weights; needs a GPU)
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, HERE)


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_setup(folder, kind, full, images, resolution):
    from builders.training import make_image_folder
    from lora_native.train.tiny import make_tiny_model
    model = os.path.join(folder, "%s%s.safetensors" % ("full-" if full else "tiny-", kind))
    if full:
        write_random_full_model(model, kind)
    else:
        make_tiny_model(model, kind, seed=0)
    data = make_image_folder(os.path.join(folder, "data"), count=images, size=(resolution, resolution))
    return model, data


def write_random_full_model(path, kind):
    """The real architecture with random weights, fp16, in the original single-file layout."""
    import torch
    from safetensors.torch import save_file
    from lora_native.configs import load_architecture
    from lora_native.formats import ldm
    from lora_native.train.model import build_components
    arch = load_architecture(kind)
    modules = build_components(arch, "cpu")
    sds = {name: {k: v.half() for k, v in m.state_dict().items()} for name, m in modules.items()}
    original, _ = ldm.diffusers_to_original(sds, kind, arch)
    save_file({k: v.contiguous() for k, v in original.items()}, path)
    del modules, sds, original
    torch.cuda.empty_cache() if torch.cuda.is_available() else None


def run_ours(args):
    from lora_native.train.loop import train
    times = []
    cfg = {"base_model": args.model, "train_data_dir": args.data, "output_dir": args.out, "output_name": "bench",
           "resolution": args.resolution, "batch_size": args.batch, "lora_rank": args.rank,
           "learning_rate": 1e-4, "max_train_steps": args.warmup + args.steps, "cache_latents": True,
           "mixed_precision": args.precision, "device": args.device, "seed": 1, "resume": "never",
           "gradient_checkpointing": args.gradient_checkpointing}
    train(cfg, callbacks={"on_step": lambda s: times.append(time.perf_counter())})
    return times


def run_plain(args):
    """The loop a user would write with diffusers + peft (train_text_to_image_lora.py style)."""
    import torch
    from peft import LoraConfig
    from lora_native.formats.keymap import lora_targets
    from lora_native.train import data as train_data
    from lora_native.train.conditioning import encode_text, time_ids
    from lora_native.train.model import load_base_model
    device = torch.device(args.device)
    dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.precision]
    base = load_base_model(args.model)
    unet, vae = base.unet, base.vae
    targets = [t.module_path for t in lora_targets(base, text_encoder=False)]
    for m in [unet, vae] + list(base.text_encoders):
        m.requires_grad_(False)
    torch.manual_seed(1)
    unet.add_adapter(LoraConfig(r=args.rank, lora_alpha=args.rank, init_lora_weights="gaussian",
                                target_modules=targets))
    for m in [unet] + list(base.text_encoders):
        m.to(device)
        if dtype != torch.float32:
            m.to(dtype)
    vae.to(device)
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.float()
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    scan = train_data.scan_dataset(args.data)
    buckets = train_data.assign_buckets(scan.samples, resolution=(args.resolution, args.resolution))
    with torch.no_grad():
        pixels, kept, _ = train_data.load_batch(scan.samples, range(len(scan.samples)), buckets)
        latents = vae.encode(pixels.to(device)).latent_dist.mean * base.scaling_factor
    captions = [scan.samples[i].caption for i in kept]
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    acp = torch.cumprod(1 - betas, 0).float().to(device)
    g = torch.Generator().manual_seed(1)
    times = []
    for step in range(args.warmup + args.steps):
        idx = torch.randint(0, len(kept), (args.batch,), generator=g)
        lat = latents[idx]
        noise = torch.randn(lat.shape, generator=g).to(device)
        t = torch.randint(0, 1000, (args.batch,), generator=g).to(device)
        a = acp[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * lat + (1 - a).sqrt() * noise
        with torch.no_grad():  # the same text conditioning our loop computes (SD1.5 or SDXL)
            hidden, pooled = encode_text(base.kind, base.text_encoders, base.tokenizers,
                                         [captions[int(i)] for i in idx], 1, device)
        added = None
        if base.kind == "sdxl":
            size = (args.resolution, args.resolution)
            added = {"text_embeds": pooled, "time_ids": time_ids([size] * args.batch, [(0, 0)] * args.batch,
                                                                 [size] * args.batch, device)}
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            pred = unet(noisy.to(dtype), t, hidden.to(dtype), added_cond_kwargs=added).sample
        loss = torch.nn.functional.mse_loss(pred.float(), noise.float())
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter())
    return times


def child(args):
    import torch
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    torch.set_num_threads(os.cpu_count())
    times = run_ours(args) if args.mode == "ours" else run_plain(args)
    steady = times[args.warmup:]
    rate = (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 1 else float("nan")
    out = {"steps_per_s": rate, "peak_rss_mib": peak_rss_mib()}
    if args.device == "cuda":
        out["peak_vram_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    print("RESULT " + json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", default="sd15", choices=("sd15", "sdxl"))
    ap.add_argument("--full", choices=("sd15", "sdxl"), help="the full architecture with random weights")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--precision", default="no", choices=("no", "fp16", "bf16"))
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=2, help="alternating runs of each loop; the best is kept")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--mode", choices=("ours", "plain"), help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:
        return child(args)
    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no CUDA GPU here")
    kind = args.full or args.kind
    with tempfile.TemporaryDirectory() as folder:
        model, data = make_setup(folder, kind, bool(args.full), images=8, resolution=args.resolution)
        results = {"ours": [], "plain": []}
        for r in range(args.repeat):
            for mode in ("plain", "ours") if r % 2 else ("ours", "plain"):
                cmd = [sys.executable, __file__, "--mode", mode, "--model", model, "--data", data, "--out",
                       os.path.join(folder, "out-%s-%d" % (mode, r))] + [a for a in sys.argv[1:] if a != "--no-record"]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
                if proc.returncode != 0 or not line:
                    raise SystemExit("%s loop failed:\n%s" % (mode, proc.stderr[-3000:]))
                results[mode].append(json.loads(line[0][7:]))
    best = {m: max(v, key=lambda x: x["steps_per_s"]) for m, v in results.items()}
    what = "%s%s, %s, batch %d, %dx%d, rank %d, precision %s" % (
        "full " if args.full else "tiny ", kind, args.device, args.batch, args.resolution, args.resolution,
        args.rank, args.precision)
    table = ["| loop | steps/s (best of %d) | all runs | peak RSS (MiB)%s |" % (
        args.repeat, " | peak VRAM (MiB)" if args.device == "cuda" else ""), "|---|---:|---|---:|%s" % (
        "---:|" if args.device == "cuda" else "")]
    for mode, label in (("ours", "lora_native.train"), ("plain", "plain diffusers + peft loop")):
        b = best[mode]
        runs = ", ".join("%.2f" % x["steps_per_s"] for x in results[mode])
        table.append("| %s | %.2f | %s | %.0f |%s" % (label, b["steps_per_s"], runs, b["peak_rss_mib"], (
            " %.0f |" % b["peak_vram_mib"]) if "peak_vram_mib" in b else ""))
    ratio = best["ours"]["steps_per_s"] / best["plain"]["steps_per_s"]
    notes = ["- setup: %s; %d timed steps after %d warm-up steps, latents precomputed in both, text encoded every "
             "step, AdamW, grad clipping 1.0" % (what, args.steps, args.warmup),
             "- ratio (ours / plain, steps per second): %.2f" % ratio]
    from _common import append_section, machine_line
    import torch
    machine = machine_line(", torch %s" % torch.__version__)
    print("machine: " + machine)
    print("\n".join(table + notes))
    if not args.no_record:
        append_section("training speed vs a plain diffusers + peft loop", "bench_train.py", machine, table, notes)


if __name__ == "__main__":
    main()
