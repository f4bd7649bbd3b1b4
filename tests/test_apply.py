"""lora_native.apply: LoRA files of every format merged into tiny SD1.5/SDXL models in every
layout, against a float64 reference computed straight from the files; switching, restore,
subtract mode, and the failure paths."""
import os

import pytest
import torch
from safetensors.torch import save_file

from lora_native import apply as lora_apply
from lora_native.apply import LoraStack, load_lora
from lora_native.errors import UsageError
from lora_native.formats import keymap, ldm
from builders.models import empty_base_model, make_tiny_model, tiny_architecture, tiny_modules


# ---------------------------------------------------------------- helpers

@pytest.fixture(scope="module")
def targets():
    """{kind: [LoraTarget]}: every module kohya trains (conv_dim on), from the forward key map."""
    out = {}
    for kind in ("sd15", "sdxl"):
        base = empty_base_model(kind, tiny_architecture(kind), "meta")
        out[kind] = keymap.lora_targets(base, conv_dim=True)
    return out


def _lora(targets, rank=4, alpha=3.0, seed=0, scale=0.2):
    """{kohya key: (up, down, alpha)} with random float32 tensors (LoCon 3x3 for 3x3 convs)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for t in targets:
        w = t.module.weight
        if t.kind == "linear":
            down, up = torch.randn(rank, w.shape[1], generator=g), torch.randn(w.shape[0], rank, generator=g)
        else:
            down = torch.randn((rank,) + tuple(w.shape[1:]), generator=g)
            up = torch.randn(w.shape[0], rank, 1, 1, generator=g)
        out[t.key] = (up * scale, down * scale, alpha)
    return out


def _save(path, tensors, metadata=None):
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return str(path)


def write_kohya(path, lora, metadata=None):
    t = {}
    for key, (up, down, alpha) in lora.items():
        t[key + ".lora_up.weight"], t[key + ".lora_down.weight"] = up, down
        if alpha is not None:
            t[key + ".alpha"] = torch.tensor(alpha)
    return _save(path, t, metadata)


def write_comfy(path, lora, kind):
    km = keymap.key_map(kind, tiny_architecture(kind))
    t = {}
    for key, (up, down, alpha) in lora.items():
        entry = km.entries[key]
        if entry.component == "unet":
            name = entry.comfy_key[: -len(".weight")]
        else:
            name = "text_encoders." + entry.comfy_key[: -len(".weight")]
        t[name + ".lora_up.weight"], t[name + ".lora_down.weight"] = up, down
        t[name + ".alpha"] = torch.tensor(alpha)
    return _save(path, t)


def write_peft(path, lora, targets, old_processor_form=False):
    """diffusers/PEFT names, no alpha (PEFT has none): alpha/rank is folded into up."""
    by_key = {t.key: t for t in targets}
    t = {}
    for key, (up, down, alpha) in lora.items():
        target = by_key[key]
        component = "unet" if target.component == "unet" else keymap.COMPONENT_MODULES[target.component]
        path_ = target.module_path if component == "unet" else ldm.with_text_model(target.module_path)
        up = up * (alpha / down.shape[0])
        if old_processor_form and component == "unet" and path_.endswith(".attn1.to_q"):
            name = path_[: -len("to_q")] + "processor.to_q_lora"
            t["unet." + name + ".down.weight"], t["unet." + name + ".up.weight"] = down, up
        else:
            t[component + "." + path_ + ".lora_A.weight"], t[component + "." + path_ + ".lora_B.weight"] = down, up
    return _save(path, t)


def reference_merge(modules, targets, lora, w_unet, w_te=None):
    """float64 W + w * alpha/r * up @ down for every key, written into `modules` (as float32)."""
    w_te = w_unet if w_te is None else w_te
    by_key = {t.key: t for t in targets}
    names = {"unet": "unet", "te1": "text_encoder", "te2": "text_encoder_2"}
    for key, (up, down, alpha) in lora.items():
        t = by_key[key]
        module = modules[names[t.component]].get_submodule(t.module_path)
        w = module.weight
        r = down.shape[0]
        delta = up.double().reshape(up.shape[0], r) @ down.double().reshape(r, -1)
        scale = (w_unet if t.component == "unet" else w_te) * alpha / r
        with torch.no_grad():
            w.copy_((w.double() + scale * delta.reshape(w.shape)).to(w.dtype))
    return modules


def weights(modules):
    return {"%s.%s" % (c, k): v.detach().clone() for c, m in modules.items() for k, v in m.state_dict().items()}


def assert_close(a, b, atol=1e-6):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol, rtol=1e-6), (k, (a[k] - b[k]).abs().max())


def assert_equal(a, b):
    assert a.keys() == b.keys()
    bad = [k for k in a if not torch.equal(a[k], b[k])]
    assert not bad, bad[:5]


def unet_out(modules, kind="sd15"):
    g = torch.Generator().manual_seed(1)
    unet = modules["unet"]
    sample = torch.randn(1, 4, 8, 8, generator=g)
    context = torch.randn(1, 5, unet.config.cross_attention_dim, generator=g)
    with torch.no_grad():
        return unet(sample, torch.tensor([10]), encoder_hidden_states=context).sample


class Holder(torch.nn.Module):
    """A module whose parameters carry a state dict's names, as A1111 / ComfyUI hold a model."""

    def __init__(self, state):
        super().__init__()
        for name, tensor in state.items():
            owner = self
            *parts, leaf = name.split(".")
            for p in parts:
                if not hasattr(owner, p):
                    owner.add_module(p, torch.nn.Module())
                owner = getattr(owner, p)
            owner.register_parameter(leaf, torch.nn.Parameter(tensor.clone(), requires_grad=False))


def params(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


# ---------------------------------------------------------------- correctness

def test_kohya_matches_float64_reference_and_model_output(targets, tmp_path):
    kind = "sd15"
    lora = _lora(targets[kind], rank=4, alpha=3.0)
    assert {t.kind for t in targets[kind]} >= {"linear", "conv1x1", "conv3x3"}
    path = write_kohya(tmp_path / "a.safetensors", lora, {"ss_base_model_version": "sd_v1"})
    model = tiny_modules(kind)
    stack = LoraStack(model)
    assert stack.kind == "sd15"
    report = stack.set([(path, 0.8)])
    assert report.unmatched_count == 0 and report.touched == len(lora) == report.layers
    expected = reference_merge(tiny_modules(kind), targets[kind], lora, 0.8)
    assert_close(weights(model), weights(expected))
    assert torch.allclose(unet_out(model), unet_out(expected), atol=1e-5)
    assert not torch.allclose(unet_out(model), unet_out(tiny_modules(kind)), atol=1e-3)
    loaded = load_lora(path)
    assert loaded.kind == "sd15" and set(loaded.modules) == set(lora)
    m = loaded.modules[targets[kind][0].key]
    assert m.alpha == 3.0 and m.rank == 4 and m.scale == 0.75


def test_unet_and_te_weights_and_missing_alpha(targets, tmp_path):
    kind = "sdxl"
    lora = _lora(targets[kind][::5], rank=2, alpha=None)
    path = write_kohya(tmp_path / "x.safetensors", {k: (u, d, None) for k, (u, d, _) in lora.items()})
    model = tiny_modules(kind)
    LoraStack(model).set([(path, 0.7, 0.3)])
    ref = {k: (u, d, 2.0) for k, (u, d, _) in lora.items()}   # no alpha: alpha = rank
    assert {t.component for t in targets[kind][::5]} == {"unet", "te1", "te2"}
    assert_close(weights(model), weights(reference_merge(tiny_modules(kind), targets[kind], ref, 0.7, 0.3)))


@pytest.mark.parametrize("kind", ["sd15", "sdxl"])
def test_comfy_and_peft_namings_merge_like_kohya(targets, tmp_path, kind):
    lora = _lora(targets[kind][::2], rank=3, alpha=2.0, seed=3)
    files = {"kohya": write_kohya(tmp_path / "k.safetensors", lora),
             "comfy": write_comfy(tmp_path / "c.safetensors", lora, kind),
             "peft": write_peft(tmp_path / "p.safetensors", lora, targets[kind], old_processor_form=True)}
    merged = {}
    for name, path in files.items():
        model = tiny_modules(kind)
        report = LoraStack(model, kind=kind).set([(path, 0.8)])
        assert report.unmatched_count == 0 and report.touched == len(lora), name
        merged[name] = weights(model)
    assert_equal(merged["kohya"], merged["comfy"])
    assert_close(merged["kohya"], merged["peft"])
    assert_close(merged["kohya"], weights(reference_merge(tiny_modules(kind), targets[kind], lora, 0.8)))


def test_original_layout_with_fused_qkv_and_comfy_layout(targets, tmp_path):
    kind = "sdxl"
    arch = tiny_architecture(kind)
    ckpt = make_tiny_model(str(tmp_path / "m.safetensors"), kind)
    from safetensors.torch import load_file

    original = load_file(ckpt)
    picked = [t for t in targets[kind] if t.component == "te2" or t.key.endswith(("attn2_to_k", "_conv1", "proj_in"))]
    picked += [t for t in keymap.lora_targets(empty_base_model(kind, arch, "meta"), unet=False)
               if t.component == "te1"][:6]
    extra = keymap.key_map(kind, arch).entries["lora_te2_text_projection"]   # stored [in, out] in the file layout
    proj = empty_base_model(kind, arch, "meta").text_encoders[1].get_submodule(extra.module_path)
    picked.append(keymap.LoraTarget(extra.key, proj, extra.module_path, "te2", "linear"))
    lora = _lora(picked, rank=4, alpha=8.0, seed=5)
    path = write_kohya(tmp_path / "l.safetensors", lora)
    assert any(t.key.endswith("self_attn_k_proj") and t.component == "te2" for t in picked)

    holder = Holder(original)
    before = params(holder)
    stack = LoraStack(holder, architecture=arch)
    assert stack.kind == "sdxl"
    qkv = stack.targets["lora_te2_text_model_encoder_layers_0_self_attn_v_proj"]
    assert qkv.name.endswith("resblocks.0.attn.in_proj_weight") and qkv.rows == (64, 96)
    report = stack.set([(path, 0.9)])
    assert report.unmatched_count == 0 and report.touched == len(lora)

    ref = reference_merge(tiny_modules(kind), picked, lora, 0.9)
    expected, _ = ldm.diffusers_to_original({c: m.state_dict() for c, m in ref.items()}, kind, arch)
    got = params(holder)
    assert_close(got, {k: expected[k] for k in got})
    assert not torch.equal(got["conditioner.embedders.1.model.text_projection"],
                           before["conditioner.embedders.1.model.text_projection"])
    stack.clear()
    assert_equal(params(holder), before)

    # The same file on the BaseModel our loader returns (diffusers components, kind and architecture).
    from lora_native.train.model import load_base_model

    base_model = load_base_model(ckpt)
    LoraStack(base_model).set([(path, 0.9)])
    got = {"unet": base_model.unet, "text_encoder": base_model.text_encoders[0],
           "text_encoder_2": base_model.text_encoders[1]}
    assert_close(weights(got), weights({k: ref[k] for k in got}))

    # ComfyUI's in-memory names: a flat state dict of diffusion_model.* / clip_g.transformer.*.
    km = keymap.key_map(kind, arch)
    base = tiny_modules(kind)
    names = {"unet": "unet", "te1": "text_encoder", "te2": "text_encoder_2"}
    comfy = {e.comfy_key: base[names[e.component]].get_submodule(e.module_path).weight.detach().clone()
             for e in km.entries.values()}
    comfy["diffusion_model.label_emb.0.0.bias"] = torch.zeros(1)
    LoraStack(comfy, architecture=arch).set([(path, 0.9)])
    for key in lora:
        e = km.entries[key]
        w = ref[names[e.component]].get_submodule(e.module_path).weight
        assert torch.allclose(comfy[e.comfy_key], w, atol=1e-6), key


def test_switching_touches_only_changed_layers(targets, tmp_path, monkeypatch):
    kind = "sd15"
    ts = targets[kind]
    a = _lora(ts[0::3], seed=1)
    b = _lora(ts[1::6] + ts[0:7:3], seed=2)     # also on some of A's layers
    c = _lora(ts[4::6] + [ts[9]], seed=3)       # disjoint from B
    assert not set(b) & set(c)
    pa, pb, pc = (write_kohya(tmp_path / ("%s.safetensors" % n), x) for n, x in (("A", a), ("B", b), ("C", c)))
    model = tiny_modules(kind)
    original = weights(model)
    calls = []
    real = lora_apply.ops.merge_
    monkeypatch.setattr(lora_apply.ops, "merge_", lambda w, terms, backup=None: calls.append(1) or real(w, terms, backup))

    stack = LoraStack(model, lora_dirs=[str(tmp_path)])
    first = stack.set([("A", 0.8), ("B", 0.5)])
    assert first.touched == len(set(a) | set(b)) and stack.stats["loads"] == 2
    w_first, out_first = weights(model), unet_out(model)
    names = {"unet": "unet", "te1": "text_encoder"}
    assert stack.memory() == sum(model[names[t.component]].get_submodule(t.module_path).weight.numel() * 4
                                 for t in ts if t.key in set(a) | set(b))
    calls.clear()
    second = stack.set([("A", 0.8), ("C", 0.3)])
    assert stack.last_touched == second.touched == len(set(b) | set(c))
    assert len(calls) == len(set(c) | (set(a) & set(b)))   # B-only layers are restored, not merged
    assert second.unchanged == len(set(a) - set(b) - set(c))

    fresh = tiny_modules(kind)
    LoraStack(fresh).set([(pa, 0.8), (pc, 0.3)])
    assert_equal(weights(model), weights(fresh))
    assert torch.equal(unet_out(model), unet_out(fresh))

    stack.set([("B", 0.5), ("A", 0.8)])        # order does not matter; files come from the cache
    assert stack.stats["loads"] == 3
    assert_equal(weights(model), w_first)
    assert torch.equal(unet_out(model), out_first)
    calls.clear()
    assert stack.set([("A", 0.8), ("B", 0.5)]).touched == 0 and not calls
    assert stack.set([("A", 0.4), ("A", 0.4), ("B", 0.5)]).touched == 0   # the same file twice adds weights

    stack.clear()
    assert_equal(weights(model), original)
    assert stack.memory() == 0 and stack.applied == {}


@pytest.mark.filterwarnings("ignore:.*match no weight")   # a UNet-only model: the TE keys go unused
def test_subtract_mode_stays_within_the_documented_bound(targets, tmp_path):
    kind = "sd15"
    ts = targets[kind]
    files = [write_kohya(tmp_path / ("%d.safetensors" % i), _lora(ts[i::6] + ts[6:12], seed=10 + i)) for i in range(2)]
    for dtype, eps in ((torch.float32, 2.0 ** -24), (torch.float16, 2.0 ** -11)):
        unet = tiny_modules(kind)["unet"]
        flat = {"unet." + k: v.to(dtype) for k, v in unet.state_dict().items()}   # a flat state dict model
        original = {k: v.clone() for k, v in flat.items()}
        stack = LoraStack(flat, mode="subtract", architecture=tiny_architecture(kind))
        assert stack.kind == "sd15"
        sets = [[(files[0], 0.8), (files[1], 0.5)], [(files[0], 0.3)], [(files[1], 1.0), (files[0], 0.3)], []]
        peak = {k: v.float().abs() for k, v in original.items()}   # |W| along the way sets the ulp
        for n, entries in enumerate(sets, 1):
            stack.set(entries)
            exact = {k: v.clone() for k, v in original.items()}
            LoraStack(exact, architecture=tiny_architecture(kind)).set(entries)
            for k in flat:
                w = exact[k].float()
                peak[k] = torch.maximum(peak[k], w.abs())
                # n roundings of W here and one in the exact merge (half an ulp each, <= eps*|W|),
                # plus the fp32 summation of the deltas
                bound = (n + 1) * eps * peak[k] * 1.01 + 1e-6 * (w.abs().max() + 1)
                assert ((flat[k].float() - w).abs() <= bound).all(), (dtype, n, k)
        assert stack.memory() == 0 and stack.applied == {}


def test_memory_counts_backed_up_bytes_including_row_blocks(targets, tmp_path):
    kind = "sdxl"
    arch = tiny_architecture(kind)
    ckpt = make_tiny_model(str(tmp_path / "m.safetensors"), kind)
    from safetensors.torch import load_file

    holder = Holder({k: v.half() for k, v in load_file(ckpt).items()})
    picked = [t for t in targets[kind] if t.component == "te2"][:6] + targets[kind][:3]
    path = write_kohya(tmp_path / "l.safetensors", _lora(picked))
    stack = LoraStack(holder, architecture=arch)
    stack.set([(path, 1.0)])
    expected = 0
    for t in picked:
        w = stack.targets[t.key].tensor()
        expected += w.numel() * 2
        assert stack.targets[t.key].rows is None or w.shape[0] == 32
    assert stack.memory() == stack.backup_bytes == expected
    stack.clear()
    assert stack.memory() == 0


# ---------------------------------------------------------------- failure paths and reporting

def test_unmatched_keys_are_counted_and_warned(targets, tmp_path):
    lora = _lora(targets["sd15"][:4])
    t = {}
    for key, (up, down, alpha) in lora.items():
        t[key + ".lora_up.weight"], t[key + ".lora_down.weight"], t[key + ".alpha"] = up, down, torch.tensor(alpha)
    t["lora_unet_no_such_block_attn1_to_q.lora_up.weight"] = torch.zeros(8, 4)
    t["lora_unet_no_such_block_attn1_to_q.lora_down.weight"] = torch.zeros(4, 8)
    t["bundle_emb.sks.string_to_param.*"] = torch.zeros(1, 32)
    path = _save(tmp_path / "u.safetensors", t)
    model = tiny_modules("sd15")
    text_only = {"text_encoder": model["text_encoder"]}       # the UNet keys have nowhere to go
    stack = LoraStack(model)
    with pytest.warns(UserWarning, match=r"u: 2 of its keys match no weight.*no_such_block"):
        report = stack.set([(path, 1.0)])
    assert report.unmatched_count == 2 and report.touched == 4
    assert {n for _, n in report.unmatched} == {"lora_unet_no_such_block_attn1_to_q", "bundle_emb.sks.string_to_param.*"}
    with pytest.warns(UserWarning, match="6 of its keys"):
        report = LoraStack(text_only, kind="sd15", architecture=tiny_architecture("sd15")).set([(path, 1.0)])
    assert report.unmatched_count == 6 and report.touched == 0


def test_sdxl_lora_on_sd15_model_names_file_and_key(targets, tmp_path):
    path = write_kohya(tmp_path / "xl_style.safetensors", _lora(targets["sdxl"]),
                       {"ss_base_model_version": "sdxl_base_v1-0"})
    model = tiny_modules("sd15")
    before = weights(model)
    with pytest.raises(UsageError) as e:
        LoraStack(model).set([(path, 1.0)])
    msg = str(e.value)
    assert "xl_style" in msg and "SDXL LoRA" in msg and "lora_unet_" in msg and "up (" in msg and "is (" in msg
    assert_equal(weights(model), before)


def test_rank_mismatch_lycoris_and_missing_names(tmp_path):
    key = "lora_unet_down_blocks_0_attentions_0_proj_in"
    bad = _save(tmp_path / "bad.safetensors", {key + ".lora_up.weight": torch.zeros(16, 4, 1, 1),
                                               key + ".lora_down.weight": torch.zeros(3, 16, 1, 1)})
    with pytest.raises(UsageError, match=r"bad.*rank mismatch in %s.*\(16, 4, 1, 1\).*\(3, 16, 1, 1\)" % key):
        load_lora(bad)
    loha = _save(tmp_path / "loha.safetensors", {key + ".hada_w1_a": torch.zeros(16, 4), key + ".hada_w1_b":
                                                  torch.zeros(4, 16), key + ".alpha": torch.tensor(4.0)})
    with pytest.raises(UsageError, match="loha.*LoHa.*not|loha.*LoHa.*applies LoRA and LoCon only"):
        load_lora(loha)
    with pytest.raises(UsageError, match="DoRA"):
        load_lora({key + ".lora_up.weight": torch.zeros(16, 4), key + ".lora_down.weight": torch.zeros(4, 16),
                   key + ".dora_scale": torch.ones(1, 16)})

    good = _lora([keymap.LoraTarget(key, torch.nn.Conv2d(16, 16, 1), "x", "unet", "conv1x1")])
    folder = tmp_path / "loras"
    (folder / "sub").mkdir(parents=True)
    write_kohya(folder / "sub" / "paper_cut_style.safetensors", good)
    stack = LoraStack(tiny_modules("sd15"), lora_dirs=[str(folder)])
    assert stack.set([("paper_cut_style", 0.5)]).touched == 1
    with pytest.raises(UsageError, match=r"no LoRA named 'paper_cutstyle'.*close matches: paper_cut_style"):
        stack.set([("paper_cutstyle", 0.5)])
    with pytest.raises(UsageError, match="not found"):
        stack.set([(str(tmp_path / "nope.safetensors"), 0.5)])


def test_cache_rereads_only_changed_files(targets, tmp_path):
    lora = _lora(targets["sd15"][:3])
    path = write_kohya(tmp_path / "c.safetensors", lora)
    stack = LoraStack(tiny_modules("sd15"), lora_dirs=[str(tmp_path)])
    stack.set([("c", 1.0)])
    stack.set([])
    stack.set([("c", 1.0)])
    assert stack.stats["loads"] == 1
    write_kohya(path, _lora(targets["sd15"][:3], seed=9))
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    assert stack.set([("c", 1.0)]).touched == 3          # new content: a new identity, re-merged
    assert stack.stats["loads"] == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_weights_with_cpu_backups(targets, tmp_path):
    kind = "sd15"
    lora = _lora(targets[kind][::2])
    path = write_kohya(tmp_path / "g.safetensors", lora)
    model = {k: v.cuda() for k, v in tiny_modules(kind).items()}
    original = weights(model)
    stack = LoraStack(model)
    stack.set([(path, 0.8)])
    assert all(b.device.type == "cpu" for b in stack._backups.values())
    ref = reference_merge(tiny_modules(kind), targets[kind], lora, 0.8)
    assert_close({k: v.cpu() for k, v in weights(model).items()}, weights(ref), atol=1e-5)
    stack.set([(path, 0.3)])
    stack.clear()
    assert_equal(weights(model), original)
