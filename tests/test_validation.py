"""Validation loss and best-checkpoint selection: the held-out split, a deterministic loss (the
same across runs and across stop + resume), where it is reported, save_best, and the config rules.
Tests that build or train the tiny model are marked slow (seconds each; about 25 s in all with one
torch thread)."""
import sys

import pytest
from safetensors import safe_open
from safetensors.torch import load_file

from lora_native.config import load_config
from lora_native.errors import ConfigError
from lora_native.train import data as train_data
from lora_native.train.loop import TrainingError, TrainingInterrupted, _Trainer, train
from builders.models import make_tiny_model
from builders.training import make_image_folder, tiny_config

# 6 images, 2 held out (round(0.34 * 6)), 4 trained on: 2 batches of 2 an epoch; validated at
# the checkpoints (steps 2, 4) and at the end (step 4 already).
SPLIT = dict(max_train_steps=4, save_steps=2, validation_split=0.34, trigger_word="sks", network_dropout=0.1,
             flip_aug=True)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_validation")
    model = make_tiny_model(str(folder / "sd15.safetensors"), "sd15")
    data = make_image_folder(str(folder / "data"), count=6)
    val = make_image_folder(str(folder / "val"), count=2, seed=100)
    return model, data, val


def _val_losses(logs):
    return [(x["step"], x["val_loss"]) for x in logs if "val_loss" in x]


@pytest.fixture(scope="module")
def straight(tiny, tmp_path_factory):
    """One run with validation_split and TensorBoard; records the images of every training batch."""
    model, data, _ = tiny
    out = tmp_path_factory.mktemp("straight") / "out"
    logs, trained = [], set()
    original = _Trainer._loss

    def spy(self, indices, micro):
        trained.update(self.samples[i].rel for i in indices)
        return original(self, indices, micro)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_Trainer, "_loss", spy)
        result = train(tiny_config(model, data, out, log_with="tensorboard", **SPLIT), callbacks={"on_log": logs.append})
    return result, logs, trained, out


# ---- the split and the loss themselves

def test_holdout_depends_on_seed_and_names_not_order():
    names = ["img_%02d.png" % i for i in range(20)]
    held = train_data.holdout(names, 0.25, seed=7)
    assert len(held) == 5 and held == sorted(held)
    shuffled = names[::-1]
    assert sorted(shuffled[i] for i in train_data.holdout(shuffled, 0.25, seed=7)) == [names[i] for i in held]
    assert train_data.holdout(names, 0.25, seed=8) != held
    assert train_data.holdout(names, 0.0, seed=7) == []
    assert len(train_data.holdout(names[:3], 0.01, seed=7)) == 1  # a fraction > 0 holds out at least one


@pytest.mark.slow
def test_evaluation_loss_does_not_depend_on_batches_or_order(tiny):
    from lora_native.train.model import load_base_model
    from lora_native.train.validate import encode_latents, evaluation_loss
    model, data, _ = tiny
    base = load_base_model(model)
    scan = train_data.scan_dataset(data, trigger_word="sks")
    samples = list(scan.samples)[:3]
    buckets = train_data.assign_buckets(samples, resolution=(64, 64))
    ts = (300, 800)
    one = evaluation_loss(base, samples, buckets, seed=5, timesteps=ts, batch_size=1)
    three = evaluation_loss(base, samples, buckets, seed=5, timesteps=ts, batch_size=3)
    reverse = evaluation_loss(base, samples[::-1], buckets[::-1], seed=5, timesteps=ts, batch_size=2)
    latents, _ = encode_latents(base, samples, buckets, batch_size=1)
    cached = evaluation_loss(base, samples, buckets, seed=5, timesteps=ts, batch_size=1, latents=latents)
    assert one == cached
    assert three == pytest.approx(one, rel=1e-5) and reverse == pytest.approx(one, rel=1e-5)
    assert evaluation_loss(base, samples, buckets, seed=6, timesteps=ts, batch_size=3) != three


# ---- a real run

@pytest.mark.slow
def test_held_out_images_are_never_trained_on(tiny, straight):
    _, data, _ = tiny
    result, _, trained, _ = straight
    scan = train_data.scan_dataset(data)
    names = [s.rel for s in scan.samples]
    held = {names[i] for i in train_data.holdout(names, SPLIT["validation_split"], 1234)}
    assert len(held) == 2 and len(trained) == 4 and not held & trained
    with safe_open(result.lora_path, "pt") as f:
        assert f.metadata()["ss_num_train_images"] == "4"


@pytest.mark.slow
def test_validation_loss_is_logged_everywhere(straight):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    result, logs, _, out = straight
    losses = _val_losses(logs)
    assert [s for s, _ in losses] == [2, 4]
    acc = EventAccumulator(str(out / "logs"))
    acc.Reload()
    assert [(e.step, pytest.approx(e.value)) for e in acc.Scalars("loss/validation")] == losses
    if not sys.stderr.isatty():  # without a terminal (pytest's capture) the plain progress lines carry it
        assert any(x.get("info", "").startswith("step 3/4") and "val %.4f" % losses[0][1] in x["info"]
                   for x in logs)
    assert result.last_loss == losses[-1][1]
    assert (result.best_step, result.best_loss) == min(((s, v) for s, v in losses), key=lambda x: x[1])
    assert result.best_path is None  # save_best is off
    with safe_open(result.lora_path, "pt") as f:
        assert float(f.metadata()["ss_validation_loss"]) == losses[-1][1]
    with safe_open(str(out / "checkpoint-2" / "tiny-step000002.safetensors"), "pt") as f:
        assert float(f.metadata()["ss_validation_loss"]) == losses[0][1]


@pytest.mark.slow
def test_same_seed_gives_the_same_validation_loss(tiny, straight, tmp_path):
    model, data, _ = tiny
    logs = []
    train(tiny_config(model, data, tmp_path / "out", **SPLIT), callbacks={"on_log": logs.append})
    assert _val_losses(logs) == _val_losses(straight[1])


@pytest.mark.slow
def test_stop_and_resume_give_the_same_validation_loss(tiny, straight, tmp_path):
    model, data, _ = tiny
    logs, steps = [], []
    cb = {"on_log": logs.append, "on_step": steps.append, "should_stop": lambda: steps[-1]["step"] == 3}
    cfg = tiny_config(model, data, tmp_path / "out", **SPLIT)
    with pytest.raises(TrainingInterrupted) as stopped:
        train(cfg, callbacks=cb)
    assert stopped.value.step == 3
    resumed = train(cfg, callbacks={"on_log": logs.append})
    assert _val_losses(logs) == _val_losses(straight[1])
    assert (resumed.best_step, resumed.best_loss, resumed.last_loss) == (
        straight[0].best_step, straight[0].best_loss, straight[0].last_loss)


# ---- save_best on a scripted loss curve

@pytest.mark.slow
def test_save_best_keeps_the_lowest_and_remembers_it_across_resume(tiny, tmp_path, monkeypatch):
    model, data, val = tiny
    curve = {1: 3.0, 2: 1.0, 3: 2.0, 4: 1.5, 6: 1.1, 7: 0.9}
    validated = []

    def scripted(self):
        validated.append(self.global_step)
        return curve[self.global_step]
    monkeypatch.setattr(_Trainer, "_validation_loss", scripted)
    out = tmp_path / "out"
    ended = []
    result = train(tiny_config(model, data, out, max_train_steps=4, save_steps=1, validation_data_dir=val,
                               save_best=True), callbacks={"on_end": ended.append})
    assert validated == [1, 2, 3, 4]
    best = out / "tiny-best.safetensors"
    assert ended == [result] and result.best_path == str(best)
    assert (result.best_step, result.best_loss, result.last_loss) == (2, 1.0, 1.5)
    step2 = load_file(str(out / "checkpoint-2" / "tiny-step000002.safetensors"))
    step4 = load_file(result.lora_path)
    kept = load_file(str(best))
    assert all(kept[k].equal(step2[k]) for k in step2) and not all(kept[k].equal(step4[k]) for k in step4)
    with safe_open(str(best), "pt") as f:
        meta = f.metadata()
    assert (meta["ss_best_step"], meta["ss_steps"], float(meta["ss_best_validation_loss"])) == ("2", "2", 1.0)
    assert float(meta["ss_validation_loss"]) == 1.0 and meta["ss_num_train_images"] == "6"
    with safe_open(result.lora_path, "pt") as f:
        assert float(f.metadata()["ss_validation_loss"]) == 1.5 and "ss_best_step" not in f.metadata()
    before = best.read_bytes()

    # Resumed: every validate_every_n_steps (and at the end); the best of step 2 is not forgotten.
    validated.clear()
    result = train(tiny_config(model, data, out, max_train_steps=6, save_steps=1, validation_data_dir=val,
                               save_best=True, validate_every_n_steps=3))
    assert validated == [6] and best.read_bytes() == before
    assert (result.best_step, result.best_loss, result.last_loss) == (2, 1.0, 1.1)
    validated.clear()
    result = train(tiny_config(model, data, out, max_train_steps=7, validation_data_dir=val, save_best=True))
    assert validated == [7] and (result.best_step, result.best_loss) == (7, 0.9)
    with safe_open(str(best), "pt") as f:
        assert f.metadata()["ss_best_step"] == "7"


# ---- config and dataset errors

def _load(tmp_path, text):
    path = tmp_path / "cfg.yaml"
    path.write_text("base_model: m.safetensors\ntrain_data_dir: data\n" + text)
    return str(path), lambda: load_config(str(path))


@pytest.mark.parametrize("text,line,key,words", [
    ("validation_split: 0.1\nvalidation_data_dir: val\n", 4, "validation_data_dir",
     "cannot be combined with validation_split 0.1 (line 3)"),
    ("save_best: true\n", 3, "save_best", "needs validation images: set validation_split"),
    ("validation_split: 1\n", 3, "validation_split", "at least 0 and less than 1"),
    ("validation_split: -0.1\n", 3, "validation_split", "at least 0 and less than 1"),
    ("validate_every_n_steps: -1\n", 3, "validate_every_n_steps", "at least 0"),
    ("save_best: maybe\n", 3, "save_best", "expected true or false"),
])
def test_config_errors(tmp_path, text, line, key, words):
    path, load = _load(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load()
    assert str(info.value).startswith("%s:%d:" % (path, line)) and info.value.key == key
    assert words in str(info.value)


def test_config_values_and_warning(tmp_path):
    _, load = _load(tmp_path, "validation_split: 0.2\nsave_best: true\nvalidate_every_n_steps: 50\n")
    cfg = load()
    assert (cfg.validation_split, cfg.save_best, cfg.validate_every_n_steps, cfg.validation_data_dir) == (
        0.2, True, 50, None)
    _, load = _load(tmp_path, "validation_data_dir: val\nsave_best: yes\n")
    assert load().validation_data_dir == str(tmp_path / "val")
    _, load = _load(tmp_path, "validate_every_n_steps: 50\n")
    with pytest.warns(UserWarning, match="validate_every_n_steps: has no effect without validation_split"):
        load()


@pytest.mark.slow
def test_a_split_that_leaves_nothing_to_train_on_and_a_missing_folder(tiny, tmp_path):
    from lora_native.errors import DatasetError
    model, data, _ = tiny
    with pytest.raises(TrainingError, match="validation_split 0.95 of 6 image"):
        train(tiny_config(model, data, tmp_path / "a", validation_split=0.95))
    with pytest.raises(DatasetError, match="validation_data_dir .* is not a folder"):
        train(tiny_config(model, data, tmp_path / "b", validation_data_dir=str(tmp_path / "nothing")))
