"""A deterministic diffusion loss: fixed timesteps and fixed noise per image, no augmentation,
captions as written (with the trigger word as training prepends it). Two evaluations of the same
weights give the same number, so it can say whether training helped (and pick the best checkpoint).

The noise of an image comes from (seed, the image's content hash, timestep) and every image is
seen at every timestep of DEFAULT_TIMESTEPS, so the value is the mean of per-image losses whatever
the batches: it does not depend on which images share a batch, nor on the order of the folder.
The loss is the plain MSE to the objective's target (no min-SNR weighting), comparable between
runs with other training settings."""
import numpy as np
import torch

from ..captions import with_trigger
from . import data as train_data
from .conditioning import crop_top_left, encode_text, time_ids
from .noise import NoiseSchedule, diffusion_loss

DEFAULT_TIMESTEPS = (100, 300, 500, 700, 900)


def noise_seed(seed, file_hash, timestep):
    """The seed of one image's noise at one timestep."""
    h = int(file_hash)
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, h & 0xFFFFFFFF, (h >> 32) & 0xFFFFFFFF,
                                       int(timestep)]).generate_state(1)[0])


def _groups(buckets, batch_size, part=None):
    """Batches of sample indices, one bucket size each, in a fixed order; part=(k, n): only the
    k-th of every n batches (process k of n evaluates those)."""
    k, n = part or (0, 1)
    by_size = {}
    for i, b in enumerate(buckets):
        if b is not None:
            by_size.setdefault(tuple(b[0]), []).append(i)
    chunks = (items[start:start + batch_size] for size in sorted(by_size)
              for items in [by_size[size]] for start in range(0, len(items), batch_size))
    for j, chunk in enumerate(chunks):
        if j % n == k:
            yield chunk


@torch.no_grad()
def encode_latents(base, samples, buckets, device="cpu", batch_size=4, part=None):
    """{sample index: latent [4, h, w] on the CPU} of the samples that have a bucket and load (the
    VAE posterior mean times the model's scaling factor, no augmentation), and warnings for those
    that failed. Encoded once, they serve every later evaluation without the VAE. part: as for
    evaluation_loss (the latents of this process's batches only)."""
    out, warnings = {}, []
    for chunk in _groups(buckets, max(1, int(batch_size)), part):
        pixels, kept, w = train_data.load_batch(samples, chunk, buckets)
        warnings += w
        if not kept:
            continue
        latents = base.vae.encode(pixels.to(device, torch.float32)).latent_dist.mean * base.scaling_factor
        for i, latent in zip(kept, latents.float().cpu()):
            out[i] = latent
    return out, warnings


@torch.no_grad()
def evaluation_loss(base, samples, buckets, seed=0, timesteps=DEFAULT_TIMESTEPS, device="cpu", dtype=torch.float32,
                    clip_skip=1, v_prediction=False, batch_size=4, trigger_word=None, latents=None, part=None,
                    sums=False):
    """Mean loss over every (image, timestep) pair of the samples that have a bucket.

    part=(k, n): evaluate only the k-th of every n batches, and with sums=True return (sum of
    losses, number of (image, timestep) pairs) for the processes to add up.

    latents: {index: latent} from encode_latents (the VAE is not used then; samples missing from
    it are left out); without it the images are loaded and encoded here. dtype: the UNet's weight
    dtype; other than float32 the forward runs under autocast, as training does."""
    device = torch.device(device)
    schedule = NoiseSchedule(device=device)
    total, count = 0.0, 0
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    for chunk in _groups(buckets, max(1, int(batch_size)), part):
        if latents is None:
            pixels, kept, _ = train_data.load_batch(samples, chunk, buckets)
            if not kept:
                continue
            lat = base.vae.encode(pixels.to(device, torch.float32)).latent_dist.mean * base.scaling_factor
        else:
            kept = [i for i in chunk if i in latents]
            if not kept:
                continue
            lat = torch.stack([latents[i] for i in kept]).to(device, torch.float32)
        captions = [with_trigger(samples[i].caption, trigger_word) for i in kept]
        with autocast:
            hidden, pooled = encode_text(base.kind, base.text_encoders, base.tokenizers, captions, clip_skip, device)
        added = None
        if base.kind == "sdxl":
            ids = time_ids([(samples[i].width, samples[i].height) for i in kept],
                           [crop_top_left(buckets[i][1]) for i in kept], [tuple(buckets[i][0]) for i in kept], device)
            added = {"text_embeds": pooled, "time_ids": ids}
        for ts in timesteps:
            noise = torch.stack([torch.randn(lat.shape[1:], generator=torch.Generator().manual_seed(
                noise_seed(seed, samples[i].file_hash, ts))) for i in kept]).to(device)
            t = torch.full((len(kept),), ts, device=device, dtype=torch.long)
            noisy = schedule.add_noise(lat, noise, t)
            target = schedule.velocity(lat, noise, t) if v_prediction else noise
            with autocast:
                pred = base.unet(noisy.to(dtype), t, hidden.to(dtype), added_cond_kwargs=added).sample
            total += float(diffusion_loss(pred, target, t, schedule, 0.0, v_prediction)) * len(kept)
            count += len(kept)
    if sums:
        return total, count
    if count == 0:
        raise ValueError("no image could be evaluated")
    return total / count
