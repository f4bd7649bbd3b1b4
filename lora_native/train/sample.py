"""Sample pictures during training (sample_prompts every sample_every_n_steps): a plain
DDIM sampler over the model being trained, classifier-free guidance 7, 20 steps, fixed seeds,
so the same prompt at two steps shows what the LoRA learned in between."""
import os

import numpy as np
import torch

from .. import _native
from ..fsutil import atomic_write_bytes
from .conditioning import encode_text, time_ids

STEPS = 20
GUIDANCE = 7.0


def read_prompts(sample_prompts):
    if isinstance(sample_prompts, (list, tuple)):
        return [p for p in sample_prompts if p.strip()]
    with open(sample_prompts, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


@torch.no_grad()
def sample_images(base, schedule, prompts, size, seed, v_prediction, device, dtype, clip_skip=1):
    """-> list of HxWx3 uint8 arrays, one per prompt."""
    w, h = size
    scale = 2 ** (len(base.vae.config.block_out_channels) - 1)
    channels = base.unet.config.in_channels
    a = schedule.alphas_cumprod
    ts = np.linspace(schedule.steps - 1, 0, STEPS).round().astype(int)
    images = []
    for i, prompt in enumerate(prompts):
        g = torch.Generator().manual_seed(int(seed) + i)
        x = torch.randn(1, channels, h // scale, w // scale, generator=g).to(device)
        cond, pooled = encode_text(base.kind, base.text_encoders, base.tokenizers, [prompt, ""], clip_skip, device)
        added = None
        if base.kind == "sdxl":
            ids = time_ids([(w, h)] * 2, [(0, 0)] * 2, [(w, h)] * 2, device)
            added = {"text_embeds": pooled, "time_ids": ids}
        for k, t in enumerate(ts):
            a_t = a[t]
            a_prev = a[ts[k + 1]] if k + 1 < len(ts) else torch.tensor(1.0, device=device)
            inp = torch.cat([x, x]).to(dtype)
            out = base.unet(inp, torch.full((2,), int(t), device=device), cond.to(dtype),
                            added_cond_kwargs=added).sample.float()
            out = out[1] + GUIDANCE * (out[0] - out[1])
            if v_prediction:
                eps = a_t.sqrt() * out + (1 - a_t).sqrt() * x[0]
            else:
                eps = out
            x0 = (x[0] - (1 - a_t).sqrt() * eps) / a_t.sqrt()
            x = (a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps).unsqueeze(0)
        img = base.vae.decode(x.float() / base.scaling_factor).sample[0]
        img = ((img.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
        images.append(np.ascontiguousarray(img))
    return images


def generate_samples(trainer, writer=None):
    cfg = trainer.cfg
    prompts = read_prompts(cfg.sample_prompts)
    folder = os.path.join(cfg.output_dir, "samples")
    os.makedirs(folder, exist_ok=True)
    trainer.network.eval()
    try:
        images = sample_images(trainer.base, trainer.schedule, prompts, trainer.resolution, cfg.seed,
                               trainer.v_prediction, trainer.device, trainer.weight_dtype, cfg.clip_skip)
    finally:
        trainer.network.train()
    paths = []
    for i, img in enumerate(images):
        path = os.path.join(folder, "%s_step%06d_%02d.png" % (cfg.output_name, trainer.global_step, i))
        atomic_write_bytes(path, _native.encode_png(img))
        paths.append(path)
        if writer is not None:
            writer.add_image("samples/%d" % i, img, trainer.global_step, dataformats="HWC")
    return paths
