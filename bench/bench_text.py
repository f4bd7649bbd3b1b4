"""Text (causal-LM) LoRA training speed and memory: lora_native.train (task_type: text-generation)
against a plain transformers + peft loop doing the same work (same LLaMA-shaped model with random
weights, same data, batch, sequence length, rank, targets, optimizer, steps), each run in its own
process for a clean peak-memory reading, alternating, best of --repeat.

    python bench/bench_text.py                             # tiny LLaMA-shaped model on the CPU
    python bench/bench_text.py --no-record --steps 4
    python bench/bench_text.py --device cuda --size 0.5b   # 0.5B LLaMA-shaped (Qwen2.5-0.5B sizes), seq 512, bf16

The plain loop is what a transformers user writes: get_peft_model(LoraConfig(...)), then
model(input_ids, attention_mask, labels).loss, backward, clip, AdamW. Ours computes the loss from
the hidden states through the output layer a chunk at a time (never the [B, T, vocab] float32
logits); everything else is the same work.
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

SIZES = {
    # hidden, layers, heads, kv heads, intermediate, vocab
    "tiny": (256, 4, 8, 4, 688, 32000),
    "0.5b": (896, 24, 14, 2, 4864, 151936),  # Qwen2.5-0.5B's shape in a LLaMA graph (494M parameters)
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
WORDS = ("the quick brown fox jumps over the lazy dog a stitch in time saves nine all that glitters is not gold "
         "the early bird catches the worm practice makes perfect knowledge is power").split()


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_setup(folder, size, samples, seq):
    """A random LLaMA-shaped model (save_pretrained), a small BPE tokenizer, and `samples` texts
    longer than `seq` tokens (so every sequence is cut to exactly seq tokens)."""
    import random

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from builders.text_models import make_tokenizer, write_jsonl
    hidden, layers, heads, kv, inter, vocab = SIZES[size]
    tok = make_tokenizer(extra_text=[" ".join(WORDS)], vocab_size=600)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                         num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=4096,
                         tie_word_embeddings=size == "0.5b", bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    with torch.device("cpu"):
        model = LlamaForCausalLM(config)
    if size != "tiny":
        model.to(torch.bfloat16)
    path = os.path.join(folder, "model-" + size)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    del model
    rng = random.Random(0)
    rows = [{"text": " ".join(rng.choice(WORDS) for _ in range(seq * 2))} for _ in range(samples)]
    data = write_jsonl(os.path.join(folder, "data.jsonl"), rows)
    return path, data


def run_ours(args):
    from lora_native.train.loop import train
    times = []
    cfg = {"task_type": "text-generation", "base_model": args.model, "train_data_dir": args.data,
           "output_dir": args.out, "output_name": "bench", "batch_size": args.batch, "lora_rank": args.rank,
           "lora_alpha": args.rank, "learning_rate": 1e-4, "max_train_steps": args.warmup + args.steps,
           "max_seq_length": args.seq, "mixed_precision": args.precision, "device": args.device, "seed": 1,
           "resume": "never", "gradient_checkpointing": args.gradient_checkpointing, "lora_target_modules": TARGETS}

    def on_step(s):
        if args.device == "cuda":
            import torch
            torch.cuda.synchronize()
        times.append(time.perf_counter())
    train(cfg, callbacks={"on_step": on_step})
    return times


def run_plain(args):
    """transformers + peft, as their docs show it."""
    import json as json_

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    device = torch.device(args.device)
    dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.precision]
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).to(device)
    model.config.use_cache = False
    torch.manual_seed(1)
    model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=args.rank, lora_dropout=0.0,
                                             target_modules=TARGETS, task_type="CAUSAL_LM"))
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    with open(args.data) as f:
        texts = [json_.loads(line)["text"] for line in f]
    enc = [tok(t + tok.eos_token, truncation=True, max_length=args.seq)["input_ids"] for t in texts]
    g = torch.Generator().manual_seed(1)
    times = []
    for step in range(args.warmup + args.steps):
        idx = torch.randint(0, len(enc), (args.batch,), generator=g).tolist()
        n = max(len(enc[i]) for i in idx)
        ids = torch.full((args.batch, n), tok.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros((args.batch, n), dtype=torch.long)
        for b, i in enumerate(idx):
            ids[b, :len(enc[i])] = torch.tensor(enc[i])
            mask[b, :len(enc[i])] = 1
        labels = ids.masked_fill(mask == 0, -100)
        ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
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
    torch.set_num_threads(args.threads or os.cpu_count())
    times = run_ours(args) if args.mode == "ours" else run_plain(args)
    steady = times[args.warmup:]
    rate = (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 1 else float("nan")
    out = {"steps_per_s": rate, "peak_rss_mib": peak_rss_mib()}
    if args.device == "cuda":
        out["peak_vram_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    print("RESULT " + json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default=None, choices=sorted(SIZES), help="default: tiny on the CPU, 0.5b on cuda")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--precision", default=None, choices=("no", "fp16", "bf16"), help="default: no (CPU), bf16 (cuda)")
    ap.add_argument("--seq", type=int, default=None, help="tokens per sequence (default 256 on the CPU, 512 on cuda)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3, help="alternating runs of each loop; the best is kept")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: all cores; 1 gives steadier "
                                                          "figures on a shared machine)")
    ap.add_argument("--no-record", action="store_true")
    ap.add_argument("--mode", choices=("ours", "plain"), help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.size = args.size or ("0.5b" if args.device == "cuda" else "tiny")
    args.precision = args.precision or ("bf16" if args.device == "cuda" else "no")
    args.seq = args.seq or (512 if args.device == "cuda" else 256)
    if args.mode:
        return child(args)
    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no CUDA GPU here")
    passed = [a for a in sys.argv[1:] if a != "--no-record"]
    with tempfile.TemporaryDirectory() as folder:
        model, data = make_setup(folder, args.size, samples=64, seq=args.seq)
        results = {"ours": [], "plain": []}
        for r in range(args.repeat):
            for mode in ("plain", "ours") if r % 2 else ("ours", "plain"):
                cmd = [sys.executable, __file__, "--mode", mode, "--model", model, "--data", data, "--out",
                       os.path.join(folder, "out-%s-%d" % (mode, r)), "--size", args.size, "--precision",
                       args.precision, "--seq", str(args.seq)] + passed
                proc = subprocess.run(cmd, capture_output=True, text=True)
                line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
                if proc.returncode != 0 or not line:
                    raise SystemExit("%s loop failed:\n%s" % (mode, proc.stderr[-3000:]))
                results[mode].append(json.loads(line[0][7:]))
                print(mode, results[mode][-1], flush=True)
    tokens = args.batch * args.seq
    best = {m: max(v, key=lambda x: x["steps_per_s"]) for m, v in results.items()}
    least = {m: min(x["peak_rss_mib"] for x in v) for m, v in results.items()}
    cuda = args.device == "cuda"
    table = ["| loop | tokens/s (best of %d) | all runs (tokens/s) | peak RSS (MiB), lowest | %s" % (
        args.repeat, "peak VRAM (MiB) |" if cuda else ""), "|---|---:|---|---:|%s" % ("---:|" if cuda else "")]
    for mode, label in (("ours", "lora_native.train (text-generation)"), ("plain", "plain transformers + peft loop")):
        b = best[mode]
        runs = ", ".join("%.0f" % (x["steps_per_s"] * tokens) for x in results[mode])
        table.append("| %s | %.0f | %s | %.0f |%s" % (label, b["steps_per_s"] * tokens, runs, least[mode], (
            " %.0f |" % min(x["peak_vram_mib"] for x in results[mode])) if cuda else ""))
    hidden, layers, heads, kv, inter, vocab = SIZES[args.size]
    notes = ["- setup: %s LLaMA-shaped model with random weights (hidden %d, %d layers, %d/%d heads, MLP %d, vocab %d), "
             "%s, precision %s, batch %d x %d tokens, LoRA rank %d on %s, AdamW, grad clipping 1.0%s; %d timed "
             "steps after %d warm-up steps; every sequence is full (no padding, every token learned)" % (
                 args.size, hidden, layers, heads, kv, inter, vocab, args.device, args.precision, args.batch,
                 args.seq, args.rank, ",".join(TARGETS), ", gradient checkpointing" if args.gradient_checkpointing
                 else "", args.steps, args.warmup) + (", torch threads %d" % (args.threads or os.cpu_count())),
             "- ratio (ours / plain): %.2f x the tokens per second, %.2f x the peak RSS%s" % (
                 best["ours"]["steps_per_s"] / best["plain"]["steps_per_s"], least["ours"] / least["plain"],
                 (", %.2f x the peak VRAM" % (min(x["peak_vram_mib"] for x in results["ours"])
                                              / min(x["peak_vram_mib"] for x in results["plain"]))) if cuda else "")]
    from _common import append_section, machine_line
    import peft
    import torch
    import transformers
    machine = machine_line(", torch %s, transformers %s, peft %s" % (torch.__version__, transformers.__version__,
                                                                    peft.__version__))
    print("machine: " + machine)
    print("\n".join(table + notes))
    if not args.no_record:
        append_section("text LoRA training vs a plain transformers + peft loop", "bench_text.py", machine, table,
                       notes)


if __name__ == "__main__":
    main()
