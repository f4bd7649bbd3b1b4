"""Data-parallel training through accelerate (`accelerate launch --num_processes N train.py ...`
or `lora-native train --num-processes N`).

Every process holds the whole (frozen) base model and the same LoRA weights. A step's global
batch is `batch_size x processes` samples, cut from the same epoch order a single process with
that batch size would use; process r takes the r-th `batch_size` of it. Random draws (noise,
timesteps, flips, caption shuffles) are made for the whole global batch on every process and
each keeps its rows, so N processes see exactly what one process with the global batch sees.
Each process weights its loss by its share of the batch (images, or learned tokens for text),
the LoRA gradients are summed across processes (torch.distributed through accelerate's
`reduce`), and every process takes the same optimizer step. Only the main process writes files,
logs and shows progress.
"""
import os
import socket
from contextlib import contextmanager

import torch

from ..errors import UsageError


def launched():
    """True inside accelerate launch / torchrun with more than one process."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


class Processes:
    """This process's place among the training processes: one (rank 0 of 1), or one of N started
    by accelerate (torch.distributed initialised by accelerate's PartialState: NCCL on GPUs,
    gloo on the CPU)."""

    def __init__(self, cuda):
        self.rank, self.world, self.local_rank = 0, 1, 0
        self._state = None
        if launched():
            try:
                from accelerate import PartialState
            except ImportError:
                raise UsageError("several training processes need accelerate (pip install accelerate)") from None
            state = PartialState(cpu=not cuda)
            self._state = state
            self.rank, self.world, self.local_rank = (state.process_index, state.num_processes,
                                                      state.local_process_index)

    @property
    def main(self):
        return self.rank == 0

    def device(self, device):
        """The device of this process: cuda:<local rank> on GPUs."""
        if device.type == "cuda" and self.world > 1:
            if self.local_rank >= torch.cuda.device_count():
                raise UsageError("process %d of %d has no GPU of its own (%d visible); start at most one process "
                                 "per GPU" % (self.rank, self.world, torch.cuda.device_count()))
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return device

    def sum(self, tensor):
        """The element-wise sum over all processes (the tensor itself with one process)."""
        if self.world == 1:
            return tensor
        from accelerate.utils import reduce
        return reduce(tensor, reduction="sum")

    def add(self, values, dtype=torch.float32):
        """The sums over all processes of a few numbers (the numbers themselves with one process)."""
        if self.world == 1:
            return [float(v) for v in values]
        return self.sum(torch.tensor([float(v) for v in values], dtype=dtype, device=self._reduce_device())).tolist()

    def sum_gradients(self, params, extra=()):
        """Sum the gradients of `params` over the processes in one flat buffer (a parameter a
        process did not reach counts as zero); `extra` floats ride along. Returns the summed extras."""
        if self.world == 1:
            return list(extra)
        params = list(params)
        device = params[0].device if params else torch.device("cpu")
        parts = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in params]
        parts.append(torch.tensor(list(extra), dtype=torch.float32, device=device))
        flat = self.sum(torch.cat(parts))
        at = 0
        for p in params:
            n = p.numel()
            p.grad = flat[at:at + n].view_as(p).to(p.dtype)
            at += n
        return flat[at:].tolist()

    def any(self, flag):
        """True on every process when it is True on any."""
        return self.add([1.0 if flag else 0.0])[0] > 0

    def _reduce_device(self):
        return torch.device("cuda", self.local_rank) if self._state is not None and \
            self._state.backend == "nccl" else torch.device("cpu")

    def barrier(self):
        if self.world > 1:
            self._state.wait_for_everyone()

    @contextmanager
    def main_first(self):
        """The main process runs the block first (e.g. writing a cache the others then read)."""
        if self.world == 1:
            yield
            return
        with self._state.main_process_first():
            yield


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(num_processes, argv, cpu=None):
    """The `accelerate launch` command that runs `python -m lora_native <argv>` in num_processes
    processes on this machine (one per GPU, or gloo processes on the CPU)."""
    import sys
    if cpu is None:
        cpu = not torch.cuda.is_available()
    if not cpu and torch.cuda.device_count() < num_processes:
        raise UsageError("--num-processes %d, but torch sees %d GPU(s); use at most one process per GPU"
                         % (num_processes, torch.cuda.device_count()))
    # --multi_gpu starts the processes with torch.distributed.run on the CPU too (accelerate's --cpu
    # path starts a single process unless MPI is set up); the trainer picks gloo there.
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
            str(num_processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port()), "-m", "lora_native"] + list(argv)
