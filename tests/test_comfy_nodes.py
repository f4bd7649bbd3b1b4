"""The ComfyUI node pack against a stand-in of ComfyUI's modules (tests/builders/comfy_stub.py):
declarations, cleaning, training with progress and Interrupt, loading kohya and PEFT files,
and prompt tags."""
import os
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from builders import comfy_stub
from builders.models import make_tiny_model
from builders.training import make_image_folder
from lora_native.formats.keymap import key_map

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMFY_TYPES = {"MODEL", "CLIP", "CONDITIONING", "STRING", "INT", "FLOAT", "BOOLEAN", "VAE", "LATENT", "IMAGE"}


@pytest.fixture
def comfy(monkeypatch, tmp_path):
    ns = comfy_stub.install(monkeypatch, {"checkpoints": str(tmp_path / "models" / "checkpoints"),
                                          "loras": str(tmp_path / "models" / "loras")})
    try:
        import comfy_nodes
    except ImportError:  # the sanitizer run starts in build/asan: the pack is in the checkout
        monkeypatch.setattr(sys, "path", sys.path + [REPO_ROOT])  # after build/asan's lora_native
        import comfy_nodes
    ns.nodes = comfy_nodes
    ns.loras = str(tmp_path / "models" / "loras")
    ns.checkpoints = str(tmp_path / "models" / "checkpoints")
    return ns


def _node(comfy, name):
    return comfy.nodes.NODE_CLASS_MAPPINGS[name]()


def test_declarations(comfy):
    mappings = comfy.nodes.NODE_CLASS_MAPPINGS
    assert set(mappings) == set(comfy.nodes.NODE_DISPLAY_NAME_MAPPINGS)
    assert len(mappings) == 5
    for name, cls in mappings.items():
        spec = cls.INPUT_TYPES()
        assert isinstance(spec, dict) and "required" in spec, name
        assert set(spec) <= {"required", "optional", "hidden"}
        for section in ("required", "optional"):
            for field, decl in spec.get(section, {}).items():
                assert isinstance(decl, tuple) and 1 <= len(decl) <= 2, (name, field)
                kind = decl[0]
                assert isinstance(kind, list) or kind in COMFY_TYPES, (name, field, kind)
                if len(decl) == 2:
                    assert isinstance(decl[1], dict)
        assert cls.CATEGORY == "LoRA Native"
        assert callable(getattr(cls, cls.FUNCTION))
        assert all(t in COMFY_TYPES for t in cls.RETURN_TYPES)
        assert len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
        assert isinstance(getattr(cls, "OUTPUT_NODE", False), bool)
    assert mappings["LoraNativeTrainLora"].OUTPUT_NODE is True


def test_clean_dataset(comfy, tmp_path):
    src = make_image_folder(str(tmp_path / "raw"), count=3, size=(80, 72))
    folder, report = _node(comfy, "LoraNativeCleanDataset").clean(src, 64, False, 6, "largest", "sks", 32)
    assert folder == src + "_clean"
    assert os.path.isfile(os.path.join(folder, "metadata.csv"))
    assert "3 images" in report
    with open(os.path.join(folder, "metadata.csv")) as f:
        assert "sks" in f.read()


def _train_args(comfy, data, **over):
    args = dict(ckpt_name="tiny.safetensors", dataset_folder=data, output_name="tiny_lora", rank=4,
                max_train_steps=4, epochs=1, learning_rate=1e-3, resolution=64, batch_size=2, save_steps=0, seed=1)
    args.update(over)
    return args


@pytest.fixture
def trainable(comfy, tmp_path):
    make_tiny_model(os.path.join(comfy.checkpoints, "tiny.safetensors"), "sd15")
    return make_image_folder(str(tmp_path / "data"), count=4)


def test_caption_dataset_finds_the_model_in_comfy_models(comfy, tmp_path):
    from builders.captioners import make_wd14_model, save_solid

    models_dir = os.path.dirname(comfy.checkpoints)
    make_wd14_model(os.path.join(models_dir, "captioners", "wd14", "tiny-tagger"),
                    [("general", 9, (0, 0, 0), 2.0), ("red_theme", 0, (0, 0, 40), -20.0),
                     ("long_hair", 0, (0, 0, 0), 2.0)])
    images = tmp_path / "imgs"
    save_solid(str(images / "a.png"), (255, 0, 0))
    save_solid(str(images / "b.png"), (0, 0, 255))
    folder, report = _node(comfy, "LoraNativeCaptionDataset").caption(str(images), "wd14", "csv", "sks", False)
    assert folder == str(images) and "2 captioned" in report
    assert (images / "metadata.csv").read_text() == \
        "filename,prompt\na.png,\"sks, red theme, long hair\"\nb.png,\"sks, long hair\"\n"
    bar = comfy_stub.ProgressBar.instances[-1]
    assert bar.current == bar.total == 2
    # Interrupt: stops before the first batch, nothing written
    (images / "metadata.csv").unlink()
    comfy.mm.interrupt_current_processing()
    with pytest.raises(comfy.mm.InterruptProcessingException):
        _node(comfy, "LoraNativeCaptionDataset").caption(str(images), "wd14", "txt", "", False)
    assert not list(images.glob("*.txt"))


def test_train_lora_end_to_end(comfy, trainable):
    node = _node(comfy, "LoraNativeTrainLora")
    assert "tiny.safetensors" in node.INPUT_TYPES()["required"]["ckpt_name"][0]
    (name,) = node.train(**_train_args(comfy, trainable))
    assert name == "tiny_lora.safetensors"
    assert name in comfy.folder_paths.get_filename_list("loras")
    assert [k for k in load_file(os.path.join(comfy.loras, name)) if k.startswith("lora_unet_")]
    assert comfy.mm.calls[:2] == ["unload_all_models", "soft_empty_cache"]
    bar = comfy_stub.ProgressBar.instances[-1]
    assert bar.total == 4 and bar.updates[-1] == 4 and bar.updates[1:] == [1, 2, 3, 4]


def test_train_lora_yaml_wins_and_fields_fill_the_rest(comfy, trainable, tmp_path):
    yaml = tmp_path / "my.yaml"
    yaml.write_text("max_train_steps: 2\nlora_rank: 2\n")
    (name,) = _node(comfy, "LoraNativeTrainLora").train(config_yaml=str(yaml), **_train_args(comfy, trainable))
    tensors = load_file(os.path.join(comfy.loras, name))
    down = [v for k, v in tensors.items() if k.endswith("lora_down.weight")]
    assert down and all(t.shape[0] == 2 for t in down)
    assert comfy_stub.ProgressBar.instances[-1].total == 2


def test_train_lora_interrupt_leaves_a_checkpoint(comfy, trainable):
    node = _node(comfy, "LoraNativeTrainLora")
    real = comfy_stub.ProgressBar.update_absolute

    def update(bar, value, total=None, preview=None):  # Interrupt pressed once step 2 is done
        real(bar, value, total, preview)
        if value >= 2:
            comfy.mm.interrupt_current_processing(True)

    comfy_stub.ProgressBar.update_absolute = update
    try:
        with pytest.raises(comfy_stub.InterruptProcessingException):
            node.train(**_train_args(comfy, trainable, max_train_steps=6))
    finally:
        comfy_stub.ProgressBar.update_absolute = real
    assert comfy.mm.interrupt_processing is False   # consumed, as ComfyUI's own throw does
    out = os.path.join(comfy.loras, "lora_native_training", "tiny_lora")
    ckpts = sorted(d for d in os.listdir(out) if d.startswith("checkpoint-"))
    assert ckpts == ["checkpoint-2"] or ckpts[-1] == "checkpoint-2"
    files = [f for f in os.listdir(os.path.join(out, ckpts[-1])) if f.endswith(".safetensors")]
    assert files and load_file(os.path.join(out, ckpts[-1], files[0]))
    assert not os.path.exists(os.path.join(comfy.loras, "tiny_lora.safetensors"))
    # the same node run again continues from the checkpoint and finishes
    (name,) = node.train(**_train_args(comfy, trainable, max_train_steps=6))
    assert os.path.isfile(os.path.join(comfy.loras, name))
    assert comfy_stub.ProgressBar.instances[-1].updates[0] == 2


def _kohya_file(path, keys, rank=2):
    tensors = {}
    for key in keys:
        tensors[key + ".lora_down.weight"] = torch.randn(rank, 8)
        tensors[key + ".lora_up.weight"] = torch.randn(8, rank)
        tensors[key + ".alpha"] = torch.tensor(1.0)
    save_file(tensors, path)


def _sd15_entries():
    km = key_map("sd15")
    unet = [e for e in km.entries.values() if e.component == "unet" and "down_blocks.0.attentions.0" in e.module_path]
    te = [e for e in km.entries.values() if e.component == "te1"]
    return unet[:2] + te[:1]


def test_load_lora_passes_kohya_files_unchanged(comfy):
    keys = [e.key for e in _sd15_entries()]
    os.makedirs(os.path.join(comfy.loras, "sub"))
    _kohya_file(os.path.join(comfy.loras, "sub", "k.safetensors"), keys)
    model, clip = comfy_stub.FakeModel(), comfy_stub.FakeClip()
    m2, c2 = _node(comfy, "LoraNativeLoadLora").load(model, clip, 0.7, 0.3, lora_name="sub/k.safetensors")
    call = comfy.sd.lora_calls[-1]
    assert call["strength_model"] == 0.7 and call["strength_clip"] == 0.3
    assert set(call["keys"]) == {k + s for k in keys for s in (".lora_down.weight", ".lora_up.weight", ".alpha")}
    assert m2.patches == [0.7] and c2.patches == [0.3] and model.patches == []
    assert comfy.utils.loaded[-1][1] is True  # safe_load


def test_load_lora_converts_peft_names_to_kohya(comfy):
    entries = _sd15_entries()
    tensors = {}
    for e in entries:
        prefix = ("unet." + e.module_path) if e.component == "unet" else \
            "text_encoder." + ("text_model." + e.module_path if not e.module_path.startswith("text_model.")
                               else e.module_path)
        tensors[prefix + ".lora_A.weight"] = torch.randn(2, 8)
        tensors[prefix + ".lora_B.weight"] = torch.randn(8, 2)
    save_file(tensors, os.path.join(comfy.loras, "peft.safetensors"))
    _node(comfy, "LoraNativeLoadLora").load(comfy_stub.FakeModel(), comfy_stub.FakeClip(), 1.0, 1.0, lora_name="peft.safetensors")
    keys = comfy.sd.lora_calls[-1]["keys"]
    assert set(keys) == {e.key + s for e in entries for s in (".lora_down.weight", ".lora_up.weight")}


def test_load_lora_zero_strength_is_a_no_op(comfy):
    _kohya_file(os.path.join(comfy.loras, "k.safetensors"), [_sd15_entries()[0].key])
    model, clip = comfy_stub.FakeModel(), comfy_stub.FakeClip()
    assert _node(comfy, "LoraNativeLoadLora").load(model, clip, 0, 0, lora_name="k.safetensors") == (model, clip)
    assert comfy.sd.lora_calls == []


def test_prompt_with_tags(comfy, caplog):
    key = _sd15_entries()[0].key
    os.makedirs(os.path.join(comfy.loras, "styles"))
    _kohya_file(os.path.join(comfy.loras, "styles", "my style.safetensors"), [key])
    _kohya_file(os.path.join(comfy.loras, "Char.safetensors"), [key])
    node = _node(comfy, "LoraNativePromptWithTags")
    clip = comfy_stub.FakeClip()
    text = "a cat, <lora:my style:0.7>, <lora:char:0.4:0.9>, <lora:missing:1>, red <lora:x:abc>"
    with caplog.at_level("WARNING"):
        model, clip2, cond = node.encode(comfy_stub.FakeModel(), clip, text)
    calls = [(c["strength_model"], c["strength_clip"]) for c in comfy.sd.lora_calls]
    assert calls == [(0.7, 0.7), (0.9, 0.4)]   # te first, then unet, as A1111 reads it
    assert clip2.encoded == ["a cat, <lora:missing:1>, red <lora:x:abc>".replace("<lora:missing:1>, ", "")]
    assert "missing" in caplog.text and "abc" in caplog.text
    assert model.patches == [0.7, 0.9] and clip2.patches == [0.7, 0.4]
    assert isinstance(cond, list) and "pooled_output" in cond[0][1]


def test_prompt_without_tags_encodes_as_is(comfy):
    clip = comfy_stub.FakeClip()
    _, clip2, cond = _node(comfy, "LoraNativePromptWithTags").encode(comfy_stub.FakeModel(), clip, "plain text")
    assert clip2 is clip and clip.encoded == ["plain text"] and comfy.sd.lora_calls == []


@pytest.mark.parametrize("name", ["clean_and_train_api.json", "prompt_with_tags_api.json"])
def test_example_workflows_match_the_declarations(comfy, name):
    import json
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "examples", "comfyui", name)) as f:
        prompt = json.load(f)
    ours = comfy.nodes.NODE_CLASS_MAPPINGS
    core = {"CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode", "SaveImage"}
    for node_id, node in prompt.items():
        cls = node["class_type"]
        assert cls in ours or cls in core, cls
        for value in node["inputs"].values():
            if isinstance(value, list):  # a link: [source node id, output index]
                assert value[0] in prompt
                src = prompt[value[0]]["class_type"]
                if src in ours:
                    assert value[1] < len(ours[src].RETURN_TYPES)
        if cls in ours:
            spec = ours[cls].INPUT_TYPES()
            assert set(spec["required"]) <= set(node["inputs"]), (node_id, cls)
            assert set(node["inputs"]) <= set(spec["required"]) | set(spec.get("optional", {})), (node_id, cls)
            declared = dict(spec["required"], **spec.get("optional", {}))
            for key, value in node["inputs"].items():
                src = prompt[value[0]]["class_type"] if isinstance(value, list) else None
                if src in ours:
                    # ComfyUI links an output only to an input of the same type name (never to a list)
                    assert ours[src].RETURN_TYPES[value[1]] == declared[key][0], (node_id, key)


def test_load_lora_takes_train_loras_output_and_needs_a_name(comfy):
    model, clip = comfy_stub.FakeModel(), comfy_stub.FakeClip()
    node = _node(comfy, "LoraNativeLoadLora")
    with pytest.raises(ValueError, match="choose a LoRA file"):
        node.load(model, clip, 1.0, 1.0)
    assert node.INPUT_TYPES()["optional"]["trained_lora"][0] == _node(comfy, "LoraNativeTrainLora").RETURN_TYPES[0]
