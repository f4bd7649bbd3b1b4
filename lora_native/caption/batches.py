"""Model inputs prepared one batch ahead: while a model runs on batch k, a thread prepares batch
k+1 (and waits with it) in the C core. `_native.prepare_images` releases the GIL, so decoding and
resizing overlap with the model's forward pass; every captioner and the CLIP embedding of semantic
duplicate search read their pixels through `prepared_batches`.

    for batch in prepared_batches(paths, clip.prep, batch_size=16):
        vectors = clip.embed_images(batch.pixels[batch.ok])
        ...                                   # batch.errors[i]: None or why paths[batch.start + i] failed

Batches come back in input order. A file that cannot be read or decoded never fails its batch:
its slot is zero-filled and `errors` holds the decoder's reason (the same reasons `lora-native
clean` reports). An exception raised while preparing (bad options, no memory) is raised again in
the consuming thread, at the batch where it happened. Leaving the loop early (break, an exception
in the model) stops the thread before the generator returns.
"""
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

__all__ = ["Batch", "prepared_batches", "DEFAULT_DEPTH", "default_depth", "default_threads"]

DEFAULT_DEPTH = 1  # batches waiting in the queue; the thread holds one more while it blocks


def default_depth(model_on_cpu, torch_model):
    """Batches to prepare ahead when the caller does not say: DEFAULT_DEPTH, except for a torch
    model on the CPU, which gets none. There the model already keeps every core busy, so preparing
    beside it cannot raise the throughput, and on a 2-core machine a preparing thread beside torch's
    OpenMP workers made BLIP runs 2-20x slower in some measurements (bench/RESULTS.md,
    auto-captioning); onnxruntime on the CPU and any model on a GPU showed no such effect."""
    return 0 if (model_on_cpu and torch_model) else DEFAULT_DEPTH


def default_threads(model_on_cpu, depth=DEFAULT_DEPTH):
    """Preparing threads to use when the caller gives none: all cores (None) when nothing else
    competes for them (no prefetch, or the model runs on a GPU); a quarter of the cores (at least
    one) when batches are prepared while a model computes on the same CPU: the model already keeps
    every core busy (torch's and onnxruntime's pools are as wide as the machine), so a full-width
    preparing pool beside it would only oversubscribe the cores, and a narrow one keeps ahead of
    any model that costs more per image than decoding (bench/RESULTS.md, auto-captioning)."""
    if not depth or not model_on_cpu:
        return None
    return max(1, (os.cpu_count() or 1) // 4)


@dataclass
class Batch:
    start: int                  # position of items[0] in the input list
    items: list                 # the paths of this batch
    pixels: np.ndarray          # float32 [n, 3, h, w] or [n, h, w, 3]; zero slots for failed files
    errors: List[Optional[str]]  # None, or why the file could not be used
    prep_seconds: float = 0.0   # time inside the preparing call (on the thread when prefetching)
    wait_seconds: float = 0.0   # time the consumer waited for this batch
    ok: List[int] = field(default_factory=list)  # indices (within the batch) of usable files

    def __post_init__(self):
        if not self.ok:
            self.ok = [i for i, e in enumerate(self.errors) if e is None]


class _Failure:
    def __init__(self, error):
        self.error = error


_DONE = object()


def _default_prepare(paths, **kwargs):
    from .. import _native
    return _native.prepare_images(paths, **kwargs)


def prepared_batches(paths, prep, batch_size=8, threads=None, max_pixels=None, depth=DEFAULT_DEPTH, prepare=None):
    """Yield a Batch per `batch_size` paths, in order. prep: the keyword arguments of
    `_native.prepare_images` for the model (size, mode, filter, layout, scale, mean, std...);
    threads / max_pixels are passed on (threads None or 0: all cores). depth: batches prepared
    ahead (0: prepare in the calling thread, no prefetch); with a model on the CPU pass
    threads=default_threads(True, depth) unless the user chose a number. prepare: the preparing function
    (default `_native.prepare_images`), called as prepare(paths, threads=, max_pixels=, **prep)
    and returning (pixels, errors)."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1, got %r" % (batch_size,))
    paths = list(paths)
    prepare = prepare or _default_prepare
    kwargs = dict(prep)
    kwargs["threads"] = threads or None
    if max_pixels is not None:
        kwargs["max_pixels"] = max_pixels

    def make(start):
        chunk = paths[start:start + batch_size]
        t0 = time.perf_counter()
        pixels, errors = prepare(chunk, **kwargs)
        errors = list(errors)
        if len(errors) != len(chunk) or len(pixels) != len(chunk):
            raise RuntimeError("prepare_images returned %d slots and %d errors for %d files"
                               % (len(pixels), len(errors), len(chunk)))
        return Batch(start, chunk, pixels, errors, prep_seconds=time.perf_counter() - t0)

    starts = range(0, len(paths), batch_size)
    if not depth:
        for start in starts:
            batch = make(start)
            batch.wait_seconds = batch.prep_seconds
            yield batch
        return
    yield from _prefetched(make, starts, depth)


def _prefetched(make, starts, depth):
    q = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item):
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def worker():
        try:
            for start in starts:
                if stop.is_set() or not put(make(start)):
                    return
        except BaseException as e:  # handed to the consumer, raised there
            put(_Failure(e))
            return
        put(_DONE)

    thread = threading.Thread(target=worker, name="lora-native-prepare", daemon=True)
    thread.start()
    try:
        while True:
            t0 = time.perf_counter()
            item = q.get()
            waited = time.perf_counter() - t0
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            item.wait_seconds = waited
            yield item
    finally:
        stop.set()
        thread.join()
