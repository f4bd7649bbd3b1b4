"""LoRA for causal language models (task_type: text-generation): `TextTrainer` runs the same loop
as image training (_Trainer: optimizer, schedule, accumulation, mixed precision, checkpoints and
exact resume, TensorBoard, callbacks, Ctrl-C) over a local Hugging Face model folder, and writes
PEFT's adapter format.

- Model: `AutoModelForCausalLM.from_pretrained(base_model, local_files_only=True)`; nothing is
  downloaded. LoRA goes on the Linear layers (GPT-2: Conv1D) whose names end in one of
  lora_target_modules (PEFT's rule), by default per architecture (DEFAULT_TARGETS).
- Loss: next-token cross-entropy over the learned tokens only (labels != -100), the mean over a
  micro-batch's learned tokens as transformers computes it, but without [B, T, vocab] logits: the
  backbone's hidden states at the learned positions go through the output layer a chunk of rows at
  a time (`linear_cross_entropy`), and each chunk's gradient is made at once, so neither float32
  logits nor their gradient are ever held for the whole batch.
- Randomness: LoRA dropout masks from the network's generator and the base model's own dropout
  (GPT-2 has some) from torch's generator, both reseeded from (seed, step, micro-batch): a resumed
  run ends bit-identical to an uninterrupted one on the CPU.
- Output: `<output_dir>/<output_name>/` with adapter_model.safetensors (`base_model.model.<module
  path>.lora_A.weight` / `.lora_B.weight`), adapter_config.json and the tokenizer, which
  `peft.PeftModel.from_pretrained(base, folder)` loads as it is; checkpoint-<step>/ holds the same
  files (as transformers' Trainer writes them) plus state/. merge_output adds
  `<output_name>-merged/`, the base model with the LoRA merged in (save_pretrained + tokenizer).
"""
import json
import math
import os
import shutil
import tempfile
import time

import torch
import torch.nn.functional as F

from .. import ops
from .._version import __version__
from ..errors import ModelError, UsageError
from ..formats.keymap import LoraTarget
from . import text_data
from .checkpoint import _fsync_tree
from .loop import TrainingError, _Trainer, _seed_int
from .lora import LoRANetwork, is_conv1d

_LLAMA_LIKE = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DEFAULT_TARGETS = {
    "llama": _LLAMA_LIKE, "mistral": _LLAMA_LIKE, "qwen2": _LLAMA_LIKE, "qwen3": _LLAMA_LIKE, "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE, "gemma3_text": _LLAMA_LIKE,
    "gpt2": ("c_attn", "c_proj", "c_fc"),
    "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
}
# Architectures whose logits are exactly output_layer(backbone(x)) (Gemma 2/3 add a tanh soft cap,
# which linear_cross_entropy applies): their loss can skip the full logits.
_PLAIN_HEAD = frozenset(DEFAULT_TARGETS)

RESUME_MUST_MATCH_TEXT = ("task_type", "lora_rank", "lora_alpha", "lora_target_modules", "batch_size",
                          "gradient_accumulation_steps", "seed", "max_seq_length", "packing",
                          "validation_split")

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


# ---- model ----------------------------------------------------------------------------

def _dtype_kwarg(dtype):
    """transformers >= 4.56 names it dtype; older versions torch_dtype."""
    import transformers
    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def source_dtype(path):
    """The dtype a model folder's config.json declares (None when it says none)."""
    try:
        with open(os.path.join(os.fspath(path), "config.json"), encoding="utf-8") as f:
            conf = json.load(f)
    except (OSError, ValueError):
        return None
    name = conf.get("dtype") or conf.get("torch_dtype")
    dtype = getattr(torch, name, None) if isinstance(name, str) else None
    return dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else None


def load_causal_lm(path, dtype=torch.float32, tokenizer_path=None):
    """(model, tokenizer) from a local Hugging Face folder; a missing pad token becomes EOS."""
    path = os.fspath(path)
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ModelError("base_model: %s is not a Hugging Face model folder (config.json and *.safetensors, as "
                         "save_pretrained writes them; for task_type text-generation)" % path, path)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    try:
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, **_dtype_kwarg(dtype))
    except (OSError, ValueError, KeyError) as e:
        raise ModelError("base_model: cannot load %s as a causal language model: %s" % (path, e), path) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path or path, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError("cannot load the tokenizer from %s: %s" % (tokenizer_path or path, e),
                         tokenizer_path or path) from None
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _check_packing():
    """Packed samples are kept apart by transformers' mask built from position_ids restarting at 0
    (masking_utils.find_packed_sequence_indices); older versions (before 4.54) would let them attend to each other."""
    try:
        from transformers.masking_utils import find_packed_sequence_indices  # noqa: F401
    except ImportError:
        import transformers
        raise UsageError("packing: true needs transformers 4.54 or newer (this is %s), which keeps packed samples "
                         "from attending to each other; upgrade transformers or set packing: false"
                         % transformers.__version__) from None


def _layer_ok(module):
    return isinstance(module, torch.nn.Linear) or is_conv1d(module)


def find_targets(model, patterns=None):
    """(LoraTargets in model order, target_modules for adapter_config.json). patterns: PEFT's
    target_modules (a module is chosen when its name is a pattern or ends in "." + a pattern),
    "all-linear" (every Linear / Conv1D but the output layer), or None (DEFAULT_TARGETS)."""
    model_type = getattr(model.config, "model_type", "?")
    if patterns is None:
        patterns = DEFAULT_TARGETS.get(model_type, ("all-linear",))
    patterns = tuple(patterns)
    output = model.get_output_embeddings()
    modules = list(model.named_modules())
    all_linear = patterns == ("all-linear",)
    chosen, used, wrong = [], set(), []
    for name, module in modules:
        if not name:
            continue
        if all_linear:
            hit = _layer_ok(module) and module is not output
        else:
            match = [p for p in patterns if name == p or name.endswith("." + p)]
            used.update(match)
            hit = bool(match)
            if hit and not _layer_ok(module):
                wrong.append("%s (%s)" % (name, type(module).__name__))
                continue
        if hit:
            chosen.append(LoraTarget(key=name, module=module, module_path=name, component="llm", kind="linear"))
    suffixes = sorted({n.rsplit(".", 1)[-1] for n, m in modules if n and _layer_ok(m)})
    if wrong:
        raise UsageError("lora_target_modules: %s %s not a Linear layer; LoRA trains Linear (and GPT-2 Conv1D) "
                         "layers, whose names here end in: %s" % (wrong[0], "is" if len(wrong) == 1 else
                                                                  "(and %d more) are" % (len(wrong) - 1),
                                                                  ", ".join(suffixes)))
    missing = [p for p in patterns if p not in used] if not all_linear else []
    if missing or not chosen:
        raise UsageError("lora_target_modules: %s matches no layer of this %s model; its Linear layers end in: %s"
                         % (", ".join(missing) or ", ".join(patterns), model_type, ", ".join(suffixes)))
    written = sorted({t.key.rsplit(".", 1)[-1] for t in chosen}) if all_linear else sorted(patterns)
    return chosen, written


# ---- loss -----------------------------------------------------------------------------

class _LinearCrossEntropy(torch.autograd.Function):
    """mean over rows of cross_entropy(h @ W^T + b, target), float32 softmax, a chunk of rows at a
    time; the gradient for h is made in the same pass (W is frozen), so at most one chunk's
    logits exist at once."""

    @staticmethod
    def forward(ctx, h, weight, bias, target, softcap, chunk):
        n = h.shape[0]
        want_grad = ctx.needs_input_grad[0]
        grad = torch.empty_like(h) if want_grad else None
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        with torch.autocast(h.device.type, enabled=False):
            for s in range(0, n, chunk):
                hc = h[s:s + chunk].to(weight.dtype)
                logits = hc @ weight.t()
                if bias is not None:
                    logits = logits + bias
                logits = logits.float()
                capped = None
                if softcap:
                    capped = torch.tanh(logits / softcap)
                    logits = capped * softcap
                tc = target[s:s + chunk]
                lse = torch.logsumexp(logits, dim=-1)
                total += (lse - logits.gather(1, tc[:, None]).squeeze(1)).sum()
                if want_grad:
                    p = logits.sub_(lse[:, None]).exp_()  # softmax, in the logits' memory
                    p[torch.arange(p.shape[0], device=p.device), tc] -= 1.0
                    if capped is not None:
                        p.mul_(1.0 - capped * capped)
                    grad[s:s + chunk] = (p.to(weight.dtype) @ weight).to(h.dtype)
        ctx.save_for_backward(grad)
        ctx.n = n
        return total / max(n, 1)

    @staticmethod
    def backward(ctx, g):
        (grad,) = ctx.saved_tensors
        return grad * (g / max(ctx.n, 1)).to(grad.dtype), None, None, None, None, None


def linear_cross_entropy(h, weight, bias, target, softcap=None, chunk=None):
    """Cross-entropy of the rows of h [N, H] through a frozen output layer (weight [V, H]) against
    target [N], averaged over N, never holding more than `chunk` rows of logits (default: 32 MiB of
    float32 logits on the CPU, 128 MiB on a GPU, where larger matrix products run faster)."""
    if chunk is None:
        budget = (32 << 20) if h.device.type == "cuda" else (8 << 20)
        chunk = max(32, budget // max(1, weight.shape[0]))
    return _LinearCrossEntropy.apply(h, weight, bias, target, softcap, int(chunk))


# ---- PEFT adapter files -----------------------------------------------------------------

def peft_tensors(network, dtype=torch.float32):
    """PEFT's keys for our adapters: base_model.model.<path>.lora_A.weight ([r, in]) / lora_B ([out, r])."""
    out = {}
    for m in network.layers:
        out["base_model.model.%s.lora_A.weight" % m.key] = m.lora_down.weight.detach().to("cpu", dtype).contiguous()
        out["base_model.model.%s.lora_B.weight" % m.key] = m.lora_up.weight.detach().to("cpu", dtype).contiguous()
    return out


def adapter_config(rank, alpha, dropout, target_modules, base_model, fan_in_fan_out):
    """adapter_config.json as peft's LoraConfig writes it (the fields every version since 0.6 reads)."""
    alpha = float(alpha)
    return {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": int(rank),
        "lora_alpha": int(alpha) if alpha.is_integer() else alpha, "lora_dropout": float(dropout),
        "target_modules": list(target_modules), "base_model_name_or_path": base_model,
        "fan_in_fan_out": bool(fan_in_fan_out), "bias": "none", "modules_to_save": None,
        "init_lora_weights": True, "inference_mode": True, "use_rslora": False, "use_dora": False,
        "layers_to_transform": None, "layers_pattern": None, "rank_pattern": {}, "alpha_pattern": {},
        "revision": None,
    }


def read_peft_adapter(folder):
    """(adapter config dict, {"<module path>.lora_down.weight"/"lora_up.weight": tensor}) of a PEFT
    LoRA adapter folder (ours or peft's) or its adapter_model.safetensors."""
    from safetensors.torch import load_file
    folder = os.fspath(folder)
    weights = folder if folder.endswith(".safetensors") else os.path.join(folder, ADAPTER_WEIGHTS)
    config_path = os.path.join(os.path.dirname(weights), ADAPTER_CONFIG)
    if not os.path.isfile(weights) or not os.path.isfile(config_path):
        raise UsageError("%s is not a PEFT LoRA adapter (%s and %s)" % (folder, ADAPTER_WEIGHTS, ADAPTER_CONFIG))
    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    if config.get("peft_type", "LORA") != "LORA" or config.get("use_dora"):
        raise UsageError("%s: only plain LoRA adapters are supported (peft_type %s%s)"
                         % (folder, config.get("peft_type"), ", use_dora" if config.get("use_dora") else ""))
    if config.get("modules_to_save"):
        raise UsageError("%s: adapters with modules_to_save are not supported" % folder)
    tensors = {}
    for key, value in load_file(weights).items():
        k = key[len("base_model.model."):] if key.startswith("base_model.model.") else key
        k = k.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B.")
        if k.endswith(".lora_A.weight"):
            tensors[k[:-len(".lora_A.weight")] + ".lora_down.weight"] = value
        elif k.endswith(".lora_B.weight"):
            tensors[k[:-len(".lora_B.weight")] + ".lora_up.weight"] = value
        else:
            raise UsageError("%s: unsupported tensor %s (only lora_A / lora_B weights)" % (weights, key))
    return config, tensors


def _scale_alpha(config, path, rank):
    """Our alpha (scale = alpha / rank) for a module of a PEFT config (alpha_pattern, rslora)."""
    alpha = float(config.get("lora_alpha", rank))
    for pattern, a in (config.get("alpha_pattern") or {}).items():
        if path == pattern or path.endswith("." + pattern):
            alpha = float(a)
    if config.get("use_rslora"):
        alpha = alpha * math.sqrt(rank)  # PEFT scales rslora adapters by alpha / sqrt(r)
    return alpha


def apply_peft_adapter(model, folder):
    """Our LoRA modules on `model` with the weights of a PEFT adapter folder; returns the network
    (applied, eval mode, float32 on the model's device)."""
    config, tensors = read_peft_adapter(folder)
    modules = dict(model.named_modules())
    paths = sorted({k.rsplit(".", 2)[0] for k in tensors})
    missing = [p for p in paths if p not in modules]
    if missing:
        raise UsageError("%s has adapters for %s, which this model does not have (another base model?)"
                         % (folder, missing[0]))
    order = {name: i for i, name in enumerate(modules)}
    paths.sort(key=order.get)
    targets = [LoraTarget(key=p, module=modules[p], module_path=p, component="llm", kind="linear") for p in paths]
    rank = int(config.get("r", 8))
    net = LoRANetwork(targets, rank, float(config.get("lora_alpha", rank)))
    for m in net.layers:
        r = tensors[m.key + ".lora_down.weight"].shape[0]
        if r != m.rank:  # rank_pattern
            m.rank = r
            m.lora_down = torch.nn.Linear(m.lora_down.in_features, r, bias=False)
            m.lora_up = torch.nn.Linear(r, m.lora_up.out_features, bias=False)
        m.set_alpha(_scale_alpha(config, m.key, r))
    net.load_lora_state_dict({k: v for k, v in tensors.items()}, source=folder)
    device = next(model.parameters()).device
    net.to(device, torch.float32)
    net.eval()
    net.apply_to()
    return net


def merge_network(network):
    """W += (alpha / r) * up @ down into every wrapped layer (transposed for Conv1D), one rounding
    per weight (lora_native.ops.merge_). Call after network.remove()."""
    with torch.no_grad():
        for m in network.layers:
            w = m._org[0].weight.data
            up = m.lora_up.weight.detach().to(w.device)
            down = m.lora_down.weight.detach().to(w.device)
            scale = float(m.alpha) / m.rank * m.multiplier
            ops.merge_(w, [(down.t(), up.t(), scale)] if m.fan_in_fan_out else [(up, down, scale)])


def _replace_folder(tmp, final):
    """Move a complete folder into place, replacing an earlier one only once the new one is whole."""
    old = None
    if os.path.isdir(final):
        old = tempfile.mkdtemp(prefix=".replaced-" + os.path.basename(final) + ".", dir=os.path.dirname(final))
        os.replace(final, os.path.join(old, "previous"))
    os.replace(tmp, final)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def _atomic_folder(final, write):
    """write(tmp folder), then rename it to `final`."""
    parent = os.path.dirname(os.path.abspath(final))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(final) + ".", dir=parent)
    try:
        write(tmp)
        os.chmod(tmp, 0o755)
        _fsync_tree(tmp)
        _replace_folder(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _read_template(value):
    if value is None or "{" in value:
        return value
    with open(value, encoding="utf-8") as f:
        return f.read()


def _prompt_text(tokenizer, prompt, chat):
    """(text, add_special_tokens) for a prompt: the chat template's rendering of one user turn."""
    if chat and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True), False
    return prompt, True


@torch.no_grad()
def generate_text(model, tokenizer, prompts, max_new_tokens=64, temperature=0.0, seed=0, chat=False):
    """The continuation of each prompt (greedy when temperature is 0)."""
    device = next(model.parameters()).device
    out = []
    for i, prompt in enumerate(prompts):
        text, special = _prompt_text(tokenizer, prompt, chat)
        enc = tokenizer(text, add_special_tokens=special, return_tensors="pt").to(device)
        torch.manual_seed(int(seed) + i)
        kwargs = dict(max_new_tokens=int(max_new_tokens), pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id)
        if temperature and temperature > 0:
            kwargs.update(do_sample=True, temperature=float(temperature), top_k=0)
        else:
            kwargs.update(do_sample=False)
        ids = model.generate(**enc, **kwargs)
        out.append(tokenizer.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
    return out


def generate_from_folders(base, lora=None, prompt="", max_new_tokens=64, temperature=0.0, seed=0, chat=False,
                          device=None):
    """`lora-native generate`: load the base folder (and a PEFT adapter folder) and continue the prompt.
    The adapter folder's tokenizer (with the chat template training used) wins over the base's."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tok_path = lora if lora and os.path.isfile(os.path.join(lora, "tokenizer_config.json")) else None
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model, tokenizer = load_causal_lm(base, dtype, tokenizer_path=tok_path)
    model.to(device).eval()
    if lora:
        apply_peft_adapter(model, lora)
    if chat and not getattr(tokenizer, "chat_template", None):
        raise UsageError("--chat: the tokenizer has no chat template")
    return generate_text(model, tokenizer, [prompt], max_new_tokens, temperature, seed, chat)[0]


# ---- the trainer ------------------------------------------------------------------------

class TextTrainer(_Trainer):
    sample_noun = "text samples"
    data_noun = "training texts"
    lr_names = ("lr",)
    resume_must_match = RESUME_MUST_MATCH_TEXT

    def _setup_task(self):
        cfg = self.cfg
        if cfg.model_type not in ("auto", "llm"):
            raise UsageError("model_type: %s is a Stable Diffusion model; task_type text-generation needs auto or llm"
                             % cfg.model_type)
        if cfg.packing:
            _check_packing()  # before the model and the data are loaded
        model, tok = load_causal_lm(cfg.base_model, self.weight_dtype, cfg.tokenizer_path)
        template = _read_template(cfg.chat_template)
        if template:
            tok.chat_template = template
        self.model, self.tokenizer = model, tok
        self.kind = getattr(model.config, "model_type", "causal-lm")
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)

        ds = text_data.load_text_dataset(cfg.train_data_dir, tok, cfg.max_seq_length, cfg.text_column, cfg.txt_split)
        for w in text_data.summarize(ds, cfg.max_seq_length):
            self.warn(w)
        if not ds.samples:
            raise TrainingError("no usable training sample in %s (%d file(s) read, %d line(s) skipped%s)" % (
                cfg.train_data_dir, len(ds.files), len(ds.bad), ", the first: " + ds.bad[0] if ds.bad else ""))
        self.dataset = ds
        train, self.val_samples = self._split_validation()
        ds.samples = train
        text_data.finish(ds, cfg.max_seq_length, cfg.packing)
        self.samples = ds.samples
        self.dataset_fingerprint = ds.fingerprint
        self.val_fingerprint = text_data.fingerprint(self.val_samples)
        self.info("%d sample(s) (%s) from %d file(s): %d sequence(s), %d tokens, %d of them learned%s" % (
            ds.num_raw, ", ".join("%d %s" % (n, k) for k, n in sorted(ds.kinds.items())), len(ds.files),
            len(ds.samples), ds.tokens, ds.learned_tokens, "; %d held out for validation" % len(self.val_samples)
            if self.val_samples else ""))

        targets, self.target_modules = find_targets(model, cfg.lora_target_modules)
        torch.manual_seed(cfg.seed)  # kaiming init of lora_A
        net = LoRANetwork(targets, cfg.lora_rank, cfg.lora_alpha, dropout=cfg.network_dropout,
                          input_dropout=cfg.lora_dropout)
        if cfg.network_weights:
            _, tensors = read_peft_adapter(cfg.network_weights)
            net.load_lora_state_dict(tensors, source=cfg.network_weights)
        self.network = net
        model.requires_grad_(False)
        model.to(self.device)
        net.to(self.device, torch.float32)
        net.train()
        net.apply_to()
        # Training mode as transformers' Trainer has it: the model's own dropout (if any) is on,
        # reseeded every micro-batch.
        model.train()
        self._use_cache = getattr(model.config, "use_cache", None)
        model.config.use_cache = False
        if cfg.gradient_checkpointing:
            enable = getattr(model, "activation_checkpointing_enable", None)
            if enable is not None:
                enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        head = model.get_output_embeddings()
        cfgm = model.config
        self.fused_head = (self.kind in _PLAIN_HEAD and isinstance(head, torch.nn.Linear)
                           and head not in [t.module for t in targets] and model.base_model is not model)
        self.head = head
        self.softcap = getattr(cfgm, "final_logit_softcapping", None)

    def _param_groups(self):
        return [{"params": list(self.network.parameters()), "lr": self.cfg.learning_rate}]

    def _base_lrs(self):
        return [self.cfg.learning_rate]

    def _epoch_batches(self, epoch, processes=None):
        return text_data.epoch_batches(self.samples, self._global_batch_size(processes), self.cfg.seed, epoch)

    def _after_setup(self):
        self._step_tokens, self._t_step = 0, time.time()

    def _start_info(self):
        return {"total_steps": self.total_steps, "epochs": self.total_epochs, "samples": len(self.samples),
                "tokens": self.dataset.tokens, "model": self.kind, "resume_step": self.global_step}

    def _step_logs(self):
        now = time.time()
        rate = self._step_tokens / max(now - self._t_step, 1e-9)
        self._step_tokens, self._t_step = 0, now
        return {"tokens_per_s": rate}

    # ---- loss ------------------------------------------------------------------------
    def _tensors(self, samples):
        ids, labels, pos = text_data.collate(samples, self.pad_id)
        return tuple(torch.from_numpy(a).to(self.device) for a in (ids, labels, pos))

    def _lm_loss(self, ids, labels, pos):
        """Mean next-token loss over the learned tokens."""
        target = labels[:, 1:]
        sel = target != text_data.IGNORE
        if self.fused_head:
            hidden = self.model.base_model(input_ids=ids, position_ids=pos, use_cache=False).last_hidden_state
            return linear_cross_entropy(hidden[:, :-1][sel], self.head.weight, self.head.bias, target[sel],
                                        self.softcap)
        logits = self.model(input_ids=ids, position_ids=pos, use_cache=False).logits
        return F.cross_entropy(logits[:, :-1][sel].float(), target[sel])

    def _loss(self, indices, micro):
        """(mean loss over the learned tokens of this process's samples, how many tokens)."""
        cfg = self.cfg
        whole = self._batch if self._batch is not None else indices
        self._step_tokens += sum(len(self.samples[i].input_ids) for i in whole)  # the global batch's
        if not indices:
            return None, 0
        samples = [self.samples[i] for i in indices]
        ids, labels, pos = self._tensors(samples)
        # Per-step randomness from (seed, step, micro-batch): identical on resume.
        self.dropout_generator.manual_seed(_seed_int(cfg.seed, 2, self.global_step, micro))
        torch.manual_seed(_seed_int(cfg.seed, 3, self.global_step, micro))
        autocast = torch.autocast(self.device.type, dtype=self.weight_dtype,
                                  enabled=self.weight_dtype != torch.float32)
        with autocast:
            loss = self._lm_loss(ids, labels, pos)
        return loss, int((labels[:, 1:] != text_data.IGNORE).sum())

    # ---- validation (deterministic: no dropout, fixed order) ----------------------------
    def _split_validation(self):
        """(train, validation) samples, before packing: validation_data_dir's samples when the config
        has one, else a validation_split fraction drawn from the seed alone, else (all, []).
        _setup_task calls it before packing."""
        cfg = self.cfg
        samples = self.dataset.samples
        if cfg.validation_data_dir:
            vds = text_data.load_text_dataset(cfg.validation_data_dir, self.tokenizer, cfg.max_seq_length,
                                              cfg.text_column, cfg.txt_split)
            for w in text_data.summarize(vds, cfg.max_seq_length):
                self.warn("validation: " + w)
            return list(samples), vds.samples
        return text_data.split_validation(samples, cfg.validation_split or 0.0, cfg.seed)

    @torch.no_grad()
    def _validation_loss(self):
        """Teacher-forced loss per learned token over the held-out samples (mean over all their
        learned tokens, so the batch size does not change it); None without validation samples."""
        if not self.val_samples:
            return None
        was = self.model.training
        self.model.eval()
        self.network.eval()
        total, count = 0.0, 0
        try:
            bs = max(1, self.cfg.batch_size)
            starts = list(range(0, len(self.val_samples), bs))[self.procs.rank::self.procs.world]  # this process's
            for k in starts:
                ids, labels, pos = self._tensors(self.val_samples[k:k + bs])
                n = int((labels[:, 1:] != text_data.IGNORE).sum())
                with torch.autocast(self.device.type, dtype=self.weight_dtype,
                                    enabled=self.weight_dtype != torch.float32):
                    total += float(self._lm_loss(ids, labels, pos)) * n
                count += n
        finally:
            self.model.train(was)
            self.network.train()
        return self._mean_over_processes(total, count)

    # ---- saving ------------------------------------------------------------------------
    def _metadata(self, finished):
        cfg = self.cfg
        meta = {"format": "pt", "lora_native.version": __version__, "lora_native.task_type": "text-generation",
                "lora_native.base_model": os.path.basename(os.path.normpath(os.fspath(cfg.base_model))),
                "lora_native.architecture": self.kind, "lora_native.steps": str(self.global_step),
                "lora_native.epoch": str(self.epoch), "lora_native.num_samples": str(self.dataset.num_raw),
                "lora_native.max_seq_length": str(cfg.max_seq_length), "lora_native.learning_rate": str(
                    cfg.learning_rate), "lora_native.training_started_at": str(self.started_at)}
        if finished:
            meta["lora_native.training_finished_at"] = str(time.time())
        if self.val_step == self.global_step and self.val_loss is not None:
            meta["lora_native.validation_loss"] = repr(float(self.val_loss))
        return meta

    def _write_adapter(self, folder, finished, extra=None):
        from safetensors.torch import save_file
        cfg = self.cfg
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.save_precision, torch.float32)
        save_file(peft_tensors(self.network, dtype), os.path.join(folder, ADAPTER_WEIGHTS),
                  metadata=dict(self._metadata(finished), **(extra or {})))
        conf = adapter_config(cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, self.target_modules,
                              os.fspath(cfg.base_model), any(m.fan_in_fan_out for m in self.network.layers))
        with open(os.path.join(folder, ADAPTER_CONFIG), "w", encoding="utf-8") as f:
            json.dump(conf, f, indent=2, sort_keys=True)
        self.tokenizer.save_pretrained(folder)

    def _write_lora(self, path, finished=False, extra=None):
        _atomic_folder(path, lambda tmp: self._write_adapter(tmp, finished, extra))

    def _best_path(self):
        return os.path.join(self.cfg.output_dir, self.cfg.output_name + "-best")

    def _save_best(self):
        """save_best: the adapter folder of the weights with the lowest validation loss so far."""
        self._write_lora(self._best_path(), extra={"lora_native.best_step": str(self.best_step),
                                                   "lora_native.best_validation_loss": repr(float(self.best_loss))})

    def _checkpoint_lora_name(self):
        return None  # the adapter files sit in checkpoint-<step>/ itself, as transformers' Trainer has them

    def _write_checkpoint_lora(self, path, finished):
        self._write_adapter(path, finished)

    def _final_path(self):
        return os.path.join(self.cfg.output_dir, self.cfg.output_name)

    def _after_training(self, final_path):
        extra = {"task_type": "text-generation", "base_model": os.fspath(self.cfg.base_model)}
        if self.cfg.merge_output and self.main:
            extra["merged_path"] = self._merge()
        return extra

    def _merge(self):
        """<output_name>-merged/: the base model with the LoRA merged in, in the base's dtype."""
        cfg = self.cfg
        self.network.remove()
        model = self.model
        if cfg.gradient_checkpointing:
            disable = getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable
            disable()
        merge_network(self.network)
        model.config.use_cache = self._use_cache
        model.eval()
        dtype = source_dtype(cfg.base_model)
        if dtype is not None and dtype != self.weight_dtype:
            model.to(dtype)  # trained in float32 from a bf16 folder: written back as bf16
        final = os.path.join(cfg.output_dir, cfg.output_name + "-merged")

        def write(tmp):
            model.save_pretrained(tmp, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
        _atomic_folder(final, write)
        self.info("merged model: %s" % final)
        return final

    def _sample(self, writer):
        """Continuations of sample_prompts (greedy), written to samples/ and TensorBoard."""
        from .sample import read_prompts
        cfg = self.cfg
        prompts = read_prompts(cfg.sample_prompts)
        was = self.model.training
        self.model.eval()
        self.network.eval()
        self.model.config.use_cache = self._use_cache
        try:
            texts = generate_text(self.model, self.tokenizer, prompts, 64, 0.0, cfg.seed,
                                  chat=self.dataset.kinds.get("chat", 0) > 0)
        finally:
            self.model.config.use_cache = False
            self.model.train(was)
            self.network.train()
        folder = os.path.join(cfg.output_dir, "samples")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "%s_step%06d.txt" % (cfg.output_name, self.global_step))
        body = "".join("### prompt %d\n%s\n### output\n%s\n\n" % (i, p, t) for i, (p, t) in enumerate(zip(prompts,
                                                                                                          texts)))
        from ..fsutil import atomic_write_text
        atomic_write_text(path, body)
        if writer is not None:
            for i, (p, t) in enumerate(zip(prompts, texts)):
                writer.add_text("samples/%d" % i, "**%s**\n\n%s" % (p, t), self.global_step)
        self.cb.call("on_log", {"samples": [path]})
