"""The kohya LoRA file: `<key>.lora_down.weight`, `<key>.lora_up.weight`, `<key>.alpha`,
all `ss_*` metadata strings, the `sshs_*` hashes A1111's extensions index by, and the
`modelspec.*` fields. Loads unchanged in A1111, Forge, ComfyUI and sd.cpp."""
import datetime
import hashlib
import json
import os

import torch
from safetensors.torch import save as st_save

from ..fsutil import atomic_write_bytes

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "float": torch.float32, "fp32": torch.float32}
BASE_VERSION = {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0"}
ARCHITECTURE = {"sd15": "stable-diffusion-v1/lora", "sdxl": "stable-diffusion-xl-v1-base/lora"}
IMPLEMENTATION = {"sd15": "diffusers", "sdxl": "https://github.com/Stability-AI/generative-models"}


def model_hashes(tensors, metadata):
    """(sshs_model_hash, sshs_legacy_hash) as sd-scripts computes them: the file serialised
    with only the ss_* metadata; sha256 of everything after the header, and sha256 of the
    64 KiB at offset 1 MiB (first 8 hex digits)."""
    ss_only = {k: v for k, v in metadata.items() if k.startswith("ss_")}
    data = st_save(tensors, ss_only)
    n = int.from_bytes(data[:8], "little")
    model_hash = hashlib.sha256(data[8 + n:]).hexdigest()
    legacy = hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    return model_hash, legacy


def save_lora(path, tensors, metadata, save_precision="fp16"):
    """Write a LoRA file atomically: weights in save_precision (alpha stays a 0-d tensor of
    that dtype, as kohya writes it), metadata all strings, hashes filled in."""
    dtype = DTYPES[save_precision]
    out = {k: v.detach().to("cpu", dtype).contiguous() for k, v in sorted(tensors.items())}
    meta = {k: str(v) for k, v in metadata.items() if v is not None}
    meta["sshs_model_hash"], meta["sshs_legacy_hash"] = model_hashes(out, meta)
    data = st_save(out, meta)
    atomic_write_bytes(os.fspath(path), data, durable=True)
    return meta


def _fmt_float(x):
    return repr(float(x)) if x is not None else None


def build_metadata(cfg, kind, *, rank, alpha, steps, epoch, num_images, started_at, finished_at,
                   tag_frequency, dataset_dirs, resolution, base_model_name):
    """The metadata kohya's train_network.py writes, from our config and run."""
    meta = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(int(rank)),
        "ss_network_alpha": _fmt_float(alpha),
        "ss_base_model_version": BASE_VERSION[kind],
        "ss_sd_model_name": base_model_name,
        "ss_output_name": cfg.output_name,
        "ss_steps": str(int(steps)),
        "ss_epoch": str(int(epoch)),
        "ss_num_train_images": str(int(num_images)),
        "ss_resolution": "(%d, %d)" % tuple(resolution),
        "ss_learning_rate": _fmt_float(cfg.learning_rate),
        "ss_unet_lr": _fmt_float(cfg.unet_lr),
        "ss_text_encoder_lr": _fmt_float(cfg.text_encoder_lr) if cfg.train_text_encoder else "0.0",
        "ss_network_train_unet_only": str(not cfg.train_text_encoder),
        "ss_mixed_precision": cfg.mixed_precision,
        "ss_training_started_at": _fmt_float(started_at),
        "ss_training_finished_at": _fmt_float(finished_at) if finished_at else None,
        "ss_tag_frequency": json.dumps(tag_frequency, ensure_ascii=False),
        "ss_dataset_dirs": json.dumps(dataset_dirs, ensure_ascii=False),
        "ss_batch_size_per_device": str(cfg.batch_size),
        "ss_gradient_accumulation_steps": str(cfg.gradient_accumulation_steps),
        "ss_max_train_steps": str(cfg.max_train_steps),
        "ss_lr_scheduler": cfg.lr_scheduler,
        "ss_lr_warmup_steps": str(cfg.lr_warmup_steps),
        "ss_optimizer": cfg.optimizer,
        "ss_seed": str(cfg.seed),
        "ss_clip_skip": str(cfg.clip_skip),
        "ss_noise_offset": _fmt_float(cfg.noise_offset),
        "ss_min_snr_gamma": _fmt_float(cfg.min_snr_gamma),
        "ss_network_dropout": _fmt_float(cfg.network_dropout),
        "ss_caption_dropout_rate": _fmt_float(cfg.caption_dropout_rate),
        "ss_shuffle_caption": str(cfg.shuffle_caption),
        "ss_keep_tokens": str(cfg.keep_tokens),
        "ss_flip_aug": str(cfg.flip_aug),
        "ss_color_aug": str(cfg.color_aug),
        "ss_enable_bucket": str(cfg.enable_bucket),
        "ss_bucket_no_upscale": str(cfg.bucket_no_upscale),
        "ss_cache_latents": str(cfg.cache_latents),
        "ss_v2": "False",
        "ss_v_parameterization": str(cfg.v_parameterization),
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": ARCHITECTURE[kind],
        "modelspec.implementation": IMPLEMENTATION[kind],
        "modelspec.title": cfg.output_name,
        "modelspec.resolution": "%dx%d" % tuple(resolution),
        "modelspec.date": datetime.datetime.fromtimestamp(started_at).strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if cfg.conv_lora:
        meta["ss_network_args"] = json.dumps({"conv_dim": str(cfg.conv_dim), "conv_alpha": str(cfg.conv_alpha)})
    if cfg.v_parameterization:
        meta["modelspec.prediction_type"] = "v"
    return meta
