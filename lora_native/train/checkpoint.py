"""Checkpoints: `<output_dir>/checkpoint-<step>/` holds the LoRA file (usable at once) and
`state/` (fp32 LoRA weights, optimizer, scheduler, grad scaler, step/epoch/data position, RNG
states, the config). Folders are written under a temporary name and renamed when complete."""
import json
import os
import random
import re
import shutil
import tempfile

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import LoraNativeError

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
STATE_VERSION = 1


class CheckpointError(LoraNativeError):
    pass


def list_checkpoints(output_dir, run_id=None):
    """[(step, path)] of complete checkpoints in output_dir, oldest first; only those of one run
    when run_id is given."""
    found = []
    try:
        names = os.listdir(output_dir)
    except FileNotFoundError:
        return []
    for name in names:
        m = CHECKPOINT_RE.match(name)
        path = os.path.join(output_dir, name)
        if m and os.path.isfile(os.path.join(path, "state", "training_state.json")):
            if run_id is not None:
                try:
                    if read_training_state(path).get("run_id") != run_id:
                        continue
                except CheckpointError:
                    continue
            found.append((int(m.group(1)), path))
    return sorted(found)


def _fsync_tree(folder):
    """Flush every file and the folders themselves: a checkpoint survives a power cut."""
    for root, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def rng_state():
    """RNG states as plain data (lists and tensors), so the state loads with weights_only=True."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {"python": [py[0], list(py[1]), py[2]],
             "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(output_dir, step, lora_file_name, write_lora, network, optimizer, scheduler, scaler,
                    training_state, keep_last=0):
    """Write checkpoint-<step>; `write_lora(path)` writes the usable LoRA file into it (at
    lora_file_name, or into the folder itself when that is None: a PEFT adapter's files).
    keep_last > 0 removes this run's (training_state["run_id"]) older checkpoints beyond that
    many; other runs' checkpoints are never touched. Returns the checkpoint folder."""
    final = os.path.join(output_dir, "checkpoint-%d" % step)
    tmp = tempfile.mkdtemp(prefix=".checkpoint-%d." % step, dir=output_dir)
    try:
        write_lora(os.path.join(tmp, lora_file_name) if lora_file_name else tmp)
        state_dir = os.path.join(tmp, "state")
        os.makedirs(state_dir)
        save_file(network.lora_state_dict(), os.path.join(state_dir, "lora_fp32.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None, "rng": rng_state()},
                   os.path.join(state_dir, "trainer.pt"))
        with open(os.path.join(state_dir, "training_state.json"), "w", encoding="utf-8") as f:
            json.dump(dict(training_state, version=STATE_VERSION, step=step), f, indent=1)
        os.chmod(tmp, 0o755)
        _fsync_tree(tmp)
        old = None
        if os.path.isdir(final):  # this step written before (a resumed, finished run): swap, then delete
            old = tempfile.mkdtemp(prefix=".replaced-checkpoint-%d." % step, dir=output_dir)
            os.replace(final, os.path.join(old, "previous"))
        os.replace(tmp, final)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep_last and keep_last > 0:
        mine = list_checkpoints(output_dir, run_id=training_state.get("run_id"))
        for _, path in mine[:-keep_last]:
            if path != final:
                shutil.rmtree(path, ignore_errors=True)
    return final


def read_training_state(path):
    state_file = os.path.join(path, "state", "training_state.json")
    try:
        with open(state_file, encoding="utf-8") as f:
            state = json.load(f)
    except FileNotFoundError:
        raise CheckpointError("%s is not a lora-native checkpoint (no state/training_state.json)" % path) from None
    except ValueError as e:
        raise CheckpointError("%s: state/training_state.json is damaged (%s)" % (path, e)) from None
    if state.get("version") != STATE_VERSION:
        raise CheckpointError("%s was written by another version of lora-native (state version %s)"
                              % (path, state.get("version")))
    return state


def resolve_resume(cfg):
    """The checkpoint folder to resume from (None to start fresh), and a message for the user."""
    if cfg.resume_from_checkpoint:
        if cfg.resume_from_checkpoint == "latest":
            found = list_checkpoints(cfg.output_dir)
            if not found:
                raise CheckpointError("resume_from_checkpoint: latest, but %s has no checkpoint-* folder"
                                      % cfg.output_dir)
            return found[-1][1], "resuming from the latest checkpoint, %s" % found[-1][1]
        path = cfg.resume_from_checkpoint
        if not os.path.isdir(path):
            raise CheckpointError("resume_from_checkpoint: %s does not exist" % path)
        return path, "resuming from %s" % path
    if cfg.resume == "auto":
        found = list_checkpoints(cfg.output_dir)
        if found:
            return found[-1][1], ("%s already holds checkpoints: resuming from %s (set resume: never to start over)"
                                  % (cfg.output_dir, os.path.basename(found[-1][1])))
    return None, None


def load_checkpoint(path, network, optimizer, scheduler, scaler):
    """Restore weights, optimizer, scheduler, scaler and RNG; returns the training state dict."""
    state = read_training_state(path)
    network.load_lora_state_dict(load_file(os.path.join(path, "state", "lora_fp32.safetensors")),
                                 source=os.path.join(path, "state"))
    # On the CPU first: the RNG states must stay CPU tensors; the optimizer moves its state onto
    # each parameter's device itself.
    trainer = torch.load(os.path.join(path, "state", "trainer.pt"), map_location="cpu", weights_only=True)
    optimizer.load_state_dict(trainer["optimizer"])
    scheduler.load_state_dict(trainer["scheduler"])
    if scaler is not None and trainer.get("scaler"):
        scaler.load_state_dict(trainer["scaler"])
    set_rng_state(trainer["rng"])
    return state
