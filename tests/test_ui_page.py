"""The page's helpers that need no browser: config from fields + YAML, saving captions."""
import os

import pytest

from lora_native.captions import read_metadata_csv
from lora_native.errors import UsageError
from lora_native.ui.app import caption_folder, default_output_folder, save_captions, training_values
from lora_native.ui.host import Host


def _fields(**kw):
    f = {"base_model": "m.safetensors", "train_data_dir": "data", "output_name": "style", "lora_rank": 8,
         "lora_alpha": 0, "learning_rate": 1e-4, "epochs": 3, "max_train_steps": 0, "batch_size": 1,
         "resolution": 512, "save_steps": 0, "mixed_precision": "no"}
    f.update(kw)
    return f


def test_fields_then_yaml(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.safetensors").write_bytes(b"")
    host = Host([tmp_path / "models"], tmp_path / "loras")
    v = training_values(host, _fields(), "lora_rank: 32\nlearning_rate: 5e-5\n")
    assert v["lora_rank"] == 32 and v["learning_rate"] == 5e-5 and v["epochs"] == 3
    assert v["output_dir"] == str(tmp_path / "loras" / "style_training")
    assert v["base_model"] == str(tmp_path / "models" / "m.safetensors") and "lora_alpha" not in v
    with pytest.raises(UsageError):
        training_values(host, _fields(output_name="../x"))


def test_save_captions_adds_the_trigger(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    n = save_captions(str(tmp_path), [["a.png", "a red cup"]], "sks")
    assert n == 1 and read_metadata_csv(str(tmp_path / "metadata.csv")) == {"a.png": "sks, a red cup"}
    with pytest.raises(UsageError):
        save_captions(str(tmp_path), [["missing.png", "x"]])
    assert default_output_folder(str(tmp_path / "imgs") + os.sep) == str(tmp_path / "imgs") + "_clean"


def test_caption_button_uses_the_hosts_model_folders(tmp_path):
    from builders.captioners import make_wd14_model, save_solid

    models = tmp_path / "models"
    make_wd14_model(str(models / "captioners" / "wd14" / "tagger"), [("general", 9, (0, 0, 0), 2.0),
                                                                    ("long_hair", 0, (0, 0, 0), 2.0)])
    host = Host([models], tmp_path / "loras")
    data = tmp_path / "data"
    save_solid(str(data / "a.png"), (10, 20, 30))
    save_captions(str(data), [["a.png", "mine"]])
    save_solid(str(data / "b.png"), (10, 20, 30))
    rows, md = caption_folder(host, str(data), "wd14", "", False, "sks")
    assert rows == [["a.png", "mine"], ["b.png", "sks, long hair"]]
    assert "**1** captioned" in md and "**1** already captioned" in md
    with pytest.raises(UsageError):
        caption_folder(host, str(tmp_path / "nowhere"), "wd14")
