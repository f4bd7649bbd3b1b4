"""`lora-native inspect` on every LoRA format we read."""
import os

import pytest
import torch
from safetensors.torch import save_file

from lora_native import cli
from lora_native.formats.readers import describe
from lora_native.inspect import inspect_file


def _write(path, tensors, metadata=None):
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return str(path)


def _pair(prefix, r, out, inp, a="lora_down", b="lora_up", kernel=None, alpha=None):
    down = torch.zeros((r, inp) + ((kernel, kernel) if kernel else ()))
    up = torch.zeros((out, r) + ((1, 1) if kernel else ()))
    t = {"%s.%s.weight" % (prefix, a): down, "%s.%s.weight" % (prefix, b): up}
    if alpha is not None:
        t[prefix + ".alpha"] = torch.tensor(float(alpha))
    return t


def test_kohya_sd15_with_metadata_and_ranks(tmp_path):
    t = {}
    t.update(_pair("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k", 16, 320, 768, alpha=8))
    t.update(_pair("lora_unet_up_blocks_3_attentions_2_proj_out", 16, 320, 320, alpha=8))
    t.update(_pair("lora_te_text_model_encoder_layers_0_mlp_fc1", 4, 3072, 768, alpha=4))
    path = _write(tmp_path / "a.safetensors", t, {"ss_base_model_version": "sd_v1", "ss_network_dim": "16",
                                                   "ss_tag_frequency": '{"10_style": {"sks": 20, "red": 3}}'})
    info = describe(path)
    assert info.format == "kohya" and not info.locon and info.base_model == "sd15"
    assert info.component_counts() == {"unet": 2, "te": 1}
    text = inspect_file(path)
    assert "Stable Diffusion 1.x" in text and "modules:     3 (te 1, unet 2)" in text
    assert "rank 16" in text and "alpha 8" in text and "rank 4" in text
    assert "2 tags; top: sks (20), red (3)" in text


def test_locon_and_sdxl_from_shapes(tmp_path):
    t = {}
    t.update(_pair("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k", 8, 640, 2048, alpha=8))
    t.update(_pair("lora_unet_input_blocks_1_0_in_layers_2", 4, 320, 320, kernel=3, alpha=1))
    info = describe(_write(tmp_path / "b.safetensors", t))
    assert info.format == "kohya" and info.locon and info.base_model == "sdxl"
    assert "cross-attention width 2048" in info.base_model_source
    assert {m.kind for m in info.modules} == {"linear", "conv3x3"}


def test_comfyui_native_and_peft(tmp_path):
    comfy = _pair("diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k", 8, 640, 2048,
                  a="lora_down", b="lora_up")
    info = describe(_write(tmp_path / "c.safetensors", comfy))
    assert info.format == "comfyui" and info.base_model == "sdxl" and len(info.modules) == 1
    peft = _pair("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k", 4, 320, 768, a="lora_A",
                 b="lora_B")
    peft.update(_pair("text_encoder.text_model.encoder.layers.0.self_attn.q_proj", 4, 768, 768, a="lora_A",
                      b="lora_B"))
    info = describe(_write(tmp_path / "d.safetensors", peft))
    assert info.format == "diffusers-peft" and info.base_model == "sd15"
    assert info.component_counts() == {"unet": 1, "te": 1}
    assert "format:      diffusers-peft" in inspect_file(str(tmp_path / "d.safetensors"))


def test_lycoris_is_described_not_applied(tmp_path):
    t = {"lora_unet_mid_block_attentions_0_proj_in.hada_w1_a": torch.zeros(4, 4),
         "lora_unet_mid_block_attentions_0_proj_in.hada_w1_b": torch.zeros(4, 4)}
    text = inspect_file(_write(tmp_path / "e.safetensors", t))
    assert "lycoris" in text and "cannot be applied" in text


def test_cli_errors(tmp_path, capsys):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    assert cli.main(["inspect", str(bad)]) == 2
    assert cli.main(["inspect", str(tmp_path / "missing.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and "Traceback" not in err
