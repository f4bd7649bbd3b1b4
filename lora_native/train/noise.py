"""Noise schedule and training objective (DESIGN section 5): DDPM scaled-linear betas
0.00085 -> 0.012 over 1000 steps; epsilon or v-prediction; noise offset; min-SNR weighting."""
import torch

NUM_TRAIN_TIMESTEPS = 1000


class NoiseSchedule:
    def __init__(self, beta_start=0.00085, beta_end=0.012, steps=NUM_TRAIN_TIMESTEPS, device="cpu"):
        betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, steps, dtype=torch.float64) ** 2
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0).float().to(device)
        self.steps = steps

    def _coef(self, t, ndim):
        a = self.alphas_cumprod[t].float()
        shape = (-1,) + (1,) * (ndim - 1)
        return a.sqrt().reshape(shape), (1.0 - a).sqrt().reshape(shape)

    def add_noise(self, latents, noise, t):
        sa, s1a = self._coef(t, latents.ndim)
        return sa * latents + s1a * noise

    def velocity(self, latents, noise, t):
        sa, s1a = self._coef(t, latents.ndim)
        return sa * noise - s1a * latents

    def snr(self, t):
        a = self.alphas_cumprod[t].float()
        return a / (1.0 - a)


def sample_noise(shape, generator, device, noise_offset=0.0):
    """Gaussian noise; with noise_offset, a per-image per-channel constant is added (helps very
    dark and very bright pictures, the trick kohya users know)."""
    noise = torch.randn(shape, generator=generator).to(device)
    if noise_offset:
        noise = noise + noise_offset * torch.randn(shape[0], shape[1], 1, 1, generator=generator).to(device)
    return noise


def diffusion_loss(pred, target, t, schedule, min_snr_gamma=0.0, v_prediction=False):
    """Per-sample MSE (mean over C, H, W), min-SNR-gamma weighted when gamma > 0, then mean."""
    loss = torch.nn.functional.mse_loss(pred.float(), target.float(), reduction="none")
    loss = loss.mean(dim=list(range(1, loss.ndim)))
    if min_snr_gamma:
        snr = schedule.snr(t)
        gamma = torch.full_like(snr, float(min_snr_gamma))
        weight = torch.minimum(snr, gamma) / (snr + 1.0 if v_prediction else snr)
        loss = loss * weight
    return loss.mean()
