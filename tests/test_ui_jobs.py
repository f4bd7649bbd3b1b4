"""The UI's background training job (lora_native.ui.jobs), without gradio: progress, the
final file in the LoRA folder, one run at a time, cancel leaving a checkpoint."""
import os
import threading

import pytest

pytest.importorskip("torch")

from builders.models import make_tiny_model  # noqa: E402
from builders.training import make_image_folder, tiny_config  # noqa: E402
from lora_native.ui.jobs import CANCELLED, DONE, FAILED, JobBusy, JobRunner, TrainingJob  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ui_jobs")
    return make_tiny_model(str(folder / "sd15.safetensors"), "sd15"), make_image_folder(str(folder / "data"))


def test_run_reports_progress_and_lands_in_the_lora_folder(tiny, tmp_path):
    model, data = tiny
    loras = tmp_path / "loras"
    done = []
    job = TrainingJob(tiny_config(model, data, loras / "tiny_training", max_train_steps=4, save_steps=2),
                      final_dir=str(loras), on_done=done.append).start()
    assert job.join(120)
    s = job.snapshot()
    assert s["state"] == DONE, s
    assert s["step"] == s["total"] == 4
    assert [step for step, _ in s["loss"]] == [1, 2, 3, 4]
    assert s["its"] > 0 and s["eta"] == 0
    assert any("checkpoint-2" in c for c in s["checkpoints"])
    assert s["lora_path"] == str(loras / "tiny.safetensors") and os.path.isfile(s["lora_path"])
    assert done == [s["lora_path"]]
    assert not [n for n in os.listdir(loras) if n.startswith(".")]  # no temporary file left


def test_cancel_saves_a_checkpoint(tiny, tmp_path):
    model, data = tiny
    runner = JobRunner()
    gate = threading.Event()
    job = runner.start(tiny_config(model, data, tmp_path / "out", max_train_steps=500))
    # cancel once training has really begun
    for _ in range(600):
        if job.snapshot()["step"] >= 1:
            break
        gate.wait(0.1)
    with pytest.raises(JobBusy):
        runner.start(tiny_config(model, data, tmp_path / "other"))
    assert runner.cancel()
    assert job.join(120)
    s = job.snapshot()
    assert s["state"] == CANCELLED, s
    assert 1 <= s["step"] < 500
    assert s["checkpoints"] and os.path.isfile(os.path.join(s["checkpoints"][-1], "state", "training_state.json"))
    assert "checkpoint" in s["message"] and s["lora_path"] is None
    # the runner is free again
    assert not runner.cancel()


def test_failure_is_reported_not_raised(tmp_path):
    job = TrainingJob({"base_model": str(tmp_path / "missing.safetensors"), "train_data_dir": str(tmp_path)}).start()
    assert job.join(60)
    s = job.snapshot()
    assert s["state"] == FAILED and s["message"] and s["error"]


def test_idle_snapshot():
    s = JobRunner().snapshot()
    assert s["state"] == "idle" and s["step"] == 0 and s["loss"] == []
