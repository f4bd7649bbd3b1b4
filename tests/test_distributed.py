"""Data-parallel training on the CPU: 2 gloo processes started through accelerate train the tiny
SD model and the tiny LM; the LoRA equals a 1-process run with the same global batch, only the
main process writes and reports, and a 2-process checkpoint resumes in 1 process.

Tolerance: the 2-process gradient is the mean of two half-batch gradients instead of one
full-batch gradient, so sums are ordered differently (float32 rounding, ~1e-7 relative); AdamW
divides by sqrt(v), which lifts such differences in near-zero gradients. After 4 steps the
fp32 LoRA weights agree to 1e-4 absolute (measured: 1.3e-5 for the tiny SD model, whose LoRA
weights are of order 1, and 5.8e-7 for the tiny LM)."""
import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lora_native.train.loop import train
from builders.models import make_tiny_model
from builders.text_models import CORPUS, make_text_model, make_tokenizer, write_jsonl
from builders.training import make_image_folder, tiny_config

pytestmark = pytest.mark.slow  # each launch starts two Python processes with torch (seconds)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-4


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        p for p in (os.environ.get("PYTHONPATH"), ROOT) if p))
    env.pop("WORLD_SIZE", None)
    return env


def _yaml(path, cfg):
    with open(path, "w") as f:
        yaml.safe_dump({k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}, f)
    return str(path)


def _run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def _weights(checkpoint):
    return load_file(os.path.join(checkpoint, "state", "lora_fp32.safetensors"))


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist_sd")
    return make_tiny_model(str(folder / "sd15.safetensors"), "sd15"), make_image_folder(str(folder / "data"), count=8)


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dist_lm")
    model = make_text_model(str(folder / "llama"), "llama", tokenizer=make_tokenizer())
    return model, write_jsonl(str(folder / "corpus.jsonl"), [{"text": t} for t in CORPUS])


def test_two_processes_train_the_sd_lora_of_one_process_with_the_global_batch(sd, tmp_path):
    model, data = sd
    # 8 images, 2 held out: each epoch is a global batch of 4 and one of 2 (the second process gets nothing)
    common = dict(max_train_steps=4, flip_aug=True, shuffle_caption=True, noise_offset=0.05, save_steps=2,
                  log_with="tensorboard", validation_split=0.25, save_best=True)
    one = train(tiny_config(model, data, tmp_path / "one", batch_size=4, **common))
    cfg = _yaml(tmp_path / "two.yaml", tiny_config(model, data, tmp_path / "two", batch_size=2, **common))
    r = _run([sys.executable, "-m", "lora_native", "train", "--config", cfg, "--num-processes", "2"])
    out = r.stdout + r.stderr
    assert out.count("trained 4 steps") == 1 and out.count("step 4/4") == 1  # reported once
    two = tmp_path / "two"
    assert _max_diff(_weights(one.checkpoints[-1]), _weights(two / "checkpoint-4")) < TOLERANCE
    state = json.loads((two / "checkpoint-4" / "state" / "training_state.json").read_text())
    assert (state["num_processes"], state["global_batch_size"], state["epoch"]) == (2, 4, 2)
    # validation shared out between the processes: the same losses, the same best step
    v1 = json.loads(open(os.path.join(one.checkpoints[-1], "state", "training_state.json")).read())["validation"]
    v2 = state["validation"]
    assert v1["best_step"] == v2["best_step"] and abs(v1["loss"] - v2["loss"]) < 1e-5 * abs(v1["loss"])
    # one process wrote: one TensorBoard file, no stray temporary folders
    assert len(os.listdir(two / "logs")) == 1
    assert sorted(os.listdir(two)) == ["checkpoint-2", "checkpoint-4", "logs", "tiny-best.safetensors",
                                       "tiny.safetensors"]


def test_two_processes_train_the_lm_lora_of_one_process_through_accelerate_launch(lm, tmp_path):
    model, corpus = lm
    common = dict(task_type="text-generation", base_model=str(model), train_data_dir=str(corpus), output_name="lm",
                  lora_rank=4, learning_rate=1e-2, max_train_steps=4, max_seq_length=64, seed=7,
                  gradient_accumulation_steps=2, validation_split=0.25)
    one = train(dict(common, output_dir=str(tmp_path / "one"), batch_size=4))
    cfg = _yaml(tmp_path / "two.yaml", dict(common, output_dir=str(tmp_path / "two"), batch_size=2))
    # the command the README gives, as users run it
    r = _run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
              str(_port()), "train.py", "--config", cfg])
    assert (r.stdout + r.stderr).count("adapter: ") == 1
    assert _max_diff(_weights(one.checkpoints[-1]), _weights(tmp_path / "two" / "checkpoint-4")) < TOLERANCE
    assert os.path.isfile(tmp_path / "two" / "lm" / "adapter_model.safetensors")
    v2 = json.loads((tmp_path / "two" / "checkpoint-4" / "state" / "training_state.json").read_text())["validation"]
    assert abs(one.last_loss - v2["loss"]) < 1e-5 * one.last_loss


def _port():
    from lora_native.train.distributed import free_port
    return free_port()


def test_a_two_process_checkpoint_resumes_in_one_process(sd, tmp_path):
    model, data = sd
    out = tmp_path / "out"
    # 8 images: 2 global batches of 4 an epoch with 2 processes; stopped after the first
    cfg = _yaml(tmp_path / "two.yaml", tiny_config(model, data, out, batch_size=2, max_train_steps=1))
    _run([sys.executable, "-m", "lora_native", "train", "--config", cfg, "--num-processes", "2"])
    logs = []
    # one process, batch 2: 4 batches an epoch; the 4 images trained count as 2 of them
    result = train(tiny_config(model, data, out, batch_size=2, max_train_steps=None, epochs=2),
                   callbacks={"on_log": logs.append})
    warned = [w for w in result.warnings if "effective batch changes from 4 to 2" in w]
    assert warned and "written by 2 process(es) and this run has 1" in warned[0]
    assert any("resuming at epoch 1, batch 2 of 4" in d.get("info", "") for d in logs)
    assert result.steps == 1 + 2 + 4 and result.epochs == 2
    state = json.loads((out / "checkpoint-7" / "state" / "training_state.json").read_text())
    assert (state["num_processes"], state["global_batch_size"]) == (1, 2)
    w = _weights(out / "checkpoint-7")
    assert all(torch.isfinite(t).all() for t in w.values())
