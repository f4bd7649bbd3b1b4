"""A deterministic diffusion loss: fixed timesteps and fixed noise per image, no augmentation,
captions as written. Two evaluations of the same weights give the same number, so it can say
whether training helped (and pick the best checkpoint)."""
import numpy as np
import torch

from . import data as train_data
from .conditioning import crop_top_left, encode_text, time_ids
from .noise import NoiseSchedule, diffusion_loss

DEFAULT_TIMESTEPS = (100, 300, 500, 700, 900)


@torch.no_grad()
def evaluation_loss(base, samples, buckets, seed=0, timesteps=DEFAULT_TIMESTEPS, device="cpu", dtype=torch.float32,
                    clip_skip=1, v_prediction=False, batch_size=4):
    """Mean loss over every (image, timestep) pair of the samples that have a bucket."""
    schedule = NoiseSchedule(device=device)
    order = [i for i, b in enumerate(buckets) if b is not None]
    by_size = {}
    for i in order:
        by_size.setdefault(tuple(buckets[i][0]), []).append(i)
    total, count = 0.0, 0
    for size in sorted(by_size):
        items = by_size[size]
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            pixels, kept, _ = train_data.load_batch(samples, chunk, buckets)
            if not kept:
                continue
            latents = base.vae.encode(pixels.to(device, torch.float32)).latent_dist.mean * base.scaling_factor
            hidden, pooled = encode_text(base.kind, base.text_encoders, base.tokenizers,
                                         [samples[i].caption for i in kept], clip_skip, device)
            added = None
            if base.kind == "sdxl":
                ids = time_ids([(samples[i].width, samples[i].height) for i in kept],
                               [crop_top_left(buckets[i][1]) for i in kept], [tuple(buckets[i][0]) for i in kept],
                               device)
                added = {"text_embeds": pooled, "time_ids": ids}
            for ts in timesteps:
                noise = torch.stack([torch.randn(latents.shape[1:], generator=torch.Generator().manual_seed(
                    int(np.random.SeedSequence([seed, samples[i].file_hash & 0xFFFFFFFF, ts]).generate_state(1)[0])))
                    for i in kept]).to(device)
                t = torch.full((len(kept),), ts, device=device, dtype=torch.long)
                noisy = schedule.add_noise(latents, noise, t)
                target = schedule.velocity(latents, noise, t) if v_prediction else noise
                pred = base.unet(noisy.to(dtype), t, hidden.to(dtype), added_cond_kwargs=added).sample
                total += float(diffusion_loss(pred, target, t, schedule)) * len(kept)
                count += len(kept)
    if count == 0:
        raise ValueError("no image could be evaluated")
    return total / count
