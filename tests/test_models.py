"""Base models: configs, original <-> diffusers conversion, detection, loading, tokenizers, tiny
models and the LoRA key map. Full-size models are only ever built on the `meta` device."""
import json
import os
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from builders.models import (empty_base_model, full_original_shapes, make_tiny_model, tiny_architecture,  # noqa: E402
                             tiny_modules, write_bpe_file, write_header_only, write_tiny_diffusers_folder)
from lora_native.configs import load_architecture  # noqa: E402
from lora_native.errors import LoraNativeError, ModelError  # noqa: E402
from lora_native.formats import keymap, ldm  # noqa: E402
from lora_native.formats.header import read_header  # noqa: E402
from lora_native.train import tokenizer as tk  # noqa: E402
from lora_native.train.model import detect_model_type, load_base_model  # noqa: E402
from lora_native.train.tiny import TINY_TOKENIZER_DIR, learn_bpe, TINY_CORPUS, TINY_MERGES, tiny_vocab_size  # noqa: E402


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    return {kind: make_tiny_model(str(folder / ("%s.safetensors" % kind)), kind) for kind in ("sd15", "sdxl")}


@pytest.fixture(scope="module")
def meta_models():
    return {kind: empty_base_model(kind) for kind in ("sd15", "sdxl")}


def _state_dicts(base):
    out = {"unet": base.unet.state_dict(), "vae": base.vae.state_dict()}
    for name, module in zip(("text_encoder", "text_encoder_2"), base.text_encoders):
        out[name] = module.state_dict()
    return out


# ---------------------------------------------------------------- configs

def test_shipped_configs_hold_the_published_values():
    sd15, sdxl = load_architecture("sd15"), load_architecture("sdxl")
    assert sd15["vae"]["scaling_factor"] == 0.18215 and sdxl["vae"]["scaling_factor"] == 0.13025
    assert sdxl["vae"]["force_upcast"] is True
    for arch in (sd15, sdxl):
        s = arch["scheduler"]
        assert (s["beta_start"], s["beta_end"], s["beta_schedule"], s["num_train_timesteps"], s["prediction_type"]) == (
            0.00085, 0.012, "scaled_linear", 1000, "epsilon")
        te = arch["text_encoder"]
        assert (te["hidden_size"], te["num_hidden_layers"], te["hidden_act"], te["vocab_size"]) == (768, 12, "quick_gelu", 49408)
    te2 = sdxl["text_encoder_2"]
    assert (te2["_class_name"], te2["hidden_size"], te2["num_hidden_layers"], te2["hidden_act"], te2["projection_dim"],
            te2["intermediate_size"], te2["num_attention_heads"]) == ("CLIPTextModelWithProjection", 1280, 32, "gelu", 1280, 5120, 20)
    assert sd15["unet"]["cross_attention_dim"] == 768 and sdxl["unet"]["cross_attention_dim"] == 2048
    assert sdxl["unet"]["addition_embed_type"] == "text_time" and sdxl["unet"]["projection_class_embeddings_input_dim"] == 2816


def test_scheduler_config_builds_the_training_schedule(meta_models):
    sched = meta_models["sd15"].noise_scheduler()
    assert sched.config.num_train_timesteps == 1000
    assert sched.betas[0].item() == pytest.approx(0.00085) and sched.betas[-1].item() == pytest.approx(0.012)


# ---------------------------------------------------------------- the converter

@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_full_size_key_layout_round_trips(meta_models, kind):
    base = meta_models[kind]
    state = _state_dicts(base)
    plan = ldm.plan_from_diffusers({c: list(sd) for c, sd in state.items()}, kind, base.architecture)
    assert not plan.unexpected and not plan.ignored
    original = [r.original[0] for rules in plan.rules.values() for r in rules]
    assert len(original) == len(set(original))
    counts = {"unet": 686, "vae": 248, "text_encoder": 196} if kind == "sd15" else {
        "unet": 1680, "vae": 248, "text_encoder": 196, "text_encoder_2": 389}
    assert {c: len(r) for c, r in plan.rules.items()} == counts  # text_encoder_2: 517 diffusers keys, q/k/v fused
    back = ldm.plan_from_original(original, kind, base.architecture)
    assert not back.unexpected
    for component, sd in state.items():
        got = {k for r in back.rules[component] for k in r.diffusers}
        want = {k if k.startswith(("text_model.", "text_projection.")) or not component.startswith("text") else "text_model." + k
                for k in sd}
        assert got == want, component


def test_original_names_are_the_ones_real_files_use():
    sd15, sdxl = set(full_original_shapes("sd15")), full_original_shapes("sdxl")
    for key in ("model.diffusion_model.output_blocks.11.0.skip_connection.weight",   # diffusers' SD1 marker key
                "model.diffusion_model.input_blocks.3.0.op.weight",
                "model.diffusion_model.output_blocks.2.1.conv.weight",             # SD1 up block 0 has no attention
                "model.diffusion_model.middle_block.1.proj_in.weight",
                "model.diffusion_model.time_embed.2.bias", "model.diffusion_model.out.2.weight",
                "first_stage_model.encoder.mid.attn_1.q.weight", "first_stage_model.decoder.up.0.block.2.conv2.weight",
                "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight",
                "first_stage_model.encoder.down.0.downsample.conv.weight", "first_stage_model.decoder.up.3.upsample.conv.weight",
                "first_stage_model.quant_conv.weight",
                "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight",
                "cond_stage_model.transformer.text_model.final_layer_norm.bias"):
        assert key in sd15, key
    for key, shape in (("model.diffusion_model.label_emb.0.0.weight", (1280, 2816)),
                       ("model.diffusion_model.output_blocks.2.2.conv.weight", (1280, 1280, 3, 3)),
                       ("model.diffusion_model.input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight", (640, 2048)),
                       ("model.diffusion_model.input_blocks.4.1.proj_in.weight", (640, 640)),  # linear in SDXL
                       ("conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias", (1280,)),
                       ("conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight", (3840, 1280)),
                       ("conditioner.embedders.1.model.text_projection", (1280, 1280)),
                       ("conditioner.embedders.1.model.positional_embedding", (77, 1280)),
                       ("conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight", (49408, 768)),
                       ("first_stage_model.encoder.mid.attn_1.v.weight", (512, 512, 1, 1))):
        assert sdxl.get(key) == shape, key
    assert len(sdxl) == 2513 and len(sd15) == 1130  # + position_ids / logit_scale in real files


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_tiny_round_trip_diffusers_original_diffusers_is_exact(kind):
    modules = tiny_modules(kind, seed=3)
    state = {c: m.state_dict() for c, m in modules.items()}
    original, plan = ldm.diffusers_to_original(state, kind, tiny_architecture(kind))
    assert not plan.unexpected
    attn_q = original["first_stage_model.encoder.mid.attn_1.q.weight"]
    assert attn_q.dim() == 4 and attn_q.shape[2:] == (1, 1)  # 1x1 conv in the original, linear in diffusers
    if kind == "sdxl":
        fused = original["conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"]
        te2 = state["text_encoder_2"]
        assert torch.equal(fused[32:64], te2["text_model.encoder.layers.0.self_attn.k_proj.weight"])
        assert torch.equal(original["conditioner.embedders.1.model.text_projection"], te2["text_projection.weight"].t())
    back, plan2 = ldm.original_to_diffusers(original, kind, tiny_architecture(kind))
    assert not plan2.unexpected
    for component, sd in state.items():
        got = {(k[len("text_model."):] if k not in sd and k.startswith("text_model.") else k): v for k, v in back[component].items()}
        assert set(got) == set(sd), component
        for k, v in sd.items():
            assert torch.equal(got[k], v), (component, k)


def test_converter_reports_extras_and_ignores_known_ones():
    original, _ = ldm.diffusers_to_original({c: m.state_dict() for c, m in tiny_modules("sd15").items()}, "sd15",
                                            tiny_architecture("sd15"))
    original.update({"betas": torch.zeros(3), "alphas_cumprod": torch.zeros(3), "model_ema.decay": torch.zeros(()),
                     "model_ema.diffusion_modelinput_blocks00weight": torch.zeros(1),
                     "cond_stage_model.transformer.text_model.embeddings.position_ids": torch.zeros(1, 77),
                     "model.diffusion_model.input_blocks.1.0.mystery.weight": torch.zeros(1), "something.else": torch.zeros(1)})
    _, plan = ldm.original_to_diffusers(original, "sd15", tiny_architecture("sd15"))
    assert sorted(plan.unexpected) == ["model.diffusion_model.input_blocks.1.0.mystery.weight", "something.else"]
    assert len(plan.ignored) == 5


def test_old_clip_layout_without_text_model_level_is_read():
    plan = ldm.plan_from_original(["cond_stage_model.transformer.encoder.layers.0.mlp.fc1.weight"], "sd15", load_architecture("sd15"))
    assert plan.rules["text_encoder"][0].diffusers == ("text_model.encoder.layers.0.mlp.fc1.weight",)


# ---------------------------------------------------------------- detection

def test_header_is_read_without_tensors(tiny_files):
    header = read_header(tiny_files["sdxl"])
    assert "lora_native.architecture" in header.metadata
    assert header.shape("model.diffusion_model.input_blocks.0.0.weight") == (16, 4, 3, 3)


def test_detects_tiny_and_full_size_layouts(tiny_files, tmp_path):
    assert detect_model_type(tiny_files["sd15"]) == "sd15"
    assert detect_model_type(tiny_files["sdxl"]) == "sdxl"
    for kind in ("sd15", "sdxl"):
        shapes = full_original_shapes(kind)
        shapes["conditioner.embedders.1.model.logit_scale" if kind == "sdxl" else "betas"] = (1,)
        assert detect_model_type(write_header_only(str(tmp_path / (kind + ".safetensors")), shapes)) == kind


def _expect(path, *words):
    with pytest.raises(ModelError) as info:
        detect_model_type(path)
    message = str(info.value)
    for word in words:
        assert word in message, message
    assert isinstance(info.value, LoraNativeError)
    return message


def test_detection_errors_say_what_the_file_is(tmp_path):
    sd15 = full_original_shapes("sd15")
    sdxl = full_original_shapes("sdxl")

    def file(name, shapes, metadata=None):
        return write_header_only(str(tmp_path / name), shapes, metadata)

    sd2 = {k: v for k, v in sd15.items() if not k.startswith("cond_stage_model.")}
    sd2["model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"] = (320, 1024)
    sd2["cond_stage_model.model.token_embedding.weight"] = (49408, 1024)
    _expect(file("sd2.safetensors", sd2), "Stable Diffusion 2", "v2")
    _expect(file("sd3.safetensors", {"model.diffusion_model.joint_blocks.0.context_block.adaLN_modulation.1.bias": (9216,)}),
            "Stable Diffusion 3")
    _expect(file("flux.safetensors", {"double_blocks.0.img_attn.norm.key_norm.scale": (128,)}), "Flux")
    unet_only = {k: v for k, v in sd15.items() if k.startswith("model.diffusion_model.") or k.startswith("first_stage_model.")}
    _expect(file("pruned.safetensors", unet_only), "this file has no text encoder", "cond_stage_model.transformer.")
    xl_no_te2 = {k: v for k, v in sdxl.items() if not k.startswith("conditioner.embedders.1.")}
    _expect(file("xl_partial.safetensors", xl_no_te2), "this file has no text encoder", "text_encoder_2")
    no_vae = {k: v for k, v in sd15.items() if not k.startswith("first_stage_model.")}
    _expect(file("novae.safetensors", no_vae), "no VAE")
    lora = {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 320, 1, 1),
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": (320, 4, 1, 1),
            "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": ()}
    _expect(file("style.safetensors", lora, {"ss_network_module": "networks.lora"}), "LoRA file", "network_weights")
    refiner = {k: v for k, v in sdxl.items() if not k.startswith("conditioner.")}
    refiner["model.diffusion_model.label_emb.0.0.weight"] = (1536, 2560)
    refiner["conditioner.embedders.0.model.text_projection"] = (1280, 1280)
    _expect(file("refiner.safetensors", refiner), "refiner")
    inpaint = dict(sd15)
    inpaint["model.diffusion_model.input_blocks.0.0.weight"] = (320, 9, 3, 3)
    _expect(file("inpaint.safetensors", inpaint), "inpainting")
    vae_only = {k[len("first_stage_model."):]: v for k, v in sd15.items() if k.startswith("first_stage_model.")}
    _expect(file("vae.safetensors", vae_only), "a VAE alone")
    diffusers_unet = {"conv_in.weight": (320, 4, 3, 3), "time_embedding.linear_1.weight": (1280, 320)}
    _expect(file("unet.safetensors", diffusers_unet), "UNet alone")


def test_pickles_and_non_safetensors_are_refused(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"PK\x03\x04 pretend zip")
    _expect(str(ckpt), "pickle", ".safetensors", "runs whatever code")
    disguised = tmp_path / "model.safetensors"
    disguised.write_bytes(b"PK\x03\x04" + b"\0" * 64)
    _expect(str(disguised), "pickle")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"hello, this is text and not a model at all")
    _expect(str(junk), "not a safetensors file")
    _expect(str(tmp_path / "missing.safetensors"), "not found")
    _expect(str(tmp_path), "not a diffusers model folder")


def test_detects_diffusers_folders(tmp_path):
    for kind in ("sd15", "sdxl"):
        folder = write_tiny_diffusers_folder(str(tmp_path / kind), kind)
        assert detect_model_type(folder) == kind
    _expect(str(tmp_path / "sd15" / "unet"), "unet/ folder")
    sd2 = tmp_path / "sd2"
    (sd2 / "unet").mkdir(parents=True)
    (sd2 / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    (sd2 / "unet" / "config.json").write_text(json.dumps({"cross_attention_dim": 1024, "in_channels": 4}))
    _expect(str(sd2), "v2")
    flux = tmp_path / "flux"
    flux.mkdir()
    (flux / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    _expect(str(flux), "Flux")


# ---------------------------------------------------------------- loading and running tiny models

def _encode_prompts(base, prompts):
    ids = [tk.tokenize(t, prompts) for t in base.tokenizers]
    outs = [te(i, output_hidden_states=True) for te, i in zip(base.text_encoders, ids)]
    if base.kind == "sd15":
        return outs[0].last_hidden_state, None
    context = torch.cat([outs[0].hidden_states[-2], outs[1].hidden_states[-2]], dim=-1)
    time_ids = torch.tensor([[64, 64, 0, 0, 64, 64]] * len(prompts), dtype=torch.float32)
    return context, {"text_embeds": outs[1].text_embeds, "time_ids": time_ids}


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_tiny_model_loads_and_runs(tiny_files, kind):
    base = load_base_model(tiny_files[kind])
    assert base.kind == kind and base.source == tiny_files[kind]
    assert base.prediction_type == "epsilon" and base.noise_scheduler_config["beta_schedule"] == "scaled_linear"
    assert base.scaling_factor == (0.18215 if kind == "sd15" else 0.13025)
    assert len(base.text_encoders) == len(base.tokenizers) == (1 if kind == "sd15" else 2)
    assert not base.unexpected_keys and not base.ignored_keys
    assert all(not p.requires_grad for p in base.unet.parameters())
    for module in [base.unet, base.vae] + base.text_encoders:
        assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in module.parameters())
        assert all(b.device.type == "cpu" for b in module.buffers())
    # the weights are the seeded ones, through the original layout and back
    reference = tiny_modules(kind)
    for name, module in zip(["unet", "vae", "text_encoder", "text_encoder_2"], [base.unet, base.vae] + base.text_encoders):
        for k, v in reference[name].state_dict().items():
            assert torch.equal(module.state_dict()[k], v), (name, k)

    images = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        latents = base.vae.encode(images).latent_dist.sample() * base.scaling_factor
        assert latents.shape == (2, 4, 8, 8)
        assert base.vae.decode(latents / base.scaling_factor).sample.shape == (2, 3, 64, 64)
        context, added = _encode_prompts(base, ["a dog", "a paper-cut landscape in the style of sks"])
        assert context.shape == (2, 77, base.architecture["unet"]["cross_attention_dim"])
        if added:
            assert added["text_embeds"].shape == (2, 32)
        out = base.unet(latents, torch.tensor([10, 900]), encoder_hidden_states=context, added_cond_kwargs=added).sample
    assert out.shape == latents.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_diffusers_folder_loads_the_same_weights(tmp_path, tiny_files, kind):
    folder = write_tiny_diffusers_folder(str(tmp_path / kind), kind, legacy_vae_names=(kind == "sd15"))
    if kind == "sd15":
        assert "encoder.mid_block.attentions.0.query.weight" in read_header(
            os.path.join(folder, "vae", "diffusion_pytorch_model.safetensors")).tensors
    from_folder = load_base_model(folder, model_type=kind)
    from_file = load_base_model(tiny_files[kind])
    assert from_folder.kind == kind and from_folder.prediction_type == "epsilon"
    assert from_folder.noise_scheduler_config["beta_end"] == 0.012
    pairs = [(from_folder.unet, from_file.unet), (from_folder.vae, from_file.vae)] + list(
        zip(from_folder.text_encoders, from_file.text_encoders))
    for a, b in pairs:
        sa, sb = a.state_dict(), b.state_dict()
        assert set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    if kind == "sdxl":
        assert from_folder.tokenizers[1].pad_token_id == 0


def test_load_options_and_reports(tmp_path, tiny_files):
    half = load_base_model(tiny_files["sd15"], dtype=torch.float16)
    assert all(p.dtype == torch.float16 for p in half.unet.parameters())
    assert [b.dtype for n, b in half.text_encoders[0].named_buffers() if n.endswith("position_ids")] == [torch.int64]
    with pytest.raises(ModelError, match="model_type is sdxl"):
        load_base_model(tiny_files["sd15"], model_type="sdxl")
    # a file with extras: the known ones are ignored, the unknown ones reported
    from safetensors.torch import load_file, save_file

    state = load_file(tiny_files["sd15"])
    state.update({"betas": torch.zeros(4), "model_ema.decay": torch.zeros(()), "v_pred": torch.zeros(()),
                  "cond_stage_model.transformer.text_model.embeddings.position_ids": torch.arange(77)[None],
                  "my_addon.weight": torch.zeros(2)})
    path = str(tmp_path / "extras.safetensors")
    save_file(state, path, metadata=read_header(tiny_files["sd15"]).metadata)
    with pytest.warns(UserWarning, match="my_addon.weight"):
        base = load_base_model(path, tokenizer_path=TINY_TOKENIZER_DIR)
    assert base.unexpected_keys == ["my_addon.weight"] and len(base.ignored_keys) == 4
    assert base.prediction_type == "v_prediction"  # ComfyUI's v_pred marker


def test_loading_fails_fast_without_a_tokenizer(tmp_path, tiny_files, monkeypatch):
    lonely = tmp_path / "lonely.safetensors"
    lonely.write_bytes(open(tiny_files["sd15"], "rb").read())
    monkeypatch.setattr(tk, "_package_file", lambda *a: None)
    with pytest.raises(ModelError, match="tokenizer_path"):
        load_base_model(str(lonely))
    assert load_base_model(str(lonely), tokenizer_path=TINY_TOKENIZER_DIR).kind == "sd15"
    bpe = write_bpe_file(str(tmp_path / "bpe.txt.gz"))
    with pytest.raises(ModelError, match="49408 tokens but its text_encoder expects %d" % tiny_vocab_size()):
        load_base_model(str(lonely), tokenizer_path=bpe)


def test_tiny_models_stay_tiny(tiny_files):
    """The demo and the tests train these on the CPU: keep them a few million parameters (the
    real ones are 860M / 2.6B), counted rather than timed."""
    for kind in ("sd15", "sdxl"):
        base = load_base_model(tiny_files[kind])
        unet = sum(p.numel() for p in base.unet.parameters())
        rest = sum(p.numel() for m in [base.vae, *base.text_encoders] for p in m.parameters())
        assert 1_000_000 < unet < 3_000_000 and rest < 1_000_000, (kind, unet, rest)


# ---------------------------------------------------------------- tokenizer

def test_tokenizer_from_a_bpe_file(tmp_path):
    bpe = write_bpe_file(str(tmp_path / "bpe_simple_vocab_16e6.txt.gz"))
    merges = tk.read_bpe_merges(bpe)
    assert len(merges) == 48894  # the file holds more; CLIP uses lines 1..48894
    tok = tk.load_clip_tokenizer(bpe)
    assert len(tok) == 49408
    assert tok.convert_tokens_to_ids("<|startoftext|>") == 49406 and tok.convert_tokens_to_ids("<|endoftext|>") == 49407
    assert tok.convert_tokens_to_ids("!") == 0 and tok.pad_token_id == 49407
    folder = tk.folder_from_bpe(bpe)
    assert open(os.path.join(folder, "merges.txt"), encoding="utf-8").readline() == "#version: 0.2\n"
    ids = tk.tokenize(tok, ["a photo", "x " * 200])
    assert ids.shape == (2, 77) and ids.dtype == torch.int64
    n = len(tok.tokenize("a photo"))
    assert ids[0, 0] == 49406 and (ids[0, n + 1:] == 49407).all() and (ids[0] == 49407).sum() == 77 - 1 - n  # eos, padding
    assert ids[1, 0] == 49406 and ids[1, -1] == 49407 and (ids[1] == 49407).sum() == 1  # long prompt cut to fit
    tok2 = tk.load_clip_tokenizer(bpe, pad_token="!")
    padded = tk.tokenize(tok2, "a")[0].tolist()
    assert padded[:3] == [49406, tok2.convert_tokens_to_ids("a</w>"), 49407] and padded[3:] == [0] * 74


def test_tokenizer_pads_to_77_whatever_the_folder_declares(tmp_path):
    folder = tmp_path / "sd1_tokenizer"
    folder.mkdir()
    for name in ("vocab.json", "merges.txt"):
        (folder / name).write_bytes(open(os.path.join(TINY_TOKENIZER_DIR, name), "rb").read())
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 8192, "pad_token": "<|endoftext|>"}))
    tok = tk.load_clip_tokenizer(str(folder))
    assert tok.model_max_length == 77
    assert tk.tokenize(tok, "sks " * 500).shape == (1, 77)


def test_tokenizer_from_a_tokenizer_json(tmp_path):
    saved = tmp_path / "saved"
    tk.load_clip_tokenizer(TINY_TOKENIZER_DIR).save_pretrained(str(saved))
    if not (saved / "tokenizer.json").is_file():
        pytest.skip("this transformers saves no tokenizer.json")
    lonely = tmp_path / "clip-tokenizer.json"
    lonely.write_bytes((saved / "tokenizer.json").read_bytes())
    for source in (str(lonely), str(saved / "tokenizer.json")):
        tok = tk.load_clip_tokenizer(source)
        assert len(tok) == tiny_vocab_size() and tok.convert_ids_to_tokens(tk.tokenize(tok, "sks style")[0, :4].tolist()) == [
            "<|startoftext|>", "sks</w>", "style</w>", "<|endoftext|>"]


def test_old_tokenizer_constructor_trap_is_avoided():
    """transformers 5 ignores vocab_file/merges_file: the old form gives a tokenizer of 2-3 tokens."""
    from transformers import CLIPTokenizer

    old = CLIPTokenizer(vocab_file=os.path.join(TINY_TOKENIZER_DIR, "vocab.json"),
                        merges_file=os.path.join(TINY_TOKENIZER_DIR, "merges.txt"))
    ours = tk.load_clip_tokenizer(TINY_TOKENIZER_DIR)
    assert len(ours) == len(json.load(open(os.path.join(TINY_TOKENIZER_DIR, "vocab.json"))))
    assert len(old) in (len(ours), 2, 3)  # whichever transformers is installed, ours has the full vocabulary


def test_tokenizer_sources_in_order(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(tk, "_package_file", lambda *a: None)
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"")
    assert tk.find_tokenizer_sources(model_path=str(model)) == []
    with pytest.raises(ModelError, match="tokenizer_path"):
        tk.load_tokenizers(["text_encoder"], model_path=str(model))
    # the Hugging Face cache (offline, no network)
    snap = tmp_path / "hf" / "models--openai--clip-vit-large-patch14" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    for name in ("vocab.json", "merges.txt"):
        (snap / name).write_bytes(open(os.path.join(TINY_TOKENIZER_DIR, name), "rb").read())
    (tmp_path / "hf" / "models--openai--clip-vit-large-patch14" / "refs").mkdir()
    (tmp_path / "hf" / "models--openai--clip-vit-large-patch14" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    sources = tk.find_tokenizer_sources(model_path=str(model))
    assert [s[1] for s in sources] == ["Hugging Face cache (openai/clip-vit-large-patch14)"]
    # beside the model beats the cache; tokenizer_path beats both
    beside = tmp_path / "m.tokenizer"
    beside.mkdir()
    for name in ("vocab.json", "merges.txt"):
        (beside / name).write_bytes(open(os.path.join(TINY_TOKENIZER_DIR, name), "rb").read())
    assert tk.find_tokenizer_sources(model_path=str(model))[0] == (str(beside), "beside the model")
    assert tk.find_tokenizer_sources("/x/given", str(model))[0] == ("/x/given", "tokenizer_path")


def test_bpe_file_of_an_installed_package_is_found_without_importing_it(tmp_path, monkeypatch):
    package = tmp_path / "site" / "open_clip"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('open_clip must not be imported')\n")
    write_bpe_file(str(package / "bpe_simple_vocab_16e6.txt.gz"), merges=300)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    sources = tk.find_tokenizer_sources()
    assert sources and sources[-1][0] == str(package / "bpe_simple_vocab_16e6.txt.gz")
    assert "open_clip" not in sys.modules
    tok = tk.load_clip_tokenizer(sources[-1][0])
    assert len(tok) == 512 + 300 + 2


def test_shipped_tiny_tokenizer_is_what_the_corpus_gives(tmp_path):
    merges = learn_bpe(TINY_CORPUS, TINY_MERGES)
    shipped = open(os.path.join(TINY_TOKENIZER_DIR, "merges.txt"), encoding="utf-8").read().splitlines()[1:]
    assert shipped == ["%s %s" % m for m in merges]
    assert json.load(open(os.path.join(TINY_TOKENIZER_DIR, "vocab.json"), encoding="utf-8")) == tk.vocab_from_merges(merges)


# ---------------------------------------------------------------- the key map

def test_full_sd15_targets(meta_models):
    base = meta_models["sd15"]
    targets = keymap.lora_targets(base)
    unet = [t for t in targets if t.component == "unet"]
    te = [t for t in targets if t.component == "te1"]
    assert len(unet) == 192 and len(te) == 72
    with_conv = [t for t in keymap.lora_targets(base, conv_dim=4) if t.component == "unet"]
    assert len(with_conv) == 278
    extra = [t for t in with_conv if t not in unet]
    leaf = lambda t: t.module_path.rsplit(".", 1)[-1]  # noqa: E731
    assert sum(t.kind == "conv3x3" for t in extra) == 50
    assert sum(leaf(t) == "time_emb_proj" for t in extra) == 22 and sum(leaf(t) == "conv_shortcut" for t in extra) == 14
    keys = {t.key for t in targets}
    for key in ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
                "lora_unet_down_blocks_0_attentions_0_proj_in", "lora_unet_mid_block_attentions_0_proj_out",
                "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_0_proj",
                "lora_unet_up_blocks_1_attentions_0_transformer_blocks_0_attn2_to_out_0",
                "lora_te_text_model_encoder_layers_0_self_attn_q_proj", "lora_te_text_model_encoder_layers_11_mlp_fc2"):
        assert key in keys, key
    assert {t.kind for t in unet} == {"linear", "conv1x1"}  # SD1 proj_in / proj_out are 1x1 convs
    assert len(keys) == len(targets)


def test_full_sdxl_targets(meta_models):
    base = meta_models["sdxl"]
    targets = keymap.lora_targets(base)
    by = {c: [t for t in targets if t.component == c] for c in ("unet", "te1", "te2")}
    assert (len(by["unet"]), len(by["te1"]), len(by["te2"])) == (722, 72, 192)
    assert len([t for t in keymap.lora_targets(base, conv_dim=True) if t.component == "unet"]) == 788
    keys = {t.key for t in targets}
    for key in ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",
                "lora_unet_input_blocks_7_1_transformer_blocks_9_ff_net_2", "lora_unet_middle_block_1_proj_in",
                "lora_unet_output_blocks_0_1_transformer_blocks_9_attn2_to_k",
                "lora_te1_text_model_encoder_layers_11_self_attn_out_proj",
                "lora_te2_text_model_encoder_layers_31_mlp_fc1"):
        assert key in keys, key
    assert {t.kind for t in by["unet"]} == {"linear"}  # SDXL uses linear proj_in / proj_out
    conv_keys = {t.key for t in keymap.lora_targets(base, conv_dim=True, text_encoder=False)}
    for key in ("lora_unet_input_blocks_1_0_in_layers_2", "lora_unet_input_blocks_1_0_emb_layers_1",
                "lora_unet_input_blocks_4_0_skip_connection", "lora_unet_input_blocks_3_0_op",
                "lora_unet_output_blocks_2_2_conv", "lora_unet_middle_block_2_out_layers_3"):
        assert key in conv_keys, key


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_every_kohya_key_lands_on_an_original_weight(meta_models, kind):
    base = meta_models[kind]
    shapes = full_original_shapes(kind)
    km = keymap.key_map(kind)
    for target in keymap.lora_targets(base, conv_dim=True):
        entry = km.entries[target.key]
        assert entry.original_key in shapes, (target.key, entry.original_key)
        assert entry.module_path == target.module_path and entry.component == target.component
        shape = shapes[entry.original_key]
        weight = target.module.weight
        if entry.original_rows:
            start, stop = entry.original_rows
            assert stop - start == weight.shape[0] and shape[0] == 3 * weight.shape[0]
        else:
            assert shape[:2] == tuple(weight.shape[:2]), target.key
        assert keymap.kohya_key_to_module_path(target.key, kind) == (target.component, target.module_path)
    if kind == "sdxl":
        assert km.lookup("lora_te2_text_model_encoder_layers_3_self_attn_v_proj").comfy_key == \
            "clip_g.transformer.text_model.encoder.layers.3.self_attn.v_proj.weight"
        assert km.lookup("lora_unet_output_blocks_2_2_conv").comfy_key == "diffusion_model.output_blocks.2.2.conv.weight"
        assert keymap.kohya_key_to_original("lora_te2_text_model_encoder_layers_3_self_attn_v_proj", kind) == (
            "conditioner.embedders.1.model.transformer.resblocks.3.attn.in_proj_weight", (2560, 3840))
        assert keymap.kohya_key_to_original("lora_te2_text_model_encoder_layers_3_mlp_fc2", kind) == (
            "conditioner.embedders.1.model.transformer.resblocks.3.mlp.c_proj.weight", None)
        assert keymap.kohya_key_to_original("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", kind) == (
            "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight", None)
    else:
        assert km.lookup("lora_te_text_model_encoder_layers_0_mlp_fc1").comfy_key == \
            "clip_l.transformer.text_model.encoder.layers.0.mlp.fc1.weight"
        assert keymap.kohya_key_to_original("lora_unet_down_blocks_1_attentions_1_proj_out", kind) == (
            "model.diffusion_model.input_blocks.5.1.proj_out.weight", None)
        assert keymap.kohya_key_to_original("lora_unet_up_blocks_0_upsamplers_0_conv", kind) == (
            "model.diffusion_model.output_blocks.2.1.conv.weight", None)
        assert keymap.kohya_key_to_original("lora_te_text_model_encoder_layers_0_mlp_fc1", kind) == (
            "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight", None)


def test_other_namings_normalise_to_kohya():
    n = keymap.normalize_lora_key
    # SD1.5: kohya canonical names are diffusers paths; LDM-named kohya, ComfyUI-native and PEFT map onto them
    want = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
    for name in ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k",
                 "diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k",
                 "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k",
                 "base_model.model.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k",
                 "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.processor.to_k_lora", want):
        assert n(name, "sd15") == want, name
    assert n("unet.mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora", "sd15") == \
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_out_0"
    te = "lora_te_text_model_encoder_layers_5_self_attn_q_proj"
    for name in ("text_encoder.text_model.encoder.layers.5.self_attn.q_proj", "lora_te1_text_model_encoder_layers_5_self_attn_q_proj",
                 "text_encoders.clip_l.transformer.text_model.encoder.layers.5.self_attn.q_proj"):
        assert n(name, "sd15") == te, name
    # SDXL: kohya canonical names are LDM paths; diffusers-named kohya keys map onto them
    want = "lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_out_0"
    for name in ("lora_unet_down_blocks_1_attentions_0_transformer_blocks_1_attn1_to_out_0",
                 "diffusion_model.input_blocks.4.1.transformer_blocks.1.attn1.to_out.0",
                 "unet.down_blocks.1.attentions.0.transformer_blocks.1.attn1.to_out.0", want):
        assert n(name, "sdxl") == want, name
    assert n("text_encoder_2.text_model.encoder.layers.0.mlp.fc1", "sdxl") == "lora_te2_text_model_encoder_layers_0_mlp_fc1"
    assert n("text_encoders.clip_g.transformer.text_model.encoder.layers.0.mlp.fc1", "sdxl") == \
        "lora_te2_text_model_encoder_layers_0_mlp_fc1"
    assert n("lora_unet_not_a_module", "sdxl") is None
    assert keymap.split_lora_key("lora_unet_conv_in.lora_down.weight") == ("lora_unet_conv_in", ".lora_down.weight")
    assert keymap.split_lora_key("unet.x.lora_A.weight") == ("unet.x", ".lora_A.weight")
    assert keymap.split_lora_key("lora_te_x.alpha") == ("lora_te_x", ".alpha")


def test_text_encoder_keys_keep_text_model_whatever_transformers_builds(tiny_files):
    """transformers 5's CLIPTextModel has no `text_model.` level; the kohya names must keep it."""
    base = load_base_model(tiny_files["sdxl"])
    targets = [t for t in keymap.lora_targets(base, unet=False)]
    assert len(targets) == 2 * 2 * 6  # two tiny encoders of two layers
    for t in targets:
        assert t.key.startswith(("lora_te1_text_model_encoder_layers_", "lora_te2_text_model_encoder_layers_")), t.key
        encoder = base.text_encoders[0 if t.component == "te1" else 1]
        assert encoder.get_submodule(t.module_path) is t.module
    te1_paths = [t.module_path for t in targets if t.component == "te1"]
    import transformers

    if int(transformers.__version__.split(".")[0]) >= 5:
        assert all(p.startswith("encoder.layers.") for p in te1_paths)  # the trap is real here


def test_tiny_targets_follow_the_real_pattern(tiny_files):
    """The tiny models have the real block layout (two resnets per block), so their LoRA key
    names are real ones: SD1.5-tiny has exactly the real SD1.5 keys, SDXL-tiny a subset
    (fewer transformer blocks and text-encoder layers)."""
    for kind in ("sd15", "sdxl"):
        tiny_base = load_base_model(tiny_files[kind])
        tiny_keys = {t.key for t in keymap.lora_targets(tiny_base, conv_dim=True)}
        real_keys = {t.key for t in keymap.lora_targets(empty_base_model(kind), conv_dim=True)}
        tiny_unet = {k for k in tiny_keys if k.startswith("lora_unet_")}
        real_unet = {k for k in real_keys if k.startswith("lora_unet_")}
        if kind == "sd15":
            assert tiny_unet == real_unet
        else:
            assert tiny_unet <= real_unet and "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q" in tiny_unet
        assert tiny_keys <= real_keys
        kinds = {t.kind for t in keymap.lora_targets(tiny_base, conv_dim=True)}
        assert kinds == {"linear", "conv1x1", "conv3x3"}
        km = keymap.key_map(kind, tiny_base.architecture)
        assert all(km.lookup(k) is not None for k in tiny_keys)
