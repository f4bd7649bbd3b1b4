"""State dicts in the original (LDM / single-file) layout <-> the diffusers / transformers layout.

Facts (the public conversion tables of sd-scripts `library/model_util.py`,
`sdxl_model_util.py` and diffusers' single-file loader, checked against the models built
from our configs):

- UNet (`model.diffusion_model.`): `time_embed.{0,2}` = `time_embedding.linear_{1,2}`,
  SDXL `label_emb.0.{0,2}` = `add_embedding.linear_{1,2}`, `input_blocks.0.0` = `conv_in`,
  `out.{0,2}` = `conv_norm_out` / `conv_out`. Down block i, layer j is `input_blocks.n`
  (n counts from 1 over every layer and downsampler): `.0` the resnet, `.1` the
  transformer; a downsampler is `input_blocks.n.0.op`. `middle_block.{0,1,2}` = resnet,
  transformer, resnet. Up block i has layers+1 `output_blocks.n`, its upsampler is
  `output_blocks.n.{1 or 2}.conv` (2 when the block has transformers). Resnet parts:
  `in_layers.{0,2}` = `norm1`/`conv1`, `out_layers.{0,3}` = `norm2`/`conv2`,
  `emb_layers.1` = `time_emb_proj`, `skip_connection` = `conv_shortcut`. Transformer
  insides have the same names on both sides (proj_in/out are 1x1 convs in SD1 and linear in
  SDXL on both sides).
- VAE (`first_stage_model.`): `{encoder,decoder}.mid.block_{1,2}` = `mid_block.resnets.{0,1}`,
  `mid.attn_1.{norm,q,k,v,proj_out}` = `mid_block.attentions.0.{group_norm,to_q,to_k,to_v,to_out.0}`
  (1x1 convs in the original, linear in diffusers), `encoder.down.i.block.j` =
  `encoder.down_blocks.i.resnets.j`, `down.i.downsample` = `down_blocks.i.downsamplers.0`,
  decoder up blocks numbered in reverse (`decoder.up.{n-1-i}` = `decoder.up_blocks.i`),
  `nin_shortcut` = `conv_shortcut`, `norm_out` = `conv_norm_out`.
- CLIP ViT-L (`cond_stage_model.transformer.` in SD1, `conditioner.embedders.0.transformer.`
  in SDXL): the transformers layout under `text_model.` (very old files lack that level).
- OpenCLIP bigG (`conditioner.embedders.1.model.`): `transformer.resblocks.N.{ln_1,ln_2}` =
  `text_model.encoder.layers.N.{layer_norm1,layer_norm2}`, the fused `attn.in_proj_{weight,bias}`
  = q/k/v stacked in that order, `attn.out_proj` = `self_attn.out_proj`, `mlp.{c_fc,c_proj}` =
  `mlp.{fc1,fc2}`, `ln_final` = `text_model.final_layer_norm`, `positional_embedding` and
  `token_embedding` = the embeddings, `text_projection` ([in, out], used as x @ P) = the
  transpose of `text_projection.weight`.

Diffusers-side text-encoder keys are written as the diffusers folders store them (with the
`text_model.` level); the loader fits them to whatever the installed transformers builds.
"""
import json
import re
from dataclasses import dataclass, field

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_L_PREFIX = {"sd15": "cond_stage_model.transformer.", "sdxl": "conditioner.embedders.0.transformer."}
OPEN_CLIP_G_PREFIX = "conditioner.embedders.1.model."

# Keys real single-file checkpoints carry that are no part of the models we build.
_DDPM_BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2", "lvlb_weights", "logvar",
)
_IGNORED = re.compile(
    r"^(?:%s)$" % "|".join(_DDPM_BUFFERS)
    + r"|^model_ema\."                                   # EMA copies of the UNet
    + r"|\.embeddings\.position_ids$"                    # a constant buffer of old transformers
    + r"|^conditioner\.embedders\.1\.model\.logit_scale$"  # CLIP's contrastive temperature
    + r"|^(?:v_pred|ztsnr)$"                             # ComfyUI's markers (read by the loader)
)

COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")


_LEGACY_VAE_ATTENTION = re.compile(r"(mid_block\.attentions\.0\.)(query|key|value|proj_attn)\.")
_LEGACY_VAE_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def modern_diffusers_key(component, key):
    """A diffusers key under today's names: VAE folders saved before diffusers 0.14 (many
    SD1.5 downloads) name the mid-block attention query/key/value/proj_attn."""
    if component == "vae":
        return _LEGACY_VAE_ATTENTION.sub(lambda m: m.group(1) + _LEGACY_VAE_NAMES[m.group(2)] + ".", key)
    return key


def is_ignored_key(key):
    """True for the extras of real files that are no weights of ours (DDPM buffers, EMA, ...)."""
    return bool(_IGNORED.search(key))


# ---------------------------------------------------------------- name tables

_RESNET_UNET = {"in_layers.0": "norm1", "in_layers.2": "conv1", "out_layers.0": "norm2",
                "out_layers.3": "conv2", "emb_layers.1": "time_emb_proj", "skip_connection": "conv_shortcut"}
_RESNET_VAE = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2",
               "nin_shortcut": "conv_shortcut"}
_ATTN_VAE = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}


@dataclass(frozen=True)
class _Entry:
    original: str        # original prefix without the component prefix, no trailing dot
    diffusers: str       # diffusers prefix, no trailing dot
    parts: dict = None   # renames of the first part(s) of the rest; None: rest kept as is


def _unet_entries(config):
    blocks = config["block_out_channels"]
    layers = config["layers_per_block"]
    down_types, up_types = config["down_block_types"], config["up_block_types"]
    e = [_Entry("time_embed.0", "time_embedding.linear_1"), _Entry("time_embed.2", "time_embedding.linear_2"),
         _Entry("input_blocks.0.0", "conv_in"), _Entry("out.0", "conv_norm_out"), _Entry("out.2", "conv_out")]
    if config.get("addition_embed_type") == "text_time":
        e += [_Entry("label_emb.0.0", "add_embedding.linear_1"), _Entry("label_emb.0.2", "add_embedding.linear_2")]
    n = 1
    for i, kind in enumerate(down_types):
        for j in range(layers):
            e.append(_Entry("input_blocks.%d.0" % n, "down_blocks.%d.resnets.%d" % (i, j), _RESNET_UNET))
            if kind.startswith("CrossAttn"):
                e.append(_Entry("input_blocks.%d.1" % n, "down_blocks.%d.attentions.%d" % (i, j)))
            n += 1
        if i < len(blocks) - 1:
            e.append(_Entry("input_blocks.%d.0.op" % n, "down_blocks.%d.downsamplers.0.conv" % i))
            n += 1
    e += [_Entry("middle_block.0", "mid_block.resnets.0", _RESNET_UNET),
          _Entry("middle_block.1", "mid_block.attentions.0"),
          _Entry("middle_block.2", "mid_block.resnets.1", _RESNET_UNET)]
    n = 0
    for i, kind in enumerate(up_types):
        attn = kind.startswith("CrossAttn")
        for j in range(layers + 1):
            e.append(_Entry("output_blocks.%d.0" % n, "up_blocks.%d.resnets.%d" % (i, j), _RESNET_UNET))
            if attn:
                e.append(_Entry("output_blocks.%d.1" % n, "up_blocks.%d.attentions.%d" % (i, j)))
            if j == layers and i < len(blocks) - 1:
                e.append(_Entry("output_blocks.%d.%d.conv" % (n, 2 if attn else 1), "up_blocks.%d.upsamplers.0.conv" % i))
            n += 1
    return e


def _vae_entries(config):
    blocks = len(config["block_out_channels"])
    layers = config["layers_per_block"]
    e = [_Entry("quant_conv", "quant_conv"), _Entry("post_quant_conv", "post_quant_conv")]
    for side in ("encoder", "decoder"):
        e += [_Entry(side + ".conv_in", side + ".conv_in"), _Entry(side + ".conv_out", side + ".conv_out"),
              _Entry(side + ".norm_out", side + ".conv_norm_out"),
              _Entry(side + ".mid.block_1", side + ".mid_block.resnets.0", _RESNET_VAE),
              _Entry(side + ".mid.block_2", side + ".mid_block.resnets.1", _RESNET_VAE),
              _Entry(side + ".mid.attn_1", side + ".mid_block.attentions.0", _ATTN_VAE)]
    for i in range(blocks):
        for j in range(layers):
            e.append(_Entry("encoder.down.%d.block.%d" % (i, j), "encoder.down_blocks.%d.resnets.%d" % (i, j), _RESNET_VAE))
        if i < blocks - 1:
            e.append(_Entry("encoder.down.%d.downsample.conv" % i, "encoder.down_blocks.%d.downsamplers.0.conv" % i))
        up = blocks - 1 - i
        for j in range(layers + 1):
            e.append(_Entry("decoder.up.%d.block.%d" % (up, j), "decoder.up_blocks.%d.resnets.%d" % (i, j), _RESNET_VAE))
        if i < blocks - 1:
            e.append(_Entry("decoder.up.%d.upsample.conv" % up, "decoder.up_blocks.%d.upsamplers.0.conv" % i))
    return e


class _PrefixTable:
    """Longest-prefix renaming between the two layouts, usable on parameter keys and module paths."""

    def __init__(self, entries):
        self.entries = entries
        self._by_original = sorted(entries, key=lambda x: -len(x.original))
        self._by_diffusers = sorted(entries, key=lambda x: -len(x.diffusers))

    @staticmethod
    def _rename(name, src, dst, parts, forward):
        if name == src:
            return dst
        if not name.startswith(src + "."):
            return None
        rest = name[len(src) + 1:]
        if parts is not None:
            table = parts if forward else {v: k for k, v in parts.items()}
            for a in sorted(table, key=len, reverse=True):
                if rest == a or rest.startswith(a + "."):
                    rest = table[a] + rest[len(a):]
                    break
            else:
                return None  # not a part these blocks have
        return dst + "." + rest

    def to_diffusers(self, name):
        for e in self._by_original:
            out = self._rename(name, e.original, e.diffusers, e.parts, True)
            if out is not None:
                return out
        return None

    def to_original(self, name):
        for e in self._by_diffusers:
            out = self._rename(name, e.diffusers, e.original, e.parts, False)
            if out is not None:
                return out
        return None


_table_cache = {}


def _table(component, config):
    key = (component, json.dumps(config, sort_keys=True))
    if key not in _table_cache:
        _table_cache[key] = _PrefixTable(_unet_entries(config) if component == "unet" else _vae_entries(config))
    return _table_cache[key]


# ---------------------------------------------------------------- per-component codecs
# A codec maps one original key (without the component prefix) to its diffusers key(s) and the
# other way. Ops: "copy"; "conv1x1" (original [o, i, 1, 1], diffusers [o, i]); "transpose";
# "qkv" (one original tensor = the diffusers q, k, v stacked along dim 0).

class _TableCodec:
    def __init__(self, component, config):
        self.table = _table(component, config)
        self.vae = component == "vae"

    def _op(self, diffusers_key):
        if self.vae and re.search(r"mid_block\.attentions\.0\.(to_q|to_k|to_v|to_out\.0)\.weight$", diffusers_key):
            return "conv1x1"
        return "copy"

    def to_diffusers(self, rest):
        d = self.table.to_diffusers(rest)
        return None if d is None else ((d,), self._op(d))

    def to_original(self, diffusers_key):
        o = self.table.to_original(diffusers_key)
        return None if o is None else (o, (diffusers_key,), self._op(diffusers_key))


def with_text_model(path):
    """A CLIP text-encoder key or module path under `text_model.`, the level files and kohya names
    have and transformers 5's CLIPTextModel lacks (text_projection sits beside it)."""
    return path if path.startswith(("text_model.", "text_projection")) else "text_model." + path


class _ClipCodec:
    """CLIP ViT-L in the transformers layout; only the `text_model.` level may be missing."""
    _TOP = ("embeddings.", "encoder.", "final_layer_norm.")

    def to_diffusers(self, rest):
        if rest.startswith("text_model."):
            return (rest,), "copy"
        if rest.startswith(self._TOP):
            return ("text_model." + rest,), "copy"
        return None

    def to_original(self, diffusers_key):
        key = with_text_model(diffusers_key)
        if not key[len("text_model."):].startswith(self._TOP):
            return None
        return key, (diffusers_key,), "copy"


class _OpenClipCodec:
    _FIXED = {
        "positional_embedding": "text_model.embeddings.position_embedding.weight",
        "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
        "ln_final.weight": "text_model.final_layer_norm.weight",
        "ln_final.bias": "text_model.final_layer_norm.bias",
        "text_projection": "text_projection.weight",
    }
    _LAYER_PARTS = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
                    "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    _RE_ORIG = re.compile(r"^transformer\.resblocks\.(\d+)\.(.+)\.(weight|bias)$")
    _RE_ORIG_QKV = re.compile(r"^transformer\.resblocks\.(\d+)\.attn\.in_proj_(weight|bias)$")
    _RE_DIFF = re.compile(r"^text_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")

    def to_diffusers(self, rest):
        if rest in self._FIXED:
            return (self._FIXED[rest],), ("transpose" if rest == "text_projection" else "copy")
        m = self._RE_ORIG_QKV.match(rest)
        if m:
            base = "text_model.encoder.layers.%s.self_attn." % m.group(1)
            return tuple(base + p + "_proj." + m.group(2) for p in "qkv"), "qkv"
        m = self._RE_ORIG.match(rest)
        if m and m.group(2) in self._LAYER_PARTS:
            return ("text_model.encoder.layers.%s.%s.%s" % (m.group(1), self._LAYER_PARTS[m.group(2)], m.group(3)),), "copy"
        return None

    def to_original(self, diffusers_key):
        key = with_text_model(diffusers_key)
        for o, d in self._FIXED.items():
            if key == d:
                return o, (diffusers_key,), ("transpose" if o == "text_projection" else "copy")
        m = self._RE_DIFF.match(key)
        if not m:
            return None
        layer, part, kind = m.groups()
        qkv = re.match(r"^self_attn\.([qkv])_proj$", part)
        if qkv:
            base = diffusers_key[: -len("q_proj." + kind)]
            return ("transformer.resblocks.%s.attn.in_proj_%s" % (layer, kind),
                    tuple(base + p + "_proj." + kind for p in "qkv"), "qkv")
        back = {v: k for k, v in self._LAYER_PARTS.items()}
        if part not in back:
            return None
        return "transformer.resblocks.%s.%s.%s" % (layer, back[part], kind), (diffusers_key,), "copy"


def component_prefixes(kind):
    """{component: original-layout key prefix} for a kind."""
    out = {"unet": UNET_PREFIX, "vae": VAE_PREFIX, "text_encoder": CLIP_L_PREFIX[kind]}
    if kind == "sdxl":
        out["text_encoder_2"] = OPEN_CLIP_G_PREFIX
    return out


def _codecs(kind, architecture):
    """[(component, original prefix, codec)] for a kind."""
    codecs = {"unet": _TableCodec("unet", architecture["unet"]), "vae": _TableCodec("vae", architecture["vae"]),
              "text_encoder": _ClipCodec(), "text_encoder_2": _OpenClipCodec()}
    return [(c, prefix, codecs[c]) for c, prefix in component_prefixes(kind).items()]


# ---------------------------------------------------------------- plans

@dataclass(frozen=True)
class Rule:
    """One conversion step: these original keys <-> these diffusers keys of `component`."""
    component: str
    original: tuple
    diffusers: tuple
    op: str


@dataclass
class Plan:
    """Every rule of one checkpoint, plus the keys it ignores (known extras) or cannot place."""
    kind: str
    rules: dict = field(default_factory=dict)       # component -> [Rule]
    ignored: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)

    def components(self):
        return [c for c in COMPONENTS if self.rules.get(c)]


def plan_from_original(keys, kind, architecture):
    """How to turn a checkpoint with these original-layout keys into diffusers state dicts."""
    plan = Plan(kind, {c: [] for c, _, _ in _codecs(kind, architecture)})
    codecs = sorted(_codecs(kind, architecture), key=lambda c: -len(c[1]))
    for key in keys:
        if is_ignored_key(key):
            plan.ignored.append(key)
            continue
        for component, prefix, codec in codecs:
            if key.startswith(prefix):
                got = codec.to_diffusers(key[len(prefix):])
                if got is not None:
                    plan.rules[component].append(Rule(component, (key,), got[0], got[1]))
                    break
        else:
            plan.unexpected.append(key)
    return plan


def plan_from_diffusers(keys_by_component, kind, architecture):
    """How to turn diffusers state dicts ({component: keys}) into one original-layout dict."""
    codecs = {c: (p, codec) for c, p, codec in _codecs(kind, architecture)}
    plan = Plan(kind, {c: [] for c in codecs})
    for component, keys in keys_by_component.items():
        if component not in codecs:
            raise ValueError("no component %r in a %s model" % (component, kind))
        prefix, codec = codecs[component]
        keys = list(keys)
        have, done = set(keys), set()
        for key in keys:
            if key in done:
                continue
            if is_ignored_key(key):
                plan.ignored.append(component + ":" + key)
                continue
            got = codec.to_original(key)
            if got is None:
                plan.unexpected.append(component + ":" + key)
                continue
            original, group, op = got
            missing = [k for k in group if k not in have]
            if missing:
                raise ValueError("%s: %s needs %s as well" % (component, key, ", ".join(missing)))
            done.update(group)
            plan.rules[component].append(Rule(component, (prefix + original,), group, op))
    return plan


def to_diffusers_tensors(rule, tensors):
    """The diffusers tensors of a rule from its original tensors (in rule order)."""
    (t,) = tensors
    if rule.op == "copy":
        return [t]
    if rule.op == "conv1x1":
        return [t.reshape(t.shape[0], t.shape[1]) if t.dim() == 4 else t]
    if rule.op == "transpose":
        return [t.t().contiguous()]
    if rule.op == "qkv":
        if t.shape[0] % 3:
            raise ValueError("%s: a fused q/k/v of %d rows cannot be split in three" % (rule.original[0], t.shape[0]))
        return [c.contiguous() for c in t.chunk(3, dim=0)]
    raise ValueError("unknown conversion op %r" % rule.op)


def to_original_tensors(rule, tensors):
    """The original tensor of a rule from its diffusers tensors (in rule order)."""
    import torch

    if rule.op == "copy":
        return [tensors[0]]
    if rule.op == "conv1x1":
        t = tensors[0]
        return [t[:, :, None, None] if t.dim() == 2 else t]
    if rule.op == "transpose":
        return [tensors[0].t().contiguous()]
    if rule.op == "qkv":
        return [torch.cat(list(tensors), dim=0)]
    raise ValueError("unknown conversion op %r" % rule.op)


def original_to_diffusers(state_dict, kind, architecture):
    """({component: diffusers state dict}, plan) from an original-layout state dict."""
    plan = plan_from_original(state_dict.keys(), kind, architecture)
    out = {}
    for component, rules in plan.rules.items():
        sd = {}
        for rule in rules:
            for k, t in zip(rule.diffusers, to_diffusers_tensors(rule, [state_dict[k] for k in rule.original])):
                sd[k] = t
        if sd:
            out[component] = sd
    return out, plan


def diffusers_to_original(state_dicts, kind, architecture):
    """(original-layout state dict, plan) from {component: diffusers state dict}."""
    plan = plan_from_diffusers({c: sd.keys() for c, sd in state_dicts.items()}, kind, architecture)
    out = {}
    for component, rules in plan.rules.items():
        sd = state_dicts[component]
        for rule in rules:
            (t,) = to_original_tensors(rule, [sd[k] for k in rule.diffusers])
            out[rule.original[0]] = t
    return out, plan


# ---------------------------------------------------------------- module paths (for the key map)

def unet_module_to_original(path, unet_config):
    """A diffusers UNet module path as the original layout names it (None if it has no twin)."""
    return _table("unet", unet_config).to_original(path)


def unet_module_to_diffusers(path, unet_config):
    """An original-layout UNet module path (no `model.diffusion_model.`) as diffusers names it."""
    return _table("unet", unet_config).to_diffusers(path)


def text_encoder_weight_to_original(component, module_path, kind):
    """(full original key, row block 0/1/2 of a fused q/k/v or None, op) of a text-encoder
    Linear's weight, e.g. OpenCLIP's `attn.in_proj_weight` rows for `self_attn.k_proj`; None for a
    module the original layout does not have."""
    key = with_text_model(module_path) + ".weight"
    if component == "text_encoder":
        got, prefix = _ClipCodec().to_original(key), CLIP_L_PREFIX[kind]
    else:
        got, prefix = _OpenClipCodec().to_original(key), OPEN_CLIP_G_PREFIX
    if got is None:
        return None
    original, group, op = got
    return prefix + original, (group.index(key) if op == "qkv" else None), op
