"""Training on tiny SD1.5-like and SDXL-like models on the CPU: learning, exact resume,
interruption, export format, logging, and the failure paths."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import lora_native
from lora_native.errors import ConfigError, UsageError
from lora_native.formats import keymap
from lora_native.formats.kohya import model_hashes
from lora_native.train.lora import LoRANetwork
from lora_native.train.loop import TrainingError, TrainingInterrupted, train
from lora_native.train.model import load_base_model
from builders.models import make_tiny_model
from builders.training import make_image_folder, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow  # minutes in all; left out of the sanitizer run (make test-asan)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_train")
    models = {kind: make_tiny_model(str(folder / ("%s.safetensors" % kind)), kind) for kind in ("sd15", "sdxl")}
    data = make_image_folder(str(folder / "data"), count=4)
    return models, data


def _lora_fp32(checkpoint):
    return load_file(os.path.join(checkpoint, "state", "lora_fp32.safetensors"))


def test_loss_falls_when_overfitting_four_images(tiny, tmp_path):
    from lora_native.train import data as train_data
    from lora_native.train.validate import evaluation_loss
    models, data = tiny
    cfg = tiny_config(models["sd15"], data, tmp_path / "out", max_train_steps=80, lora_rank=8, learning_rate=3e-3,
                      batch_size=4)
    result = train(cfg)
    base = load_base_model(models["sd15"])
    scan = train_data.scan_dataset(data)
    buckets = train_data.assign_buckets(scan.samples, resolution=(64, 64))
    before = evaluation_loss(base, scan.samples, buckets)
    net = LoRANetwork(keymap.lora_targets(base, text_encoder=False), 8, 8)
    net.load_lora_state_dict(load_file(result.lora_path))
    net.apply_to()
    after = evaluation_loss(base, scan.samples, buckets)
    assert after < before * 0.9, (before, after)


def test_zero_up_weights_leave_the_model_unchanged(tiny):
    models, _ = tiny
    base = load_base_model(models["sd15"])
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ctx = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = base.unet(x, torch.tensor([500]), ctx).sample
        net = LoRANetwork(keymap.lora_targets(base, conv_dim=True), 4, 4, conv_rank=4, conv_alpha=4)
        net.apply_to()
        with_lora = base.unet(x, torch.tensor([500]), ctx).sample
        net.layers[0].lora_up.weight.fill_(0.01)
        changed = base.unet(x, torch.tensor([500]), ctx).sample
        net.remove()
        restored = base.unet(x, torch.tensor([500]), ctx).sample
    assert torch.equal(plain, with_lora)
    assert not torch.equal(plain, changed)
    assert torch.equal(plain, restored)


def test_exported_file_is_kohya_format_with_metadata(tiny, tmp_path):
    models, data = tiny
    result = train(tiny_config(models["sd15"], data, tmp_path / "out", train_text_encoder=True, trigger_word="sks"))
    assert result.lora_path == str(tmp_path / "out" / "tiny.safetensors")
    tensors = load_file(result.lora_path)
    base = load_base_model(models["sd15"])
    expected = {t.key for t in keymap.lora_targets(base, text_encoder=True)}
    modules = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in tensors}
    assert modules == expected
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q" in modules
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj" in modules
    assert all(t.dtype == torch.float16 for t in tensors.values())
    assert tensors["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"].shape[0] == 4
    assert tensors["lora_unet_down_blocks_0_attentions_0_proj_in.alpha"].ndim == 0
    with safe_open(result.lora_path, "pt") as f:
        meta = f.metadata()
    assert meta["ss_network_module"] == "networks.lora" and meta["ss_network_dim"] == "4"
    assert meta["ss_base_model_version"] == "sd_v1" and meta["ss_output_name"] == "tiny"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert meta["ss_steps"] == "6" and meta["ss_num_train_images"] == "4"
    tags = json.loads(meta["ss_tag_frequency"])
    assert tags[os.path.basename(data)]["sks"] == 4
    assert json.loads(meta["ss_dataset_dirs"])[os.path.basename(data)]["img_count"] == 4
    assert float(meta["ss_training_finished_at"]) >= float(meta["ss_training_started_at"])
    model_hash, legacy = model_hashes(tensors, meta)
    assert meta["sshs_model_hash"] == model_hash and meta["sshs_legacy_hash"] == legacy
    with open(result.lora_path, "rb") as f:
        raw = f.read()
    import hashlib
    n = int.from_bytes(raw[:8], "little")
    assert hashlib.sha256(raw[8 + n:]).hexdigest() == meta["sshs_model_hash"]


def test_sdxl_trains_and_exports_ldm_names(tiny, tmp_path):
    models, data = tiny
    result = train(tiny_config(models["sdxl"], data, tmp_path / "out", train_text_encoder=True, conv_lora=True,
                               conv_dim=2, max_train_steps=3))
    tensors = load_file(result.lora_path)
    names = {k.split(".")[0] for k in tensors}
    assert any(n.startswith("lora_unet_input_blocks_4_1_transformer_blocks_0_") for n in names)
    assert any(n.startswith("lora_te1_text_model_encoder_layers_") for n in names)
    assert any(n.startswith("lora_te2_text_model_encoder_layers_") for n in names)
    conv = [k for k, v in tensors.items() if k.endswith("lora_down.weight") and v.ndim == 4 and v.shape[2] == 3]
    assert conv and all(tensors[k].shape[0] == 2 for k in conv)
    with safe_open(result.lora_path, "pt") as f:
        meta = f.metadata()
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert json.loads(meta["ss_network_args"]) == {"conv_dim": "2", "conv_alpha": "2.0"}


def test_resume_is_exact(tiny, tmp_path):
    models, data = tiny
    straight = train(tiny_config(models["sd15"], data, tmp_path / "a", max_train_steps=10, network_dropout=0.1,
                                 shuffle_caption=True, flip_aug=True))
    stop_at = {"step": 5}
    cb = {"should_stop": lambda: stop_at.get("now", False),
          "on_step": lambda s: stop_at.update(now=s["step"] >= stop_at["step"])}
    cfg_b = tiny_config(models["sd15"], data, tmp_path / "b", max_train_steps=10, network_dropout=0.1,
                        shuffle_caption=True, flip_aug=True)
    with pytest.raises(TrainingInterrupted) as stopped:
        train(cfg_b, callbacks=cb)
    assert stopped.value.step == 5 and os.path.isdir(stopped.value.checkpoint)
    resumed = train(cfg_b)
    assert resumed.steps == straight.steps == 10
    a, b = _lora_fp32(straight.checkpoints[-1]), _lora_fp32(resumed.checkpoints[-1])
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_refuses_a_different_network(tiny, tmp_path):
    models, data = tiny
    out = tmp_path / "out"
    train(tiny_config(models["sd15"], data, out, max_train_steps=2))
    with pytest.raises(TrainingError, match="lora_rank"):
        train(tiny_config(models["sd15"], data, out, max_train_steps=4, lora_rank=8))
    # starting over never deletes an earlier run's checkpoints: it asks for another folder
    with pytest.raises(TrainingError, match="already holds checkpoints"):
        train(tiny_config(models["sd15"], data, out, max_train_steps=4, lora_rank=8, resume="never"))
    result = train(tiny_config(models["sd15"], data, tmp_path / "fresh", max_train_steps=4, lora_rank=8,
                               resume="never"))
    assert result.steps == 4


def test_resume_refuses_a_changed_dataset_and_takes_new_learning_rates(tiny, tmp_path):
    models, _ = tiny
    data = make_image_folder(str(tmp_path / "data"), count=4)
    out = tmp_path / "out"
    train(tiny_config(models["sd15"], data, out, max_train_steps=2))
    make_image_folder(str(tmp_path / "data"), count=4, seed=50)  # same names, other pictures
    with pytest.raises(TrainingError, match="changed since"):
        train(tiny_config(models["sd15"], data, out, max_train_steps=4))
    make_image_folder(str(tmp_path / "data"), count=4)  # the original set again
    lrs = []
    result = train(tiny_config(models["sd15"], data, out, max_train_steps=4, learning_rate=5e-4),
                   callbacks={"on_step": lambda s: lrs.append(s["lr/unet"])})
    assert result.steps == 4 and lrs == [5e-4, 5e-4]


def test_v_prediction_model_trains_with_the_v_objective(tiny, tmp_path):
    from safetensors.torch import save_file
    models, data = tiny
    tensors = load_file(models["sd15"])
    with safe_open(models["sd15"], "pt") as f:
        meta = dict(f.metadata())
    meta["modelspec.prediction_type"] = "v"
    vpred = tmp_path / "vpred.safetensors"
    save_file(tensors, str(vpred), metadata=meta)
    os.symlink(os.path.splitext(models["sd15"])[0] + ".tokenizer", str(tmp_path / "vpred.tokenizer"))
    result = train(tiny_config(vpred, data, tmp_path / "out", max_train_steps=1))
    with safe_open(result.lora_path, "pt") as f:
        assert f.metadata()["ss_v_parameterization"] == "True"
        assert f.metadata()["modelspec.prediction_type"] == "v"


def test_checkpoints_every_save_steps_and_keep_last(tiny, tmp_path):
    models, data = tiny
    out = tmp_path / "out"
    result = train(tiny_config(models["sd15"], data, out, max_train_steps=8, save_steps=2, save_last_n_checkpoints=2))
    names = sorted(os.listdir(out))
    assert [n for n in names if n.startswith("checkpoint-")] == ["checkpoint-6", "checkpoint-8"]
    for ck in ("checkpoint-6", "checkpoint-8"):
        files = os.listdir(out / ck)
        assert "state" in files and any(f.endswith(".safetensors") for f in files)
    assert not [n for n in names if n.startswith(".")]  # no temporary folders left
    assert result.steps == 8


def test_gradient_checkpointing_still_trains_the_lora(tiny, tmp_path):
    models, data = tiny
    result = train(tiny_config(models["sd15"], data, tmp_path / "out", max_train_steps=2,
                               gradient_checkpointing=True, train_text_encoder=True))
    tensors = load_file(result.lora_path)
    ups = [v for k, v in tensors.items() if k.endswith("lora_up.weight")]
    assert all(float(v.float().abs().max()) > 0 for v in ups)  # every adapter got gradients


def test_tensorboard_events_are_readable(tiny, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    models, data = tiny
    out = tmp_path / "out"
    train(tiny_config(models["sd15"], data, out, max_train_steps=4, log_with="tensorboard"))
    acc = EventAccumulator(str(out / "logs"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"loss", "lr/unet", "grad_norm"} <= set(tags)
    assert [e.step for e in acc.Scalars("loss")] == [1, 2, 3, 4]


def test_nan_loss_stops_with_a_clear_message(tiny, tmp_path):
    models, data = tiny
    with pytest.raises(TrainingError, match="loss became"):
        train(tiny_config(models["sd15"], data, tmp_path / "out", learning_rate=1e30, max_train_steps=20,
                          max_grad_norm=0))


def test_a_broken_image_is_skipped_not_fatal(tiny, tmp_path):
    import shutil
    models, _ = tiny
    data = make_image_folder(str(tmp_path / "data"), count=4)

    def on_start(info):  # the file changes after the scan: loading must refuse it and go on
        with open(os.path.join(data, "img_01.png"), "r+b") as f:
            f.truncate(100)
    result = train(tiny_config(models["sd15"], data, tmp_path / "out", max_train_steps=4), callbacks={
        "on_start": on_start})
    assert result.steps == 4
    assert any("img_01.png" in w for w in result.warnings)
    shutil.rmtree(data)


def test_cached_latents_train_the_same_as_uncached(tiny, tmp_path):
    models, data = tiny
    plain = train(tiny_config(models["sd15"], data, tmp_path / "a", max_train_steps=4, flip_aug=True))
    cached = train(tiny_config(models["sd15"], data, tmp_path / "b", max_train_steps=4, flip_aug=True,
                               cache_latents=True, cache_latents_to_disk=True))
    assert os.listdir(tmp_path / "b" / "cache" / "latents")
    # The same latents up to float noise (the VAE sees other batch compositions when caching);
    # Adam turns that into last-digit differences in the weights.
    a, b = _lora_fp32(plain.checkpoints[-1]), _lora_fp32(cached.checkpoints[-1])
    assert abs(plain.final_loss - cached.final_loss) < 1e-4
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    scale = max(float(a[k].abs().max()) for k in a)
    assert worst < 1e-3 * scale, (worst, scale)


def test_network_weights_start_from_an_existing_lora(tiny, tmp_path):
    models, data = tiny
    first = train(tiny_config(models["sd15"], data, tmp_path / "a", max_train_steps=3))
    second = train(tiny_config(models["sd15"], data, tmp_path / "b", max_train_steps=1,
                               network_weights=first.lora_path, learning_rate=1e-12, max_grad_norm=0))
    a, b = load_file(first.lora_path), load_file(second.lora_path)
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-3), k
    with pytest.raises(UsageError, match="shape"):
        train(tiny_config(models["sd15"], data, tmp_path / "c", max_train_steps=1, lora_rank=8,
                          network_weights=first.lora_path))
    with_te = train(tiny_config(models["sd15"], data, tmp_path / "d", max_train_steps=1, train_text_encoder=True))
    with pytest.raises(UsageError, match="train_text_encoder: true"):
        train(tiny_config(models["sd15"], data, tmp_path / "e", max_train_steps=1, network_weights=with_te.lora_path))


def test_sample_prompts_write_pictures(tiny, tmp_path):
    from PIL import Image
    models, data = tiny
    out = tmp_path / "out"
    train(tiny_config(models["sd15"], data, out, max_train_steps=2, sample_prompts=["a red circle", "green"],
                      sample_every_n_steps=2))
    files = sorted(os.listdir(out / "samples"))
    assert files == ["tiny_step000002_00.png", "tiny_step000002_01.png"]
    with Image.open(out / "samples" / files[0]) as im:
        assert im.size == (64, 64)


def test_text_generation_goes_to_the_text_trainer(tiny, tmp_path):
    from lora_native.errors import ModelError
    with pytest.raises(ModelError, match="not a Hugging Face model folder"):
        train({"task_type": "text-generation", "base_model": str(tmp_path), "train_data_dir": str(tmp_path),
               "output_dir": str(tmp_path / "out")})


def test_config_errors_surface_before_training(tiny, tmp_path):
    models, data = tiny
    with pytest.raises(ConfigError, match="lora_rank"):
        train(tiny_config(models["sd15"], data, tmp_path / "out", lora_rank=0))


def test_public_api_and_cli(tiny, tmp_path):
    models, data = tiny
    assert callable(lora_native.train)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("base_model: %s\ntrain_data_dir: %s\noutput_dir: %s\noutput_name: cli\nresolution: 64\n"
                   "batch_size: 2\nmax_train_steps: 50\n" % (models["sd15"], data, tmp_path / "out"))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--config", str(cfg), "--max_train_steps",
                        "2", "--lora_rank", "2"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "<lora:cli:0.8>" in r.stdout
    with safe_open(str(tmp_path / "out" / "cli.safetensors"), "pt") as f:
        assert f.metadata()["ss_network_dim"] == "2" and f.metadata()["ss_steps"] == "2"
    r = subprocess.run([sys.executable, "-m", "lora_native", "inspect", str(tmp_path / "out" / "cli.safetensors")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "format:      kohya" in r.stdout and "Stable Diffusion 1.x" in r.stdout
    r = subprocess.run([sys.executable, "-m", "lora_native", "train", str(cfg), "--lora_rnak", "2"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "did you mean 'lora_rank'" in r.stderr and "Traceback" not in r.stderr


def test_sigint_saves_a_checkpoint_and_the_run_resumes(tiny, tmp_path):
    models, data = tiny
    out = tmp_path / "out"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("base_model: %s\ntrain_data_dir: %s\noutput_dir: %s\noutput_name: sig\nresolution: 64\n"
                   "batch_size: 2\nmax_train_steps: 100000\nsave_steps: 3\n" % (models["sd15"], data, out))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "lora_native", "train", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while not (out / "checkpoint-3").is_dir():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Run the same command again to resume" in stderr
    steps = sorted(int(n.split("-")[1]) for n in os.listdir(out) if n.startswith("checkpoint-"))
    stopped = steps[-1]
    assert stopped >= 3
    r = subprocess.run([sys.executable, "-m", "lora_native", "train", "--config", str(cfg), "--max_train_steps",
                        str(stopped + 2)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "resuming from checkpoint-%d" % stopped in r.stderr
    with safe_open(str(out / "sig.safetensors"), "pt") as f:
        assert f.metadata()["ss_steps"] == str(stopped + 2)


def test_lr_schedules_with_warmup():
    from lora_native.train.optim import lr_lambda
    warm = [lr_lambda("constant_with_warmup", 4, 20)(s) for s in range(6)]
    assert warm == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert [lr_lambda("constant", 4, 20)(s) for s in (0, 10)] == [1.0, 1.0]
    lin = lr_lambda("linear", 0, 10)
    assert lin(0) == 1.0 and lin(5) == pytest.approx(0.5) and lin(10) == 0.0
    cos = lr_lambda("cosine", 2, 12)
    assert cos(0) == 0.5 and cos(2) == pytest.approx(1.0) and cos(7) == pytest.approx(0.5) and cos(12) == 0.0
    restarts = lr_lambda("cosine_with_restarts", 0, 20, cycles=2)
    assert restarts(0) == pytest.approx(1.0) and restarts(10) == pytest.approx(1.0) and restarts(5) < 0.6


def test_accumulation_sgd_and_bf16_run(tiny, tmp_path):
    models, data = tiny
    result = train(tiny_config(models["sd15"], data, tmp_path / "a", max_train_steps=0, epochs=2, batch_size=1,
                               gradient_accumulation_steps=2, optimizer="sgd", lr_scheduler="cosine",
                               lr_warmup_steps=1))
    assert result.steps == 4  # 4 batches of 1 per epoch, 2 per optimizer step, 2 epochs
    result = train(tiny_config(models["sd15"], data, tmp_path / "b", max_train_steps=2, mixed_precision="bf16"))
    tensors = load_file(result.lora_path)
    assert result.steps == 2 and all(torch.isfinite(t.float()).all() for t in tensors.values())


def test_resume_from_checkpoint_path_and_latest(tiny, tmp_path):
    models, data = tiny
    out = tmp_path / "out"
    train(tiny_config(models["sd15"], data, out, max_train_steps=4, save_steps=2))
    r = train(tiny_config(models["sd15"], data, out, max_train_steps=6,
                          resume_from_checkpoint=str(out / "checkpoint-2")))
    assert r.steps == 6
    r = train(tiny_config(models["sd15"], data, out, max_train_steps=7, resume_from_checkpoint="latest"))
    assert r.steps == 7
    with pytest.raises(lora_native.LoraNativeError, match="does not exist"):
        train(tiny_config(models["sd15"], data, out, resume_from_checkpoint=str(out / "checkpoint-99")))


def test_native_kernels_train_like_the_torch_path_and_resume_exactly(tiny, tmp_path):
    # SDXL-like: its attention projections are Linear layers, so the fused branch runs there.
    models, data = tiny
    common = dict(max_train_steps=6, network_dropout=0.1, lora_rank=4, learning_rate=1e-3)
    plain = train(tiny_config(models["sdxl"], data, tmp_path / "plain", native_kernels=False, **common))
    native = train(tiny_config(models["sdxl"], data, tmp_path / "native", native_kernels=True, **common))
    a, b = _lora_fp32(plain.checkpoints[-1]), _lora_fp32(native.checkpoints[-1])
    assert a.keys() == b.keys()
    worst = max(((a[k] - b[k]).abs().max() / a[k].abs().max().clamp_min(1e-12)).item() for k in a)
    assert worst < 1e-3, worst  # float32 summation order only
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the other code path really ran
    # exact resume with the native optimizer state
    stop = {}
    cb = {"should_stop": lambda: stop.get("now", False), "on_step": lambda s: stop.update(now=s["step"] >= 3)}
    cfg = tiny_config(models["sdxl"], data, tmp_path / "resumed", native_kernels=True, **common)
    with pytest.raises(TrainingInterrupted):
        train(cfg, callbacks=cb)
    resumed = _lora_fp32(train(cfg).checkpoints[-1])
    for k in b:
        assert torch.equal(b[k], resumed[k]), k
