"""Architecture configs of the base models we train on, written by us from the published values.

One JSON per kind (`sd15.json`, `sdxl.json`) holding the config of every component under its
diffusers folder name: `unet` (UNet2DConditionModel), `vae` (AutoencoderKL, with its latent
`scaling_factor`), `text_encoder` (CLIPTextModel, ViT-L/14), for SDXL `text_encoder_2`
(CLIPTextModelWithProjection, OpenCLIP bigG), and `scheduler` (the DDPM training schedule).
A single-file checkpoint carries no config, so these are what its weights are loaded into.
"""
import copy
import json
import os

KINDS = ("sd15", "sdxl")
_HERE = os.path.dirname(os.path.abspath(__file__))
_cache = {}


def load_architecture(kind):
    """The architecture dict of `kind` ("sd15" or "sdxl"): a fresh copy the caller may change."""
    if kind not in KINDS:
        raise ValueError("unknown model kind %r (expected one of %s)" % (kind, ", ".join(KINDS)))
    if kind not in _cache:
        with open(os.path.join(_HERE, kind + ".json"), encoding="utf-8") as f:
            _cache[kind] = json.load(f)
    return copy.deepcopy(_cache[kind])


def text_encoder_names(architecture):
    """The text-encoder entries of an architecture, in order: ["text_encoder"(, "text_encoder_2")]."""
    return [name for name in ("text_encoder", "text_encoder_2") if name in architecture]
