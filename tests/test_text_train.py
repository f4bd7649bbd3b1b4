"""task_type: text-generation on tiny random LLaMA-style and GPT-2-style models (CPU): data formats
and their label masks, the loss, PEFT round trips, merge, exact resume, the CLI."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from lora_native.errors import UsageError
from lora_native.train import text_data
from lora_native.train.loop import Callbacks, TrainingError, TrainingInterrupted, train
from lora_native.train.lora import LoRANetwork
from lora_native.train.text import (TextTrainer, apply_peft_adapter, find_targets, linear_cross_entropy,
                                    load_causal_lm)
from builders.text_models import CORPUS, GENERATION_TEMPLATE, make_text_model, make_tokenizer, write_jsonl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IGNORE = text_data.IGNORE


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text_models")
    tok = make_tokenizer()
    return {"llama": make_text_model(str(folder / "llama"), "llama", tokenizer=tok),
            "gpt2": make_text_model(str(folder / "gpt2"), "gpt2", tokenizer=make_tokenizer(bos=False)),
            "tokenizer": tok}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("text_data")
    return write_jsonl(str(folder / "corpus.jsonl"), [{"text": t} for t in CORPUS])


def _cfg(model, data, out, **overrides):
    cfg = {"task_type": "text-generation", "base_model": str(model), "train_data_dir": str(data),
           "output_dir": str(out), "output_name": "lm", "batch_size": 4, "lora_rank": 4, "learning_rate": 1e-2,
           "max_train_steps": 4, "max_seq_length": 64, "seed": 7}
    cfg.update(overrides)
    return cfg


def _learned_runs(tok, ids, labels):
    """Decoded runs of consecutive learned tokens."""
    runs, cur = [], []
    for i, lab in zip(ids, labels):
        if lab != IGNORE:
            cur.append(int(i))
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    if cur:
        runs.append(tok.decode(cur))
    return runs


def _sample(tok, record, kind):
    ids, learned = text_data.tokenize_record(tok, kind, record)
    s = text_data._sequence(ids, learned, "x")
    return s.input_ids.tolist(), s.labels.tolist()


def _hf_loss(model, tok, texts):
    """transformers' own loss over plain texts (BOS + text + EOS, all learned)."""
    total, count = 0.0, 0
    with torch.no_grad():
        for t in texts:
            ids, learned = text_data.tokenize_record(tok, "text", t)
            x = torch.tensor([ids])
            n = len(ids) - 1
            total += float(model(input_ids=x, labels=x).loss) * n
            count += n
    return total / count


def _lora_model(base, checkpoint):
    """Our model in memory: the base with the checkpoint's float32 master weights applied."""
    model, tok = load_causal_lm(base)
    model.eval()
    targets, _ = find_targets(model)
    conf = json.loads(open(os.path.join(checkpoint, "adapter_config.json")).read())
    net = LoRANetwork(targets, conf["r"], conf["lora_alpha"])
    net.load_lora_state_dict(load_file(os.path.join(checkpoint, "state", "lora_fp32.safetensors")))
    net.eval()
    net.apply_to()
    return model, tok


# ---- data: formats and label masks ------------------------------------------------------

def test_chat_messages_learn_only_the_assistant_turns(models):
    tok = models["tokenizer"]
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "capital of france?"},
                {"role": "assistant", "content": "paris"}, {"role": "user", "content": "and spider legs?"},
                {"role": "assistant", "content": "eight"}]
    ids, labels = _sample(tok, messages, "chat")
    rendered = tok.apply_chat_template(messages, tokenize=False)
    assert tok.decode(ids) == rendered  # the template's own text, no BOS/EOS added
    assert _learned_runs(tok, ids, labels) == ["paris<|end|>\n", "eight<|end|>\n"]
    # exactly: learned where the token lies in an assistant turn's text, nothing else
    pos, spans = 0, []
    for m in messages:
        head = "<|%s|>" % m["role"]
        body = m["content"] + "<|end|>\n"
        if m["role"] == "assistant":
            spans.append((pos + len(head), pos + len(head) + len(body)))
        pos += len(head) + len(body)
    offsets = tok(rendered, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    mask = [any(s < b and e > a for a, b in spans) for s, e in offsets]
    assert [lab != IGNORE for lab in labels] == mask
    # a template with {% generation %} blocks that does not render prefix by prefix: the same mask
    gen = make_tokenizer(chat_template=GENERATION_TEMPLATE)
    ids2, labels2 = _sample(gen, messages, "chat")
    assert ids2 == ids and labels2 == labels


def test_prompt_completion_learns_only_the_completion(models):
    tok = models["tokenizer"]
    ids, labels = _sample(tok, ("what is the capital of france?", " paris is the capital."), "prompt-completion")
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert _learned_runs(tok, ids, labels) == [" paris is the capital.</s>"]
    assert tok.decode(ids[1:]) == "what is the capital of france? paris is the capital.</s>"
    ids, labels = _sample(tok, "a stitch in time", "text")
    assert labels[0] == IGNORE and all(lab != IGNORE for lab in labels[1:])


def test_bad_lines_are_reported_with_file_and_line_and_skipped(models, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(str(data / "a.jsonl"), [
        {"text": "a stitch in time"}, '{"text": "broken', {"text": 5}, {"prompt": "q"}, [1, 2],
        {"messages": [{"role": "user", "content": "hi"}]}, {"prompt": "q?", "completion": " yes"}, "",
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": 3}]}])
    (data / "m.csv").write_text("prompt,response\nhow are you?, fine\nonly one field\n,\n")
    (data / "notes.md").write_text("ignored")
    ds = text_data.load_text_dataset(str(data), models["tokenizer"], 64)
    bad = "\n".join(ds.bad)
    for where, words in (("a.jsonl:2", "invalid JSON"), ("a.jsonl:3", "'text' must be a string, found a number"),
                         ("a.jsonl:4", "expected 'text', 'prompt' + 'completion', or 'messages'"),
                         ("a.jsonl:5", "expected a JSON object, found a list"),
                         ("a.jsonl:6", "no assistant message"),
                         ("a.jsonl:9", "messages[1]: 'content' must be a string"),
                         ("m.csv:3", "1 fields, the header has 2")):
        assert "%s: %s" % (where, words) in bad, (where, bad)
    assert len(ds.bad) == 7 and len(ds.samples) == 3
    assert ds.kinds == {"text": 1, "prompt-completion": 2}
    assert "notes.md" in ds.warnings[0]
    # training goes on, the warnings say file:line
    result = train(_cfg(models["llama"], data, tmp_path / "out", max_train_steps=1))
    assert any(w.startswith("skipped a.jsonl:2: invalid JSON") for w in result.warnings)
    # nothing usable: a clear error
    empty = write_jsonl(str(tmp_path / "empty.jsonl"), ['{"nope": 1}', "not json"])
    with pytest.raises(TrainingError, match="no usable training sample .* 2 line\\(s\\) skipped, the first: "
                                            "empty.jsonl:1"):
        train(_cfg(models["llama"], empty, tmp_path / "out2"))


def test_txt_files_csv_and_truncation(models, tmp_path):
    tok = models["tokenizer"]
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.txt").write_text("the quick brown fox\njumps over\n\n\nthe lazy dog\n\n")
    (tmp_path / "t" / "b.txt").write_text("\ufeffall that glitters\n")
    whole = text_data.load_text_dataset(str(tmp_path / "t"), tok, 64)
    assert [tok.decode(s.input_ids[1:-1]) for s in whole.samples] == [
        "the quick brown fox\njumps over\n\n\nthe lazy dog", "all that glitters"]
    para = text_data.load_text_dataset(str(tmp_path / "t"), tok, 64, txt_split="paragraph")
    assert [tok.decode(s.input_ids[1:-1]) for s in para.samples] == [
        "the quick brown fox\njumps over", "the lazy dog", "all that glitters"]
    assert [s.source for s in para.samples] == ["a.txt:1", "a.txt:5", "b.txt:1"]
    csv_file = tmp_path / "metadata.csv"
    csv_file.write_text('prompt,response\n"what is the capital of france?"," paris"\n')
    ds = text_data.load_text_dataset(str(csv_file), tok, 64)
    assert _learned_runs(tok, ds.samples[0].input_ids, ds.samples[0].labels) == [" paris</s>"]
    cut = text_data.load_text_dataset(str(tmp_path / "t"), tok, 6, txt_split="paragraph")
    assert cut.truncated == 2 and all(len(s.input_ids) <= 6 for s in cut.samples)
    assert cut.longest == len(para.samples[0].input_ids)
    msg = text_data.summarize(cut, 6)
    assert any("2 of 3 sample(s) are longer than max_seq_length 6 tokens" in m for m in msg)
    # a prompt longer than max_seq_length leaves nothing to learn: skipped and said so
    pc = write_jsonl(str(tmp_path / "pc.jsonl"), [{"prompt": "the quick brown fox jumps over the lazy dog",
                                                   "completion": " yes"}])
    ds = text_data.load_text_dataset(pc, tok, 4)
    assert not ds.samples and "pc.jsonl:1: nothing left to learn within max_seq_length 4" in ds.bad[0]


def test_packing_keeps_samples_apart(models, corpus):
    tok = models["tokenizer"]
    ds = text_data.load_text_dataset(corpus, tok, 32)
    singles = list(ds.samples)
    packed = text_data.pack(singles, 32)
    assert len(packed) < len(singles) and sum(p.parts for p in packed) == len(singles)
    assert all(len(p.input_ids) <= 32 for p in packed)
    k = 0
    for p in packed:  # labels and positions restart with every sample; nothing learned across a boundary
        start = 0
        for s in singles[k:k + p.parts]:
            n = len(s.input_ids)
            assert p.labels[start] == IGNORE
            assert np.array_equal(p.labels[start:start + n], s.labels)
            assert np.array_equal(p.position_ids[start:start + n], np.arange(n))
            start += n
        k += p.parts
    # attention: a packed sample (and padding) sees nothing of the others
    model, _ = load_causal_lm(models["llama"])
    model.eval()
    ids, _, pos = (torch.from_numpy(a) for a in text_data.collate(packed[:2], 0))
    with torch.no_grad():
        logits = model(input_ids=ids, position_ids=pos, use_cache=False).logits
        start = 0
        for s in singles[:packed[0].parts]:
            alone = model(input_ids=torch.from_numpy(s.input_ids)[None]).logits[0]
            assert torch.allclose(logits[0, start:start + len(s.input_ids)], alone, atol=1e-5)
            start += len(s.input_ids)


def test_deterministic_order_and_validation_split(corpus, models):
    ds = text_data.load_text_dataset(corpus, models["tokenizer"], 64)
    a = text_data.epoch_batches(ds.samples, 3, 5, 0)
    assert a == text_data.epoch_batches(ds.samples, 3, 5, 0) and a != text_data.epoch_batches(ds.samples, 3, 5, 1)
    assert sorted(i for b in a for i in b) == list(range(len(ds.samples)))
    train_, val = text_data.split_validation(ds.samples, 0.25, 3)
    assert len(val) == 2 and len(train_) == 6
    assert [s.source for s in val] == [s.source for s in text_data.split_validation(ds.samples, 0.25, 3)[1]]


# ---- loss -------------------------------------------------------------------------------

@pytest.mark.parametrize("softcap", [None, 3.0])
def test_linear_cross_entropy_matches_the_plain_loss(softcap):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(37, 16, generator=g, requires_grad=True)
    w = torch.randn(50, 16, generator=g)
    b = torch.randn(50, generator=g)
    t = torch.randint(0, 50, (37,), generator=g)
    ours = linear_cross_entropy(h, w, b, t, softcap, chunk=8)
    (gh,) = torch.autograd.grad(ours * 3, h)
    logits = h @ w.t() + b
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    ref = torch.nn.functional.cross_entropy(logits, t)
    (rh,) = torch.autograd.grad(ref * 3, h)
    assert torch.allclose(ours, ref, atol=1e-5) and torch.allclose(gh, rh, atol=1e-6)


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_trainer_loss_is_transformers_loss(models, corpus, tmp_path, kind):
    from lora_native.config import Config
    t = TextTrainer(Config.from_dict(_cfg(models[kind], corpus, tmp_path / "out")), Callbacks())
    t.setup()
    t.model.eval()
    samples = t.samples[:3]
    ids, labels, pos = t._tensors(samples)
    with torch.no_grad():
        ours = float(t._lm_loss(ids, labels, pos))
        ref = float(t.model(input_ids=ids, position_ids=pos, labels=labels, use_cache=False).loss)
    assert t.fused_head and abs(ours - ref) < 1e-5, (ours, ref)
    # validation loss: per learned token, deterministic, the same whatever the batch size
    t.val_samples = samples
    first = t._validation_loss()
    assert first == t._validation_loss() and abs(first - _mean_token_loss(t.model, samples)) < 1e-5
    t.network.remove()


@pytest.mark.parametrize("kind", ["qwen2", "mistral", "gemma", "gemma2"])
def test_other_families_train_and_load_in_peft(corpus, tmp_path, kind):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from lora_native.config import Config
    # room above the tokenizer's ids: AutoTokenizer may pick the family's own class, which adds tokens
    base = make_text_model(str(tmp_path / kind), kind, tokenizer=make_tokenizer(), vocab_size=512)
    t = TextTrainer(Config.from_dict(_cfg(base, corpus, tmp_path / "probe")), Callbacks())
    t.setup()
    t.model.eval()
    ids, labels, pos = t._tensors(t.samples[:3])
    with torch.no_grad():  # the loss without full logits equals transformers' (Gemma 2: with its soft cap)
        ours, ref = float(t._lm_loss(ids, labels, pos)), float(t.model(input_ids=ids, position_ids=pos,
                                                                       labels=labels, use_cache=False).loss)
    assert t.fused_head and abs(ours - ref) < 1e-5, (ours, ref)
    assert t.softcap == (5.0 if kind == "gemma2" else None)
    t.network.remove()
    x = torch.tensor([t.tokenizer("the early bird catches the worm")["input_ids"]])
    result = train(_cfg(base, corpus, tmp_path / "out", max_train_steps=3))
    conf = json.loads(open(os.path.join(result.lora_path, "adapter_config.json")).read())
    assert conf["target_modules"] == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"])
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    with torch.no_grad():
        plain = model(x).logits
        peft = PeftModel.from_pretrained(model, result.lora_path).eval()
        via_peft = peft(x).logits
        ours, _ = _lora_model(base, result.checkpoints[-1])
        assert torch.allclose(via_peft, ours(x).logits, atol=1e-5)
        assert not torch.allclose(plain, via_peft, atol=1e-4)


def _mean_token_loss(model, samples):
    total, count = 0.0, 0
    with torch.no_grad():
        for s in samples:
            x, y = torch.from_numpy(s.input_ids)[None], torch.from_numpy(s.labels)[None]
            n = int((y[:, 1:] != IGNORE).sum())
            total += float(model(input_ids=x, labels=y).loss) * n
            count += n
    return total / count


# ---- training, export, PEFT -------------------------------------------------------------

def test_loss_falls_and_peft_loads_the_adapter(models, corpus, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    result = train(_cfg(models["llama"], corpus, tmp_path / "out", max_train_steps=40, lora_rank=8,
                        log_with="tensorboard", sample_prompts=["the quick"], sample_every_n_steps=40))
    out = tmp_path / "out" / "lm"
    assert result.lora_path == str(out) and result.task_type == "text-generation"
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= set(os.listdir(out))
    conf = json.loads((out / "adapter_config.json").read_text())
    assert (conf["peft_type"], conf["task_type"], conf["r"], conf["lora_alpha"], conf["fan_in_fan_out"]) == (
        "LORA", "CAUSAL_LM", 8, 8, False)
    assert conf["target_modules"] == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"])
    tensors = load_file(str(out / "adapter_model.safetensors"))
    assert len(tensors) == 2 * 7 * 2 and all(t.dtype == torch.float32 for t in tensors.values())
    assert tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].shape == (8, 32)
    assert tensors["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"].shape == (32, 8)
    # the checkpoint folder holds the same adapter (PEFT loads it too) and the state
    ck = tmp_path / "out" / "checkpoint-40"
    assert {"adapter_model.safetensors", "adapter_config.json", "state"} <= set(os.listdir(ck))
    # learning: transformers' own loss on the training texts, before and after
    base = AutoModelForCausalLM.from_pretrained(models["llama"]).eval()
    tok = models["tokenizer"]
    before = _hf_loss(base, tok, CORPUS)
    peft = PeftModel.from_pretrained(base, str(out)).eval()
    after = _hf_loss(peft, tok, CORPUS)
    assert after < 0.85 * before, (before, after)
    # PEFT's model and ours (float32 master weights in memory) give the same logits
    ours, _ = _lora_model(models["llama"], str(ck))
    x = torch.tensor([tok("the early bird catches the worm")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(peft(x).logits, ours(x).logits, atol=1e-5)
    # logs and samples
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tmp_path / "out" / "logs"))
    acc.Reload()
    assert {"loss", "lr", "tokens_per_s", "grad_norm"} <= set(acc.Tags()["scalars"])
    assert (tmp_path / "out" / "samples" / "lm_step000040.txt").read_text().startswith("### prompt 0\nthe quick\n")


def test_gpt2_conv1d_round_trip_and_merge(models, corpus, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    result = train(_cfg(models["gpt2"], corpus, tmp_path / "out", max_train_steps=6, merge_output=True,
                        lora_dropout=0.1))
    conf = json.loads((tmp_path / "out" / "lm" / "adapter_config.json").read_text())
    assert conf["fan_in_fan_out"] is True and conf["target_modules"] == ["c_attn", "c_fc", "c_proj"]
    assert conf["lora_dropout"] == 0.1
    tensors = load_file(str(tmp_path / "out" / "lm" / "adapter_model.safetensors"))
    assert tensors["base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"].shape == (4, 32)
    assert tensors["base_model.model.transformer.h.0.attn.c_attn.lora_B.weight"].shape == (96, 4)
    tok = make_tokenizer(bos=False)
    x = torch.tensor([tok("all that glitters is not gold")["input_ids"]])
    base = AutoModelForCausalLM.from_pretrained(models["gpt2"]).eval()
    with torch.no_grad():
        plain = base(x).logits
        peft = PeftModel.from_pretrained(base, result.lora_path).eval()
        via_peft = peft(x).logits
        ours, _ = _lora_model(models["gpt2"], result.checkpoints[-1])
        assert torch.allclose(via_peft, ours(x).logits, atol=1e-5)
        assert not torch.allclose(plain, via_peft, atol=1e-3)  # the adapter does something
        merged = AutoModelForCausalLM.from_pretrained(result.merged_path).eval()
        assert torch.allclose(merged(x).logits, via_peft, atol=1e-4)
    assert os.path.isfile(os.path.join(result.merged_path, "tokenizer.json"))
    assert json.load(open(os.path.join(result.merged_path, "config.json"))).get("use_cache", True) is True
    # lora-native inspect describes the adapter folder (and its weights file) as a PEFT adapter
    from lora_native.inspect import inspect_file
    text = inspect_file(result.lora_path)
    assert "format:      PEFT adapter (LORA, CAUSAL_LM)" in text and "(gpt2)" in text
    assert "targets:     c_attn, c_fc, c_proj" in text and "modules:     8" in text
    assert "layer 1                  4 modules  rank 4" in text and "lora_native.task_type: text-generation" in text
    assert inspect_file(os.path.join(result.lora_path, "adapter_model.safetensors"), show_metadata=False) == \
        text.split("\nmetadata:")[0]


def test_resume_gives_the_same_adapter(models, corpus, tmp_path):
    # GPT-2 (its own dropout on), both LoRA dropouts, accumulation, packing: every random draw must repeat
    common = dict(max_train_steps=6, batch_size=2, gradient_accumulation_steps=2, lora_dropout=0.1,
                  network_dropout=0.1, packing=True, max_seq_length=24, lr_scheduler="cosine")
    straight = train(_cfg(models["gpt2"], corpus, tmp_path / "a", **common))
    stop = {}
    cb = {"should_stop": lambda: stop.get("now", False), "on_step": lambda s: stop.update(now=s["step"] >= 3)}
    cfg = _cfg(models["gpt2"], corpus, tmp_path / "b", **common)
    with pytest.raises(TrainingInterrupted) as e:
        train(cfg, callbacks=cb)
    assert e.value.step == 3 and os.path.isfile(os.path.join(e.value.checkpoint, "adapter_model.safetensors"))
    resumed = train(cfg)
    assert resumed.steps == straight.steps == 6
    a = load_file(os.path.join(straight.checkpoints[-1], "state", "lora_fp32.safetensors"))
    b = load_file(os.path.join(resumed.checkpoints[-1], "state", "lora_fp32.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # a different network or data cannot resume
    with pytest.raises(TrainingError, match="max_seq_length"):
        train(dict(cfg, max_train_steps=8, max_seq_length=32))


def test_validation_is_deterministic_and_save_best_writes_an_adapter_folder(models, corpus, tmp_path):
    common = dict(max_train_steps=8, batch_size=2, validation_split=0.25, validate_every_n_steps=2, save_best=True,
                  save_steps=4, lora_dropout=0.1)
    logs = []
    first = train(_cfg(models["llama"], corpus, tmp_path / "a", **common),
                  callbacks={"on_log": lambda d: logs.append(d) if "val_loss" in d else None})
    second = train(_cfg(models["llama"], corpus, tmp_path / "b", **common))
    curve = [(d["step"], d["val_loss"]) for d in logs]
    assert [s for s, _ in curve] == [2, 4, 6, 8]
    assert first.best_loss == second.best_loss == min(v for _, v in curve)
    assert first.best_step == min(curve, key=lambda c: c[1])[0] == second.best_step
    assert first.last_loss == curve[-1][1]
    best = tmp_path / "a" / "lm-best"
    assert first.best_path == str(best)
    meta = safe_open(str(best / "adapter_model.safetensors"), "pt").metadata()
    assert meta["lora_native.best_step"] == str(first.best_step)
    assert float(meta["lora_native.best_validation_loss"]) == first.best_loss
    final_meta = safe_open(str(tmp_path / "a" / "lm" / "adapter_model.safetensors"), "pt").metadata()
    assert float(final_meta["lora_native.validation_loss"]) == first.last_loss
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(models["llama"]), str(best))
    # stopped at step 3 and resumed: the same validation losses and the same best
    stop = {}
    cb = {"should_stop": lambda: stop.get("now", False), "on_step": lambda s: stop.update(now=s["step"] >= 3)}
    cfg = _cfg(models["llama"], corpus, tmp_path / "c", **common)
    with pytest.raises(TrainingInterrupted):
        train(cfg, callbacks=cb)
    resumed = train(cfg)
    assert (resumed.best_step, resumed.best_loss, resumed.last_loss) == (first.best_step, first.best_loss,
                                                                         first.last_loss)


# Slow, so out of the sanitizer run: non-reentrant gradient checkpointing throws a C++ exception
# inside torch's saved-tensor hooks, which ASan's __cxa_throw interceptor (LD_PRELOADed into a
# Python that does not link libstdc++) aborts on.
@pytest.mark.slow
def test_targets_options_and_network_weights(models, corpus, tmp_path):
    model, _ = load_causal_lm(models["gpt2"])
    targets, written = find_targets(model, ("all-linear",))
    assert written == ["c_attn", "c_fc", "c_proj"] and all("lm_head" not in t.key for t in targets)
    with pytest.raises(UsageError, match="q_projj matches no layer .* end in: c_attn, c_fc, c_proj, lm_head"):
        find_targets(model, ("q_projj",))
    with pytest.raises(UsageError, match="wte \\(Embedding\\) is not a Linear layer"):
        find_targets(model, ("wte",))
    first = train(_cfg(models["llama"], corpus, tmp_path / "a", lora_target_modules=["q_proj", "v_proj"],
                       mixed_precision="bf16", gradient_checkpointing=True, max_train_steps=2))
    conf = json.loads(open(os.path.join(first.lora_path, "adapter_config.json")).read())
    assert conf["target_modules"] == ["q_proj", "v_proj"]
    assert np.isfinite(first.final_loss)
    # start from that adapter: with a learning rate of ~0, the weights stay
    second = train(_cfg(models["llama"], corpus, tmp_path / "b", lora_target_modules=["q_proj", "v_proj"],
                        network_weights=first.lora_path, learning_rate=1e-12, max_grad_norm=0, max_train_steps=1))
    a, b = load_file(os.path.join(first.lora_path, "adapter_model.safetensors")), load_file(
        os.path.join(second.lora_path, "adapter_model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.slow
def test_cli_train_merge_and_generate(models, corpus, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("task_type: text-generation\nbase_model: %s\ntrain_data_dir: %s\noutput_dir: %s\n"
                   "output_name: cli\nmax_seq_length: 512\nlora_rank: 4\nmax_train_steps: 2\nresolution: 512\n"
                   % (models["llama"], corpus, tmp_path / "out"))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--config", str(cfg), "--merge"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "resolution: ignored for task_type text-generation" in r.stderr
    assert "adapter: %s" % (tmp_path / "out" / "cli") in r.stdout
    assert "merged model: %s" % (tmp_path / "out" / "cli-merged") in r.stdout
    r = subprocess.run([sys.executable, "-m", "lora_native", "generate", "--base", models["llama"], "--lora",
                        str(tmp_path / "out" / "cli"), "--prompt", "the quick", "--max-new-tokens", "5",
                        "--temperature", "0.8", "--seed", "3"], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and r.stdout.strip(), r.stderr
    r2 = subprocess.run([sys.executable, "-m", "lora_native", "generate", "--base", models["llama"], "--lora",
                         str(tmp_path / "out" / "cli"), "--prompt", "hello", "--chat", "--max-new-tokens", "3"],
                        capture_output=True, text=True, env=env)
    assert r2.returncode == 0, r2.stderr
    r3 = subprocess.run([sys.executable, "-m", "lora_native", "generate", "--base", str(tmp_path)],
                        capture_output=True, text=True, env=env)
    assert r3.returncode == 2 and "not a Hugging Face model folder" in r3.stderr


def test_native_kernels_train_like_the_torch_path(models, corpus, tmp_path):
    common = dict(max_train_steps=3, lora_dropout=0.1, network_dropout=0.1)
    out = {}
    for native in (False, True):
        r = train(_cfg(models["gpt2"], corpus, tmp_path / str(native), native_kernels=native, **common))
        out[native] = load_file(os.path.join(r.checkpoints[-1], "state", "lora_fp32.safetensors"))
    a, b = out[False], out[True]
    worst = max(((a[k] - b[k]).abs().max() / a[k].abs().max().clamp_min(1e-12)).item() for k in a)
    assert worst < 1e-3, worst  # float32 summation order only
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the fused branch really ran (Conv1D layers too)


def test_merged_model_keeps_the_base_dtype(corpus, tmp_path):
    from safetensors import safe_open
    base = make_text_model(str(tmp_path / "bf16"), "llama", dtype=torch.bfloat16)
    result = train(_cfg(base, corpus, tmp_path / "out", max_train_steps=1, merge_output=True))
    with safe_open(os.path.join(result.merged_path, "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
