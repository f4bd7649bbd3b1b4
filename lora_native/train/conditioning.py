"""Text conditioning for SD1.5 and SDXL, and SDXL's size/crop time ids.

SD1.5: CLIP-L last hidden state, or with clip_skip N the N-th from last hidden state passed
through the final layer norm (A1111's and kohya's meaning of "clip skip 2").
SDXL: penultimate hidden states of CLIP-L and bigG concatenated (768 + 1280 = 2048), plus the
pooled bigG embedding; the time ids are (original h, w, crop top, left, target h, w).
"""
import torch

from .tokenizer import MAX_LENGTH as MAX_TOKENS, tokenize


def count_truncated(tokenizer, captions):
    """How many captions are longer than 77 tokens (their ends are not seen by the model)."""
    ids = tokenizer(list(captions), truncation=False).input_ids
    return sum(1 for x in ids if len(x) > MAX_TOKENS)


def _final_layer_norm(text_encoder):
    # transformers 5 dropped the text_model level from CLIPTextModel; older versions have it.
    inner = getattr(text_encoder, "text_model", text_encoder)
    return inner.final_layer_norm


def encode_text(kind, text_encoders, tokenizers, captions, clip_skip=1, device="cpu"):
    """-> (encoder_hidden_states [B, 77, D], pooled [B, 1280] or None)."""
    if kind == "sd15":
        te = text_encoders[0]
        ids = tokenize(tokenizers[0], captions).to(device)
        out = te(ids, output_hidden_states=clip_skip > 1)
        if clip_skip > 1:
            h = _final_layer_norm(te)(out.hidden_states[-clip_skip])
        else:
            h = out.last_hidden_state
        return h, None
    if kind == "sdxl":
        te1, te2 = text_encoders
        ids1 = tokenize(tokenizers[0], captions).to(device)
        ids2 = tokenize(tokenizers[1], captions).to(device)
        h1 = te1(ids1, output_hidden_states=True).hidden_states[-2]
        out2 = te2(ids2, output_hidden_states=True)
        h2 = out2.hidden_states[-2]
        pooled = out2.text_embeds
        return torch.cat([h1, h2.to(h1.dtype)], dim=-1), pooled
    raise ValueError("unknown model kind %r" % kind)


def crop_top_left(plan):
    """Where the crop starts in the resized picture, as sd-scripts records it for SDXL."""
    x0, y0, x1, y1 = plan["box"]
    w, h = plan["inner_size"] if "inner_size" in plan else plan["out_size"]
    sx, sy = w / max(x1 - x0, 1e-6), h / max(y1 - y0, 1e-6)
    return int(round(y0 * sy)), int(round(x0 * sx))


def time_ids(original_sizes, crops, target_sizes, device):
    """SDXL add_time_ids: rows of (orig_h, orig_w, crop_top, crop_left, target_h, target_w).
    Sizes are given as (width, height); crops as (top, left). Always float32: bf16 would round
    1023 to 1024 (the UNet embeds them in its own precision)."""
    rows = [[oh, ow, ct, cl, th, tw] for (ow, oh), (ct, cl), (tw, th) in zip(original_sizes, crops, target_sizes)]
    return torch.tensor(rows, device=device, dtype=torch.float32)
