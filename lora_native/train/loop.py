"""The training loop: `lora_native.train(config, callbacks=...)`.

Exact resume: every random draw of a step (noise, timesteps, dropout) comes from generators
seeded by (seed, step), and the data order, captions and augmentation of a batch from
(seed, epoch, batch index); a checkpoint adds the fp32 LoRA weights, optimizer, scheduler and
grad-scaler state. A run stopped at step 5 and resumed ends bit-identical to one that ran
straight through (on the CPU; GPU kernels may add last-bit noise).
"""
import dataclasses
import hashlib
import math
import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from .. import ops
from ..errors import LoraNativeError, UsageError
from ..formats.keymap import lora_targets
from ..formats.kohya import build_metadata, save_lora
from . import data as train_data
from .cache import LatentCache
from .checkpoint import list_checkpoints, load_checkpoint, read_training_state, resolve_resume, save_checkpoint
from .conditioning import count_truncated, crop_top_left, encode_text, time_ids
from .lora import LoRANetwork
from .model import load_base_model
from .noise import NoiseSchedule, diffusion_loss, sample_noise
from .optim import lr_lambda, make_optimizer, make_scheduler
from .distributed import Processes
from .validate import encode_latents, evaluation_loss


class TrainingError(LoraNativeError):
    """Training cannot go on (NaN loss, a resume that does not match, ...)."""


class TrainingInterrupted(LoraNativeError):
    """Stopped by Ctrl-C or a host's cancel; a checkpoint was saved first."""

    def __init__(self, message, checkpoint=None, step=0):
        super().__init__(message)
        self.checkpoint = checkpoint
        self.step = step


@dataclass
class TrainResult:
    lora_path: str
    steps: int
    epochs: int
    final_loss: float
    checkpoints: list = field(default_factory=list)
    elapsed: float = 0.0
    warnings: list = field(default_factory=list)
    task_type: str = "text-to-image"
    merged_path: Optional[str] = None  # text-generation with merge_output: the merged model folder
    base_model: Optional[str] = None   # text-generation: the base model folder (for lora-native generate)
    process_index: int = 0             # several processes: which one returned this (0 writes the files)
    # validation (None without it): the lowest validation loss, its step and its -best file or folder
    # (save_best), and the validation loss of the final weights
    best_step: Optional[int] = None
    best_loss: Optional[float] = None
    best_path: Optional[str] = None
    last_loss: Optional[float] = None


class Callbacks:
    """Hooks hosts use (WebUI tab, ComfyUI node): each may be missing. `should_stop()`
    returning True makes the loop save a checkpoint and stop, like Ctrl-C."""

    def __init__(self, obj=None):
        self._obj = obj

    def _get(self, name):
        if self._obj is None:
            return None
        if isinstance(self._obj, dict):
            return self._obj.get(name)
        return getattr(self._obj, name, None)

    def call(self, name, *args):
        fn = self._get(name)
        if fn is not None:
            return fn(*args)
        return None

    def should_stop(self):
        return bool(self.call("should_stop"))


# Things a resumed run must share with the run that wrote the checkpoint.
# (The data order depends on the dataset and the buckets; the weights on the network's shape.)
RESUME_MUST_MATCH = ("lora_rank", "lora_alpha", "conv_lora", "conv_dim", "conv_alpha", "train_text_encoder",
                     "batch_size", "gradient_accumulation_steps", "seed", "resolution", "enable_bucket",
                     "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps", "bucket_no_upscale",
                     "v_parameterization", "validation_split")


def _device(cfg):
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UsageError("device: cuda, but torch sees no CUDA GPU (torch %s)" % torch.__version__)
        return torch.device("cuda")
    return torch.device("cpu")


def _weight_dtype(cfg, device):
    if cfg.mixed_precision == "fp16":
        if device.type != "cuda":
            raise UsageError("mixed_precision: fp16 needs a CUDA GPU; on the CPU use bf16 or no")
        return torch.float16
    if cfg.mixed_precision == "bf16":
        return torch.bfloat16
    return torch.float32


def _fingerprint(samples):
    """What a resumed run must find again: the same files with the same bytes, repeats and captions."""
    h = hashlib.sha256()
    for s in samples:
        h.update(("%s\0%016x\0%d\0%s\n" % (s.rel, s.file_hash, s.repeats, s.caption)).encode("utf-8",
                                                                                            "surrogateescape"))
    return h.hexdigest()


def _seed_int(seed, *parts):
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *parts]).generate_state(1)[0])


def _seeded(seed, *parts):
    """A generator for one step or batch: the same inputs give the same draws on resume."""
    g = torch.Generator()
    g.manual_seed(_seed_int(seed, *parts))
    return g


class _StopFlag:
    """Ctrl-C sets it; the loop saves and stops at the next step boundary."""

    def __init__(self):
        self.set = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.set:  # a second Ctrl-C: give up at once
            raise KeyboardInterrupt
        self.set = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


def _as_config(config, overrides):
    from ..config import Config, load_config
    if isinstance(config, Config):
        return Config.from_dict(dict(config.to_dict(), **overrides)) if overrides else config
    if isinstance(config, dict):
        return Config.from_dict(dict(config, **overrides))
    return load_config(os.fspath(config), overrides or None)


def train(config, callbacks=None, **overrides):
    """Train a LoRA. `config`: a path to a YAML file, a dict of config keys, or a Config.
    Returns a TrainResult; raises TrainingInterrupted after saving a checkpoint when stopped."""
    cfg = _as_config(config, overrides)
    if cfg.task_type == "text-generation":
        from .text import TextTrainer
        return TextTrainer(cfg, Callbacks(callbacks)).run()
    return _Trainer(cfg, Callbacks(callbacks)).run()


class _Trainer:
    def __init__(self, cfg, callbacks):
        self.cfg = cfg
        self.cb = callbacks
        self.warnings = []

    procs = None  # distributed.Processes, from setup()

    @property
    def main(self):
        """Whether this process writes files and logs (always, with one process)."""
        return self.procs is None or self.procs.main

    def warn(self, message):
        self.warnings.append(message)
        if not self.main:
            return
        self.cb.call("on_log", {"warning": message})
        if self.bar is not None:
            self.bar.write("warning: " + message)
        else:
            import sys
            print("warning: " + message, file=sys.stderr)

    bar = None
    # validation: the held-out samples, the last validation (step, loss) and the best one
    val_samples = ()
    val_step = val_loss = best_step = best_loss = val_fingerprint = None

    def info(self, message):
        if not self.main:
            return
        self.cb.call("on_log", {"info": message})
        if self.bar is not None:
            self.bar.write(message)
        else:
            import sys
            print(message, file=sys.stderr)

    # ---- setup -----------------------------------------------------------------------
    def setup(self):
        cfg = self.cfg
        device = _device(cfg)
        self.procs = Processes(cuda=device.type == "cuda")
        self.device = self.procs.device(device)
        if not self.procs.main:
            self.cb = Callbacks(None)  # hosts hear from the main process only
        self.weight_dtype = _weight_dtype(cfg, self.device)
        os.makedirs(cfg.output_dir, exist_ok=True)
        self.resume_path, resume_msg = resolve_resume(cfg)
        if resume_msg:
            self.info(resume_msg)
        if cfg.resume == "never" and not cfg.resume_from_checkpoint and list_checkpoints(cfg.output_dir):
            raise TrainingError(
                "resume: never, but %s already holds checkpoints of an earlier run (%s); move them away or choose "
                "another output_dir (they are not deleted for you)"
                % (cfg.output_dir, os.path.basename(list_checkpoints(cfg.output_dir)[-1][1])))
        self._setup_task()
        net = self.network
        # Dropout masks come from this generator, reseeded per step (never torch's global RNG).
        self.dropout_generator = torch.Generator(device=self.device)
        net.set_dropout_generator(self.dropout_generator)
        self.native_kernels = ops.native_by_default(self.device) if cfg.native_kernels is None else cfg.native_kernels
        if self.native_kernels and ops.backend(self.device) == "torch":
            self.warn("native_kernels: this build has no native LoRA kernels for %s (%s); using torch's"
                      % (self.device, ops.why_no_native(self.device)))
            self.native_kernels = False
        net.use_native_kernels(self.native_kernels)
        self.optimizer = make_optimizer(cfg.optimizer, self._param_groups(), cfg.weight_decay,
                                        native=self.native_kernels)

        self.batches_per_epoch = len(self._epoch_batches(0))
        if self.batches_per_epoch == 0:
            raise TrainingError("the dataset gives no batch (%d usable %s)" % (len(self.samples), self.sample_noun))
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / cfg.gradient_accumulation_steps)
        self.total_steps = cfg.max_train_steps or cfg.epochs * self.steps_per_epoch
        self.total_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.scheduler = make_scheduler(self.optimizer, cfg.lr_scheduler, cfg.lr_warmup_steps, self.total_steps,
                                        cfg.lr_scheduler_num_cycles)
        self.scaler = torch.amp.GradScaler("cuda") if self.weight_dtype == torch.float16 else None

        self.global_step, self.epoch, self.batch_index = 0, 0, 0
        self.started_at = time.time()
        self.run_id = uuid.uuid4().hex
        self.saved_step = None
        if self.resume_path:
            self._resume()
        self._after_setup()

    # ---- what a task (diffusion here, text generation in text.py) provides ---------------
    sample_noun = "images"           # what the samples are, for messages
    data_noun = "images or captions"
    lr_names = ("lr/unet", "lr/text_encoder")  # log names of the optimizer groups' learning rates
    resume_must_match = RESUME_MUST_MATCH

    def _setup_task(self):
        """Model, data and the LoRA network (self.network, applied, on the device)."""
        cfg = self.cfg
        if cfg.model_type == "llm":
            raise UsageError("model_type: llm needs task_type: text-generation")
        # Loaded straight in the weight dtype: a GPU fp16 run never holds an fp32 copy in RAM.
        base = load_base_model(cfg.base_model, model_type=cfg.model_type, tokenizer_path=cfg.tokenizer_path,
                               dtype=self.weight_dtype)
        self.base = base
        self.kind = base.kind
        self.v_prediction = cfg.v_parameterization
        if base.prediction_type == "v_prediction" and not cfg.v_parameterization:
            self.v_prediction = True
            self.info("%s is a v-prediction model: training with the v-prediction objective "
                      "(v_parameterization: true)" % os.path.basename(os.fspath(cfg.base_model)))
        res = cfg.resolution or (1024 if base.kind == "sdxl" else 512)
        self.resolution = (res, res) if isinstance(res, int) else tuple(res)

        scan = train_data.scan_dataset(cfg.train_data_dir, metadata_path=cfg.metadata_path,
                                       caption_extension=cfg.caption_extension, trigger_word=cfg.trigger_word)
        for w in scan.warnings:
            self.warn(w)
        self.scan = scan
        self.samples, self.val_samples = self._split_validation()
        self.scan = dataclasses.replace(scan, samples=tuple(self.samples))  # the metadata counts trained images
        self.dataset_fingerprint, self.val_fingerprint = _fingerprint(self.samples), _fingerprint(self.val_samples)
        bucket_args = dict(resolution=self.resolution, enable_bucket=cfg.enable_bucket,
                           min_bucket_reso=cfg.min_bucket_reso,
                           max_bucket_reso=cfg.max_bucket_reso or (2048 if base.kind == "sdxl" else 1024),
                           bucket_reso_steps=cfg.bucket_reso_steps, bucket_no_upscale=cfg.bucket_no_upscale,
                           warnings=self.warnings)
        self.buckets = train_data.assign_buckets(self.samples, **bucket_args)
        self.val_buckets = train_data.assign_buckets(self.val_samples, **bucket_args)
        long_ = count_truncated(base.tokenizers[0], [s.caption for s in self.samples])
        if long_:
            self.warn("%d caption(s) are longer than 77 tokens; their ends are cut off" % long_)

        # The network: adapters on the UNet (and the text encoders when trained).
        targets = lora_targets(base, conv_dim=cfg.conv_lora, unet=True, text_encoder=cfg.train_text_encoder)
        torch.manual_seed(cfg.seed)  # kaiming init of lora_down
        net = LoRANetwork(targets, cfg.lora_rank, cfg.lora_alpha, cfg.conv_dim if cfg.conv_lora else None,
                          cfg.conv_alpha if cfg.conv_lora else None, cfg.network_dropout, cfg.lora_dropout)
        if cfg.network_weights:
            from safetensors.torch import load_file
            net.load_lora_state_dict(load_file(cfg.network_weights), source=cfg.network_weights)
        self.network = net

        # Frozen base in the weight dtype; LoRA weights fp32 on the device.
        for m in [base.unet, base.vae] + list(base.text_encoders):
            m.requires_grad_(False)
            m.eval()
        for m in [base.unet] + list(base.text_encoders):
            m.to(self.device)
            if self.weight_dtype != torch.float32:
                m.to(self.weight_dtype)
        base.vae.to(self.device).float()  # VAEs overflow in fp16 (SDXL's always)
        net.to(self.device, torch.float32)
        net.train()
        net.apply_to()
        if cfg.gradient_checkpointing:
            base.unet.enable_gradient_checkpointing()
            if cfg.train_text_encoder:
                for te in base.text_encoders:
                    # transformers 5 renamed it; older versions only have the first name.
                    enable = getattr(te, "activation_checkpointing_enable", None) or te.gradient_checkpointing_enable
                    enable()
                    te.train()  # transformers checkpoints only in training mode (CLIP has no dropout)
        self.schedule = NoiseSchedule(device=self.device)

    def _param_groups(self):
        cfg = self.cfg
        groups = [{"params": self.network.parameters_of("unet"), "lr": cfg.unet_lr}]
        te_params = self.network.parameters_of("te")
        if te_params:
            groups.append({"params": te_params, "lr": cfg.text_encoder_lr})
        return groups

    def _base_lrs(self):
        """The config's learning rate of each optimizer group."""
        return [self.cfg.unet_lr, self.cfg.text_encoder_lr][:len(self.optimizer.param_groups)]

    _batch, _offset = None, 0  # the global batch being trained and where this process's part starts

    def _shard(self, batch):
        """This process's part of a global batch: the rank-th batch_size of it (all of it with one
        process; nothing when the batch is short)."""
        self._batch = batch
        if self.procs.world == 1:
            self._offset = 0
            return batch
        bs = self.cfg.batch_size
        self._offset = min(self.procs.rank * bs, len(batch))
        return batch[self._offset:self._offset + bs]

    def _regroup(self, then):
        """Resuming a checkpoint of `then` processes with another number: the same epoch, and the
        position in it recomputed as the first global batch not yet wholly trained (the order of
        the rest follows the new global batch size)."""
        cfg = self.cfg
        old, new = self._global_batch_size(then), self._global_batch_size()
        self.warn("this checkpoint was written by %d process(es) and this run has %d: the effective batch changes "
                  "from %d to %d (batch_size %d x processes x gradient_accumulation_steps %d)"
                  % (then, self.procs.world, old * cfg.gradient_accumulation_steps,
                     new * cfg.gradient_accumulation_steps, cfg.batch_size, cfg.gradient_accumulation_steps))
        done = sum(len(b) for b in self._epoch_batches(self.epoch, then)[:self.batch_index])
        batches, at, index = self._epoch_batches(self.epoch), 0, 0
        while index < len(batches) and at + len(batches[index]) <= done:
            at += len(batches[index])
            index += 1
        self.batch_index = index
        if not cfg.max_train_steps:  # epochs: the remaining ones at the new number of steps per epoch
            left = math.ceil((len(batches) - index) / cfg.gradient_accumulation_steps) + \
                (cfg.epochs - self.epoch - 1) * self.steps_per_epoch
            total = self.global_step + max(left, 0)
            if total != self.total_steps:
                self.total_steps, self.total_epochs = total, cfg.epochs
                f = lr_lambda(cfg.lr_scheduler, cfg.lr_warmup_steps, total, cfg.lr_scheduler_num_cycles)
                self.scheduler.lr_lambdas = [f] * len(self.optimizer.param_groups)
                self._set_lrs()
        self.info("resuming at epoch %d, batch %d of %d" % (self.epoch + 1, index, len(batches)))

    def _set_lrs(self):
        """Each group's learning rate from the scheduler's base rates and multipliers at its step
        (after either changed on resume)."""
        step = self.scheduler.last_epoch
        for group, lr, f in zip(self.optimizer.param_groups, self.scheduler.base_lrs, self.scheduler.lr_lambdas):
            group["lr"] = lr * f(step)
        self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def _global_batch_size(self, processes=None):
        return self.cfg.batch_size * (processes or self.procs.world)

    def _epoch_batches(self, epoch, processes=None):
        """The global batches (lists of sample indices, batch_size x processes long) of one epoch,
        from (seed, epoch) alone."""
        return train_data.epoch_batches(self.samples, self.buckets, self._global_batch_size(processes),
                                        self.cfg.seed, epoch)

    def _after_setup(self):
        """After the resume: work that needs the final state (latent caching)."""
        cfg = self.cfg
        self.val_latents = None
        if self.val_samples:  # encoded once, while the VAE is on the device
            # with several processes, each encodes (and later evaluates) its share of the batches
            self.val_latents, failed = encode_latents(self.base, self.val_samples, self.val_buckets, self.device,
                                                      cfg.batch_size, part=self._val_part())
            for w in failed:
                self.warn(w)
            if not self.procs.add([len(self.val_latents)])[0]:
                raise TrainingError("none of the %d validation images can be used" % len(self.val_samples))
        self.latents = None
        if self.cfg.cache_latents:
            if self.cfg.cache_latents_to_disk:
                with self.procs.main_first():  # the others then find the files written
                    self._cache_latents()
            else:
                self._cache_latents()

    def _start_info(self):
        return {"total_steps": self.total_steps, "epochs": self.total_epochs, "images": len(self.samples),
                "model": self.kind, "resume_step": self.global_step}

    def _step_logs(self):
        """Task-specific figures for the step just made (tokens/s for text)."""
        return {}

    def _final_path(self):
        return os.path.join(self.cfg.output_dir, self.cfg.output_name + ".safetensors")

    def _after_training(self, final_path):
        """After the last checkpoint (merged outputs); returns extra TrainResult fields."""
        return {}

    def _resume(self):
        cfg = self.cfg
        state = read_training_state(self.resume_path)  # checked before any tensor is loaded
        saved = state.get("config", {})
        now = cfg.to_dict()  # the same JSON form the checkpoint holds (lists, not tuples)
        for key in self.resume_must_match:
            if key in saved and saved[key] != now.get(key):
                raise TrainingError("cannot resume from %s: it was trained with %s = %r, the config now says %r "
                                    "(use resume: never to start over)" % (self.resume_path, key, saved[key],
                                                                          now.get(key)))
        if state.get("base_model_kind") not in (None, self.kind):
            raise TrainingError("cannot resume from %s: it was trained on a %s model, this base model is %s"
                                % (self.resume_path, state["base_model_kind"], self.kind))
        if os.path.basename(saved.get("base_model", "")) not in ("", os.path.basename(os.fspath(cfg.base_model))):
            raise TrainingError("cannot resume from %s: it was trained on %s, the config now names %s (use resume: "
                                "never to start over)" % (self.resume_path, os.path.basename(saved["base_model"]),
                                                          os.path.basename(os.fspath(cfg.base_model))))
        if state.get("dataset") not in (None, self.dataset_fingerprint):
            raise TrainingError("cannot resume from %s: the %s in %s changed since it was written "
                                "(use resume: never, or a new output_dir, to train on the new set)"
                                % (self.resume_path, self.data_noun, cfg.train_data_dir))
        load_checkpoint(self.resume_path, self.network, self.optimizer, self.scheduler, self.scaler)
        # The learning rates are the config's: a resumed run may change them.
        lrs = self._base_lrs()
        if list(self.scheduler.base_lrs) != lrs:
            self.info("learning rates changed since the checkpoint: using %s" % ", ".join("%g" % x for x in lrs))
            self.scheduler.base_lrs = list(lrs)
            for group, lr in zip(self.optimizer.param_groups, lrs):
                group["initial_lr"] = lr
            self._set_lrs()
        self.run_id = state.get("run_id", self.run_id)
        self.saved_step = int(state["step"])
        self.global_step = int(state["step"])
        self.epoch = int(state["epoch"])
        self.batch_index = int(state["batch_index"])
        self.started_at = float(state.get("started_at", self.started_at))
        then = int(state.get("num_processes", 1))
        if then != self.procs.world:
            self._regroup(then)
        v = state.get("validation") or {}
        if v.get("images") == self.val_fingerprint:  # an earlier best is remembered, on the same samples only
            self.val_step, self.val_loss, self.best_step, self.best_loss = (v.get(k) for k in (
                "step", "loss", "best_step", "best_loss"))
        elif v.get("best_step") is not None:
            self.info("the validation %s changed since %s: its best validation loss (step %d) is not compared "
                      "with the new ones" % (self.sample_noun, self.resume_path, v["best_step"]))

    def _cache_latents(self):
        cfg = self.cfg
        folder = os.path.join(cfg.output_dir, "cache", "latents") if cfg.cache_latents_to_disk else None
        # The namespace ties cached latents to this VAE (file and its modification time).
        src = os.fspath(self.base.source)
        stamp = "%s:%s:%d" % (self.kind, os.path.abspath(src), int(os.path.getmtime(src)) if os.path.exists(src) else 0)
        cache = LatentCache(folder, namespace=stamp)

        def encode(pixels):
            with torch.no_grad():
                return self._encode(pixels).cpu()
        prepared = cache.prepare(self.samples, self.buckets, encode, batch_size=max(1, cfg.batch_size),
                                 flip_aug=cfg.flip_aug, progress=lambda done, total: self.cb.call("on_log", {
                                     "caching_latents": "%d/%d" % (done, total)}))
        for w in prepared.warnings:
            self.warn(w)
        self.latents = cache
        if self.device.type == "cuda" and not cfg.sample_prompts:
            self.base.vae.to("cpu")  # not needed on the GPU any more: its memory goes to the UNet

    # ---- one step ----------------------------------------------------------------------
    def _batch_latents(self, indices, augs):
        """(latents [K, 4, h, w] on the device, the rows of `indices` that loaded) for one batch."""
        cfg = self.cfg
        if self.latents is not None:
            rows, lat = [], []
            for k, (i, a) in enumerate(zip(indices, augs)):
                latent = self.latents.get(self.samples[i].file_hash, self.buckets[i], a.flip)
                if latent is not None:  # None: the image failed while caching (warned then)
                    rows.append(k)
                    lat.append(latent)
            if not rows:
                return None, []
            return torch.stack(lat).to(self.device), rows
        pixels, kept, warnings = train_data.load_batch(self.samples, indices, self.buckets, cfg.flip_aug,
                                                       cfg.color_aug, augs=augs)
        for w in warnings:
            self.warn(w)
        if not kept:
            return None, []
        ok = set(kept)  # a file fails for every copy of it in the batch
        with torch.no_grad():
            return self._encode(pixels), [k for k, i in enumerate(indices) if i in ok]

    def _encode(self, pixels):
        """Latents of [-1, 1] pixels: the posterior mean (deterministic, so cached and uncached
        runs train on the same latents), scaled by the model's factor."""
        return self.base.vae.encode(pixels.to(self.device, torch.float32)).latent_dist.mean * self.base.scaling_factor

    def _loss(self, indices, micro):
        """(mean loss of this process's samples `indices`, how many of them loaded)."""
        cfg, base = self.cfg, self.base
        if not indices:
            return None, 0
        # Every draw is made for the whole global batch, then this process keeps its rows: N
        # processes see what one process with the global batch sees.
        whole, off = (self._batch, self._offset) if self._batch is not None else (list(indices), 0)
        rng = train_data.batch_rng(cfg.seed, self.epoch, self.batch_index)
        augs = train_data.draw_augmentations(rng, len(whole), cfg.flip_aug, cfg.color_aug and self.latents is None)
        captions = [train_data.process_caption(self.samples[i].caption, cfg.trigger_word, cfg.shuffle_caption,
                                               cfg.keep_tokens, cfg.caption_dropout_rate, rng) for i in whole]
        latents, rows = self._batch_latents(indices, augs[off:off + len(indices)])
        if latents is None:
            return None, 0
        sel = [off + r for r in rows]
        kept = [indices[r] for r in rows]
        captions = [captions[j] for j in sel]
        # Per-step randomness from (seed, step, micro-batch): identical on resume.
        gen = _seeded(cfg.seed, 1, self.global_step, micro)
        self.dropout_generator.manual_seed(_seed_int(cfg.seed, 2, self.global_step, micro))
        latents = latents.float()
        noise = sample_noise((len(whole),) + tuple(latents.shape[1:]), gen, self.device, cfg.noise_offset)
        t = torch.randint(0, self.schedule.steps, (len(whole),), generator=gen).to(self.device)
        if len(sel) < len(whole):
            pick = torch.tensor(sel, device=self.device)
            noise, t = noise[pick], t[pick]
        noisy = self.schedule.add_noise(latents, noise, t)
        target = self.schedule.velocity(latents, noise, t) if self.v_prediction else noise
        autocast = torch.autocast(self.device.type, dtype=self.weight_dtype,
                                  enabled=self.weight_dtype != torch.float32)
        with autocast:
            with torch.set_grad_enabled(cfg.train_text_encoder):
                hidden, pooled = encode_text(self.kind, base.text_encoders, base.tokenizers, captions,
                                             cfg.clip_skip, self.device)
            added = None
            if self.kind == "sdxl":
                sizes = [(self.samples[i].width, self.samples[i].height) for i in kept]
                crops = [crop_top_left(self.buckets[i][1]) for i in kept]
                targets = [tuple(self.buckets[i][0]) for i in kept]
                added = {"text_embeds": pooled, "time_ids": time_ids(sizes, crops, targets, self.device)}
            pred = base.unet(noisy.to(self.weight_dtype), t, hidden.to(self.weight_dtype),
                             added_cond_kwargs=added).sample
        loss = diffusion_loss(pred, target, t, self.schedule, cfg.min_snr_gamma, self.v_prediction)
        return loss, len(kept)

    # ---- saving ------------------------------------------------------------------------
    def _metadata(self, finished):
        cfg = self.cfg
        alphas = [float(m.alpha) for m in self.network.layers if m.kind != "conv3x3"]
        meta = build_metadata(
            cfg, self.kind, rank=cfg.lora_rank, alpha=max(set(alphas), key=alphas.count) if alphas else cfg.lora_alpha,
            steps=self.global_step, epoch=self.epoch, num_images=self.scan.num_train_images,
            started_at=self.started_at, finished_at=time.time() if finished else None,
            tag_frequency=self.scan.tag_frequency, dataset_dirs=self.scan.dataset_dirs, resolution=self.resolution,
            base_model_name=os.path.basename(os.fspath(cfg.base_model)))
        meta["ss_max_train_steps"] = str(self.total_steps)
        meta["ss_v_parameterization"] = str(self.v_prediction)
        if self.v_prediction:
            meta["modelspec.prediction_type"] = "v"
        if self.val_step == self.global_step and self.val_loss is not None:
            meta["ss_validation_loss"] = repr(float(self.val_loss))
        return meta

    def _write_lora(self, path, finished=False, extra=None):
        save_lora(path, self.network.lora_state_dict(), dict(self._metadata(finished), **(extra or {})),
                  self.cfg.save_precision)

    def _checkpoint_lora_name(self):
        """The LoRA file's name inside checkpoint-<step>/ (None: the folder itself holds it)."""
        return "%s-step%06d.safetensors" % (self.cfg.output_name, self.global_step)

    def _write_checkpoint_lora(self, path, finished):
        self._write_lora(path, finished)

    def _checkpoint(self, finished=False):
        cfg = self.cfg
        state = {"epoch": self.epoch, "batch_index": self.batch_index, "config": cfg.to_dict(),
                 "base_model_kind": self.kind, "started_at": self.started_at, "total_steps": self.total_steps,
                 "finished": finished, "run_id": self.run_id, "dataset": self.dataset_fingerprint,
                 "validation": {"images": self.val_fingerprint, "step": self.val_step, "loss": self.val_loss,
                                "best_step": self.best_step, "best_loss": self.best_loss},
                 "num_processes": self.procs.world, "global_batch_size": self._global_batch_size()}
        if not self.main:  # the main process writes it
            path = os.path.join(cfg.output_dir, "checkpoint-%d" % self.global_step)
            self.saved_step = self.global_step
            self.checkpoints.append(path)
            return path
        path = save_checkpoint(cfg.output_dir, self.global_step, self._checkpoint_lora_name(),
                               lambda p: self._write_checkpoint_lora(p, finished), self.network, self.optimizer,
                               self.scheduler, self.scaler, state, cfg.save_last_n_checkpoints)
        self.saved_step = self.global_step
        self.checkpoints.append(path)
        self.cb.call("on_checkpoint", path, self.global_step)
        return path

    # ---- the loop ----------------------------------------------------------------------
    def run(self):
        from tqdm import tqdm
        self.setup()
        cfg = self.cfg
        self.checkpoints = []
        writer = None
        if cfg.log_with == "tensorboard" and self.main:
            from torch.utils.tensorboard import SummaryWriter
            writer = SummaryWriter(cfg.logging_dir)
        self.cb.call("on_start", self._start_info())
        self.bar = tqdm(total=self.total_steps, initial=self.global_step, desc="train", unit="step",
                        disable=None if self.main else True, dynamic_ncols=True)
        # Without a terminal (logs, CI, hosts' consoles) tqdm is silent: print a line now and then.
        log_every = 0 if not self.bar.disable or not self.main else max(1, self.total_steps // 20)
        run_start, run_start_step = time.time(), self.global_step
        if self.global_step >= self.total_steps:
            self.info("training had already reached step %d of %d; writing the LoRA file again"
                      % (self.global_step, self.total_steps))
        last_loss, loss_avg, t_last = float("nan"), None, time.time()
        world = self.procs.world
        last_good = self.resume_path
        extra = {}
        try:
            with _StopFlag() as stop:
                while self.global_step < self.total_steps:
                    batches = self._epoch_batches(self.epoch)
                    while self.batch_index < len(batches) and self.global_step < self.total_steps:
                        accum = min(cfg.gradient_accumulation_steps, len(batches) - self.batch_index)
                        total_loss, seen = 0.0, 0
                        for micro in range(accum):
                            loss, n = self._loss(self._shard(batches[self.batch_index]), micro)
                            self.batch_index += 1
                            if loss is None:
                                n = 0
                            bad = loss is not None and not bool(torch.isfinite(loss))
                            # every process learns the batch's size and whether any loss broke
                            n_all, bad_all = self.procs.add([n, bad]) if world > 1 else (n, bad)
                            bad = bad_all > 0
                            if bad:
                                raise TrainingError(
                                    "the loss became %s at step %d (epoch %d): lower the learning rate, use bf16 "
                                    "instead of fp16, or check the %s; the last good checkpoint is %s"
                                    % (loss.item() if loss is not None else "nan", self.global_step + 1,
                                       self.epoch + 1, self.sample_noun, last_good or "none"))
                            if n_all == 0:
                                continue  # every sample of this micro-batch failed to load
                            seen += 1
                            if loss is None:
                                continue  # nothing of this micro-batch fell to this process
                            # this process's share of the global batch's mean
                            share = 1.0 if world == 1 else n * world / n_all
                            scaled = loss / accum if share == 1.0 else loss * (share / accum)
                            (self.scaler.scale(scaled) if self.scaler else scaled).backward()
                            total_loss += loss.item() if world == 1 else loss.item() * n / n_all
                        if seen == 0:
                            continue  # every sample of these batches failed to load
                        params = [p for g in self.optimizer.param_groups for p in g["params"]]
                        if world > 1:  # the gradient of the global batch: the processes' mean
                            (total_loss,) = self.procs.sum_gradients(params, [total_loss])
                            for p in params:
                                p.grad.div_(world)
                        if seen < accum:  # some micro-batches failed: average over those that ran
                            for p in params:
                                if p.grad is not None:
                                    p.grad.mul_(accum / seen)
                        grad_norm = self._optimizer_step()
                        self.global_step += 1
                        last_loss = total_loss / seen
                        loss_avg = last_loss if loss_avg is None else 0.9 * loss_avg + 0.1 * last_loss
                        now = time.time()
                        its = 1.0 / max(now - t_last, 1e-9)
                        t_last = now
                        lrs = self.scheduler.get_last_lr()
                        self.bar.set_postfix(loss="%.4f" % loss_avg, lr="%.2e" % lrs[0], epoch=self.epoch + 1,
                                             **({"val": "%.4f" % self.val_loss} if self.val_loss is not None else {}))
                        self.bar.update(1)
                        logs = {"loss": last_loss, "loss_avg": loss_avg, "it_per_s": its, "grad_norm": grad_norm,
                                "epoch": self.epoch + 1}
                        logs.update(zip(self.lr_names, lrs))
                        logs.update(self._step_logs())
                        if writer:
                            for k, v in logs.items():
                                if v is not None:
                                    writer.add_scalar(k, v, self.global_step)
                        self.cb.call("on_step", dict(logs, step=self.global_step, total=self.total_steps))
                        if log_every and (self.global_step % log_every == 0 or self.global_step == self.total_steps):
                            done = self.global_step - run_start_step
                            rate = done / max(time.time() - run_start, 1e-9)
                            eta = (self.total_steps - self.global_step) / max(rate, 1e-9)
                            self.info("step %d/%d  loss %.4f  lr %.2e  %.2f it/s  eta %d:%02d:%02d%s" % (
                                self.global_step, self.total_steps, loss_avg, lrs[0], rate, eta // 3600,
                                eta % 3600 // 60, eta % 60,
                                "  val %.4f" % self.val_loss if self.val_loss is not None else ""))
                        if cfg.sample_prompts and cfg.sample_every_n_steps and self.main and \
                                self.global_step % cfg.sample_every_n_steps == 0:
                            self._sample(writer)
                        save = cfg.save_steps and self.global_step % cfg.save_steps == 0 \
                            and self.global_step < self.total_steps
                        self._maybe_validate(writer, checkpoint=save)
                        if save:
                            last_good = self._checkpoint()
                        if self.procs.any(stop.set or self.cb.should_stop()):
                            path = self.checkpoints[-1] if self.saved_step == self.global_step else self._checkpoint()
                            raise TrainingInterrupted(
                                "stopped at step %d; checkpoint saved to %s. Run the same command again to resume."
                                % (self.global_step, path), path, self.global_step)
                    if self.batch_index >= len(batches):
                        self.epoch += 1
                        self.batch_index = 0
                        if cfg.save_every_n_epochs and self.epoch % cfg.save_every_n_epochs == 0 \
                                and self.global_step < self.total_steps:
                            self._maybe_validate(writer, checkpoint=True)
                            last_good = self._checkpoint()
            self._maybe_validate(writer, final=True)
            final_path = self._final_path()
            if self.main:
                self._write_lora(final_path, finished=True)
            self._checkpoint(finished=True)
            extra = self._after_training(final_path)
            self.procs.barrier()  # the files exist when every process returns
        finally:
            self.bar.close()
            self.bar = None
            if writer:
                writer.close()
            self.network.remove()
        best = self._best_path() if cfg.save_best and self.best_step is not None else None
        result = TrainResult(final_path, self.global_step, self.epoch, last_loss, self.checkpoints,
                             time.time() - self.started_at, self.warnings, best_step=self.best_step,
                             best_loss=self.best_loss, best_path=best if best and os.path.exists(best) else None,
                             last_loss=self.val_loss if self.val_step == self.global_step else None,
                             process_index=self.procs.rank, **extra)
        self.cb.call("on_end", result)
        return result

    def _optimizer_step(self):
        cfg = self.cfg
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        grad_norm = None
        if cfg.max_grad_norm:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    # ---- validation ----------------------------------------------------------------------
    def _split_validation(self):
        """(training samples, validation samples): the images of validation_data_dir, or
        validation_split of train_data_dir's held out, chosen with the seed (the same on resume)."""
        cfg, samples = self.cfg, list(self.scan.samples)
        if cfg.validation_data_dir:
            scan = train_data.scan_dataset(cfg.validation_data_dir, caption_extension=cfg.caption_extension,
                                           trigger_word=cfg.trigger_word, key="validation_data_dir")
            for w in scan.warnings:
                self.warn("validation_data_dir: " + w)
            trained = {s.file_hash for s in samples}
            both = [s.rel for s in scan.samples if s.file_hash in trained]
            if both:
                self.warn("%d validation image(s) are also training images (%s): the validation loss flatters the "
                          "LoRA" % (len(both), ", ".join(both[:3]) + (", ..." if len(both) > 3 else "")))
            return samples, list(scan.samples)
        held = set(train_data.holdout([s.rel for s in samples], cfg.validation_split, cfg.seed))
        if held and len(held) >= len(samples):
            raise TrainingError("validation_split %g of %d image(s) leaves none to train on; lower it or add images"
                                % (cfg.validation_split, len(samples)))
        return [s for i, s in enumerate(samples) if i not in held], [samples[i] for i in sorted(held)]

    def _validation_loss(self):
        """The loss on the validation samples, deterministic (the same weights give the same value):
        fixed noise per image and fixed timesteps, no augmentation, no dropout, captions as written."""
        cfg = self.cfg
        self.network.eval()
        try:
            sums = evaluation_loss(self.base, self.val_samples, self.val_buckets, seed=cfg.seed, device=self.device,
                                   dtype=self.weight_dtype, clip_skip=cfg.clip_skip, v_prediction=self.v_prediction,
                                   batch_size=cfg.batch_size, trigger_word=cfg.trigger_word, latents=self.val_latents,
                                   part=self._val_part(), sums=True)
        finally:
            self.network.train()
        return self._mean_over_processes(*sums)

    def _val_part(self):
        """(this process, processes) when validation is shared out, else None."""
        return (self.procs.rank, self.procs.world) if self.procs.world > 1 else None

    def _mean_over_processes(self, total, count):
        """total / count over every process's (sum, count) of validation losses."""
        total, count = self.procs.add([total, count], torch.float64)
        if not count:
            raise TrainingError("no validation sample could be evaluated")
        return total / count

    def _best_path(self):
        return os.path.join(self.cfg.output_dir, self.cfg.output_name + "-best.safetensors")

    def _save_best(self):
        """save_best: the LoRA file of the weights with the lowest validation loss so far."""
        self._write_lora(self._best_path(), extra={"ss_best_step": str(self.best_step),
                                                   "ss_best_validation_loss": repr(float(self.best_loss))})

    def _maybe_validate(self, writer, checkpoint=False, final=False):
        """Validation every validate_every_n_steps, else at each checkpoint, and at the end."""
        n = self.cfg.validate_every_n_steps
        if not self.val_samples or self.val_step == self.global_step or not (
                final or (self.global_step % n == 0 if n else checkpoint)):
            return
        loss = float(self._validation_loss())
        self.val_step, self.val_loss = self.global_step, loss if math.isfinite(loss) else None
        new_best = self.val_loss is not None and (self.best_loss is None or loss < self.best_loss)
        if new_best:
            self.best_step, self.best_loss = self.global_step, loss
            if self.cfg.save_best and self.main:
                self._save_best()
        if writer:
            writer.add_scalar("loss/validation", loss, self.global_step)
        self.cb.call("on_log", {"val_loss": loss, "step": self.global_step, "best_step": self.best_step,
                                "best_loss": self.best_loss})
        if new_best:
            note = " (best so far%s)" % (", saved as " + self._best_path() if self.cfg.save_best else "")
        else:
            note = "; best %.4f at step %d" % (self.best_loss, self.best_step) if self.best_step is not None else ""
        self.info("validation loss %.4f at step %d%s" % (loss, self.global_step, note))

    def _sample(self, writer):
        from .sample import generate_samples
        paths = generate_samples(self, writer)
        self.cb.call("on_log", {"samples": paths})

