"""Native LoRA kernels against what users run today, in one process:

- merge: 3 LoRAs of rank 32 into the 192 SD1.5 UNet targets (fp16 weights), ours (one pass,
  lora_native.ops.merge_) vs the per-LoRA loop A1111 and ComfyUI's issue-era code use
  (`Wf = W.float(); Wf += s * (B.float() @ A.float()); W.copy_(Wf)` per LoRA) and vs ComfyUI's
  current order (W to fp32 once, every patch added, one copy back);
- switching: from {A, B} to {A, C} with a LoraStack (only the layers whose delta changes are
  restored from backup and re-merged) vs restoring every weight and re-merging the new set with
  the per-LoRA loop (what A1111 does when the set changes);
- fused branch: forward + backward of y + s * (x @ A^T) @ B^T at SD attention shapes, ours
  (lora_native.ops.lora_branch) vs the same math in plain torch autograd;
- AdamW over the SD1.5 LoRA tensors (rank 16): ours vs torch.optim.AdamW fused and foreach.

    python bench/bench_kernels.py                 # CPU
    python bench/bench_kernels.py --device cuda   # a GPU, when the build has CUDA kernels
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

import torch  # noqa: E402

from _common import append_section, machine_line, timed  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best(fn, repeat, device):
    def run():
        out = fn()
        sync(device)
        return out
    run()  # warm-up (allocator, threads, kernels)
    _, times = timed(run, repeat)
    return min(times), times


def sd15_target_shapes():
    """Shapes of the 192 SD1.5 UNet LoRA targets (full architecture on the meta device)."""
    from lora_native.configs import load_architecture
    from lora_native.formats.keymap import lora_targets
    from lora_native.train.model import build_components

    class Base:
        kind = "sd15"

    arch = load_architecture("sd15")
    comps = build_components(arch, "meta")
    base = Base()
    base.architecture = arch
    base.unet = comps["unet"]
    base.text_encoders = [comps["text_encoder"]]
    targets = lora_targets(base, conv_dim=False, unet=True, text_encoder=False)
    return [(t.key, tuple(t.module.weight.shape)) for t in targets]


def make_weights(shapes, device, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(s, generator=g) * 0.02).to(device, dtype) for _, s in shapes]


def make_lora(shapes, rank, device, seed, only=None):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, s in shapes:
        if only and only not in key:
            continue
        up = torch.randn((s[0], rank) + ((1, 1) if len(s) == 4 else ()), generator=g) * 0.01
        down = torch.randn((rank,) + s[1:], generator=g) * 0.01
        out[key] = (up.to(device, torch.float16), down.to(device, torch.float16))
    return out


def torch_loop_merge(weights, keys, loras, scales):
    """A1111 / ComfyUI per-LoRA merge: fp32 copy of W, add one LoRA, copy back, per LoRA."""
    with torch.no_grad():
        for w, key in zip(weights, keys):
            for lora, s in zip(loras, scales):
                if key not in lora:
                    continue
                up, down = lora[key]
                wf = w.float()
                wf += s * (up.float().flatten(1) @ down.float().flatten(1)).reshape(w.shape)
                w.copy_(wf)


def comfy_merge(weights, keys, loras, scales):
    """ComfyUI's order: W to fp32 once, every patch added, one copy back."""
    with torch.no_grad():
        for w, key in zip(weights, keys):
            wf = w.float()
            for lora, s in zip(loras, scales):
                if key in lora:
                    up, down = lora[key]
                    wf += s * torch.mm(up.float().flatten(1), down.float().flatten(1)).reshape(w.shape)
            w.copy_(wf)


def ours_merge(weights, keys, loras, scales):
    from lora_native import ops
    for w, key in zip(weights, keys):
        terms = [(lora[key][0], lora[key][1], s) for lora, s in zip(loras, scales) if key in lora]
        ops.merge_(w, terms)


def bench_merge(device, repeat, rows, notes):
    shapes = sd15_target_shapes()
    keys = [k for k, _ in shapes]
    weights = make_weights(shapes, device, torch.float16, 0)
    loras = [make_lora(shapes, 32, device, 10 + i) for i in range(3)]
    scales = [0.8, 0.6, 0.4]
    n_params = sum(w.numel() for w in weights)
    t_ours, all_ours = best(lambda: ours_merge(weights, keys, loras, scales), repeat, device)
    t_loop, all_loop = best(lambda: torch_loop_merge(weights, keys, loras, scales), repeat, device)
    t_comfy, all_comfy = best(lambda: comfy_merge(weights, keys, loras, scales), repeat, device)
    # accuracy of one merge of each, against float64
    base = make_weights(shapes, device, torch.float16, 0)
    worst = {"ours": 0.0, "per-LoRA loop": 0.0}
    for name, fn in (("ours", ours_merge), ("per-LoRA loop", torch_loop_merge)):
        ws = [w.clone() for w in base]
        fn(ws, keys, loras, scales)
        for w, w0, key in list(zip(ws, base, keys))[::16]:
            ref = w0.double() + sum(s * (lo[key][0].double().flatten(1) @ lo[key][1].double().flatten(1))
                                    for lo, s in zip(loras, scales)).reshape(w.shape)
            worst[name] = max(worst[name], (w.double() - ref).abs().max().item())
    del base
    rows.append("| merge 3 x rank 32 into 192 SD1.5 UNet fp16 weights (%.0fM params) | %.3f | %.3f | %.2fx |"
                % (n_params / 1e6, t_ours, t_loop, t_loop / t_ours))
    rows.append("| same, vs ComfyUI order (fp32 once, all patches, copy back) | %.3f | %.3f | %.2fx |"
                % (t_ours, t_comfy, t_comfy / t_ours))
    notes.append("- merge runs (s): ours %s; per-LoRA loop %s; ComfyUI order %s"
                 % (_fmt(all_ours), _fmt(all_loop), _fmt(all_comfy)))
    notes.append("- merge error vs float64 (every 16th layer, max abs): ours %.3g, per-LoRA loop %.3g "
                 "(the loop rounds W to fp16 once per LoRA, ours once)" % (worst["ours"], worst["per-LoRA loop"]))
    del weights
    return shapes, loras


def bench_switch(device, repeat, rows, notes, shapes, loras):
    from lora_native.apply import LoraStack, load_lora
    from lora_native.formats.keymap import key_map
    keys = [k for k, _ in shapes]
    entries = key_map("sd15").entries
    a = loras[0]

    def as_file(lora, label):
        sd = {}
        for k, (u, d) in lora.items():
            sd[k + ".lora_up.weight"], sd[k + ".lora_down.weight"] = u, d
            sd[k + ".alpha"] = torch.tensor(float(u.shape[1]))
        return load_lora(sd, kind="sd15", label=label)

    cases = [("B, C: every layer", loras[1], make_lora(shapes, 32, device, 99)),
             ("B, C: cross-attention only", make_lora(shapes, 32, device, 98, only="attn2"),
              make_lora(shapes, 32, device, 97, only="attn2"))]
    fa = as_file(a, "A")
    for label, lb, lc in cases:
        weights = make_weights(shapes, device, torch.float16, 1)
        # the model as ComfyUI names it (diffusion_model.<ldm path>.weight): only the targets
        model = {entries[k].comfy_key: w for k, w in zip(keys, weights)}
        fb, fc = as_file(lb, "B"), as_file(lc, "C")
        stack = LoraStack(model, kind="sd15")
        sets = ([(fa, 0.8), (fb, 0.6)], [(fa, 0.8), (fc, 0.6)])
        stack.set(sets[0])
        state = {"i": 0}

        def ours():
            state["i"] ^= 1
            stack.set(sets[state["i"]])

        t_ours, all_ours = best(ours, repeat, device)
        touched = stack.last_touched
        stack.clear()
        backups = [w.clone() for w in weights]
        cur = {"i": 0}

        def full():
            cur["i"] ^= 1
            with torch.no_grad():
                for w, bk in zip(weights, backups):
                    w.copy_(bk)
            torch_loop_merge(weights, keys, [a, lb if cur["i"] == 0 else lc], [0.8, 0.6])

        t_full, all_full = best(full, repeat, device)
        rows.append("| switch {A,B} <-> {A,C}, %s (%d layers touched) | %.3f | %.3f | %.2fx |"
                    % (label, touched, t_ours, t_full, t_full / t_ours))
        notes.append("- switch runs (s), %s: ours %s; restore all + per-LoRA loop %s"
                     % (label, _fmt(all_ours), _fmt(all_full)))
        del weights, model, backups, stack


def bench_branch(device, repeat, rows, notes, dtype, ranks):
    from lora_native import ops
    shapes = [(4096, 320), (1024, 640), (256, 1280), (64, 1280)]
    for tokens, dim in shapes:
        for r in ranks:
            g = torch.Generator().manual_seed(tokens + dim + r)
            x = torch.randn(2, tokens, dim, generator=g).to(device, dtype).requires_grad_()
            y = torch.randn(2, tokens, dim, generator=g).to(device, dtype)
            down = (torch.randn(r, dim, generator=g) * 0.05).to(device).requires_grad_()
            up = (torch.randn(dim, r, generator=g) * 0.05).to(device).requires_grad_()
            gy = torch.randn(2, tokens, dim, generator=g).to(device, dtype)

            def plain():
                h = x.to(torch.float32) @ down.t() if dtype != torch.float32 else x @ down.t()
                out = y + (0.5 * (h @ up.t())).to(dtype)
                out.backward(gy)

            def ours():
                out = ops.lora_branch(x, y.detach(), down, up, 0.5)  # a fresh leaf: in place, no history
                out.backward(gy)

            t_plain, _ = best(plain, repeat, device)
            t_ours, _ = best(ours, repeat, device)
            rows.append("| branch fwd+bwd %s, batch 2 x %d tokens, dim %d, rank %d | %.2f ms | %.2f ms | %.2fx |"
                        % (str(dtype).replace("torch.", ""), tokens, dim, r, t_ours * 1e3, t_plain * 1e3,
                           t_plain / t_ours))
    note = ("- branch: the base layer's own matmul is excluded from both; plain torch computes h in float32 "
            "(fp32 LoRA weights) and adds the cast result to y, as lora_native's torch path does")
    if note not in notes:
        notes.append(note)


def bench_adamw(device, repeat, rows, notes, shapes):
    from lora_native import ops
    g = torch.Generator().manual_seed(5)
    params = []
    for _, s in shapes:
        params.append(torch.randn((16,) + s[1:], generator=g).to(device).requires_grad_())
        params.append(torch.randn((s[0], 16) + ((1, 1) if len(s) == 4 else ()), generator=g).to(device)
                      .requires_grad_())
    n = sum(p.numel() for p in params)
    results = {}
    for name, make in (("ours", lambda ps: ops.AdamW(ps, lr=1e-4)),
                       ("torch fused", lambda ps: torch.optim.AdamW(ps, lr=1e-4, fused=True)),
                       ("torch foreach", lambda ps: torch.optim.AdamW(ps, lr=1e-4, foreach=True))):
        ps = [p.detach().clone().requires_grad_() for p in params]
        for p in ps:
            p.grad = torch.randn(p.shape, generator=g).to(device)
        opt = make(ps)
        results[name], _ = best(opt.step, repeat * 3, device)
    rows.append("| AdamW step, %d SD1.5 rank-16 LoRA tensors (%.1fM params), vs torch fused | %.2f ms | %.2f ms | "
                "%.2fx |" % (len(params), n / 1e6, results["ours"] * 1e3, results["torch fused"] * 1e3,
                             results["torch fused"] / results["ours"]))
    rows.append("| same, vs torch foreach | %.2f ms | %.2f ms | %.2fx |"
                % (results["ours"] * 1e3, results["torch foreach"] * 1e3, results["torch foreach"] / results["ours"]))


def _fmt(times):
    return ", ".join("%.3f" % t for t in times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", choices=("merge", "switch", "branch", "adamw"), action="append")
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to bench/RESULTS.md")
    args = ap.parse_args()
    device = torch.device(args.device)
    from lora_native import ops
    if ops.backend(device) == "torch":
        sys.exit("no native kernels for %s in this build: %s" % (device, ops.why_no_native(device)))
    only = set(args.only or ("merge", "switch", "branch", "adamw"))
    rows = ["| what | ours | theirs | ratio (theirs / ours time) |", "|---|---:|---:|---:|"]
    notes = []
    shapes, loras = None, None
    if "merge" in only or "switch" in only:
        shapes, loras = bench_merge(device, args.repeat, rows, notes)
        print("\n".join(rows))
    if "switch" in only:
        bench_switch(device, args.repeat, rows, notes, shapes, loras)
        print(rows[-1])
    loras = None
    if "branch" in only:
        bench_branch(device, args.repeat, rows, notes, torch.float32, (4, 32, 128))
        if device.type == "cuda":
            bench_branch(device, args.repeat, rows, notes, torch.float16, (4, 32, 128))
        else:
            bench_branch(device, args.repeat, rows, notes, torch.bfloat16, (32,))
    if "adamw" in only:
        bench_adamw(device, args.repeat, rows, notes, shapes or sd15_target_shapes())
    extra = ", torch %s" % torch.__version__
    if device.type == "cuda":
        extra += ", GPU %s" % torch.cuda.get_device_name(device)
    else:
        extra += ", torch threads %d" % torch.get_num_threads()
    machine = machine_line(extra)
    print("\n".join(rows))
    print("\n".join(notes))
    if not args.no_record:
        append_section("LoRA kernels on %s" % device.type, "bench_kernels.py", machine, rows,
                       notes + ["- times are the best of %d runs after one warm-up run" % args.repeat])


if __name__ == "__main__":
    main()
