"""Latent cache: the VAE latents of training images, so a second epoch (or a second run) skips the VAE.

An entry is keyed by the file's XXH64, the bucket (its size and the crop/resize plan), whether the
image was flipped, and a `namespace` naming the VAE (latents of another VAE are other entries).
On disk each entry is one safetensors file (`<hash>_<w>x<h>_<n|f>_<digest>.safetensors`, one
tensor "latent", the key in the metadata), written atomically; a file that is truncated or does
not hold what its name says is recomputed, never fatal. Without a folder the cache lives in memory
(`cache_latents` without `cache_latents_to_disk`).
"""
import hashlib
import json
import os
import struct
from dataclasses import dataclass
from typing import Tuple

from ..errors import DatasetError, UsageError
from ..fsutil import atomic_write_bytes, display_path
from .data import load_batch

TENSOR_NAME = "latent"


@dataclass(frozen=True)
class CachePrepared:
    computed: int               # entries encoded now
    reused: int                 # entries already in the cache
    failed: Tuple[int, ...]     # sample indices whose image could not be loaded (no latent)
    warnings: Tuple[str, ...]   # one line per failed image: the file and the reason


class LatentCache:
    def __init__(self, folder=None, namespace=""):
        """folder: where the safetensors files live (created when missing); None keeps latents in
        memory. namespace: names the VAE (and its dtype) the latents come from."""
        self.folder = os.path.abspath(os.fspath(folder)) if folder is not None else None
        self.namespace = str(namespace)
        self._memory = {}
        if self.folder is not None:
            try:
                os.makedirs(self.folder, exist_ok=True)
            except OSError as e:
                raise DatasetError("cannot create the latent cache folder %s: %s"
                                   % (display_path(self.folder), e.strerror), self.folder) from e

    def key(self, file_hash, bucket, flipped):
        """The entry name for a file (XXH64), its bucket entry ((w, h), plan) and the flip."""
        (w, h), plan = bucket
        what = [self.namespace, [int(w), int(h)], [round(float(v), 4) for v in plan["box"]],
                list(plan.get("inner_size", (w, h))), list(plan.get("offset", (0, 0)))]
        digest = hashlib.sha256(json.dumps(what).encode()).hexdigest()[:12]
        return "%016x_%dx%d_%s_%s" % (int(file_hash), int(w), int(h), "f" if flipped else "n", digest)

    def _path(self, key):
        return os.path.join(self.folder, key + ".safetensors")

    def _valid_file(self, key):
        """The file exists and its header and length match an entry for `key` (a cheap check: no
        tensor data is read)."""
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                head = f.read(8)
                if len(head) < 8:
                    return False
                n = struct.unpack("<Q", head)[0]
                if n > min(size - 8, 1 << 20):
                    return False
                header = json.loads(f.read(n))
            entry = header[TENSOR_NAME]
            end = entry["data_offsets"][1]
            return header.get("__metadata__", {}).get("key") == key and size == 8 + n + end
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return False

    def contains(self, file_hash, bucket, flipped):
        key = self.key(file_hash, bucket, flipped)
        return key in self._memory if self.folder is None else self._valid_file(key)

    def get(self, file_hash, bucket, flipped):
        """The latent tensor (CPU), or None when absent or unreadable (then recompute and put)."""
        key = self.key(file_hash, bucket, flipped)
        if self.folder is None:
            return self._memory.get(key)
        from safetensors.torch import load
        try:
            with open(self._path(key), "rb") as f:
                data = f.read()
            tensors = load(data)
            header = json.loads(data[8:8 + struct.unpack("<Q", data[:8])[0]])
        except Exception:  # absent, truncated or foreign: a miss, recomputed by the caller
            return None
        if header.get("__metadata__", {}).get("key") != key or TENSOR_NAME not in tensors:
            return None
        return tensors[TENSOR_NAME]

    def put(self, file_hash, bucket, flipped, latent):
        """Store one latent (any device and dtype; kept as it is, moved to the CPU)."""
        key = self.key(file_hash, bucket, flipped)
        latent = latent.detach().to("cpu").contiguous()
        if self.folder is None:
            self._memory[key] = latent
            return
        from safetensors.torch import save
        meta = {"key": key, "file_hash": "%016x" % int(file_hash), "bucket": "%dx%d" % tuple(bucket[0]),
                "flipped": str(int(bool(flipped))), "namespace": self.namespace}
        atomic_write_bytes(self._path(key), save({TENSOR_NAME: latent}, metadata=meta))

    def prepare(self, samples, buckets, encode_fn, batch_size=8, flip_aug=False, progress=None, threads=None):
        """Compute the latents the cache lacks -> CachePrepared.

        For every sample with a bucket (and its flipped image when flip_aug) whose entry is
        missing or unreadable: load the pixels (load_batch, no augmentation), flip where needed,
        and call `encode_fn(pixels)` with a float32 CPU tensor [B, 3, H, W] in [-1, 1] of one
        bucket size, B <= batch_size; it returns latents [B, ...] (the caller's VAE: device,
        dtype, scaling factor are its business). Files shared by several samples (same bytes,
        same bucket) are encoded once. progress(done, total) is called after each batch."""
        import torch
        if batch_size < 1:
            raise UsageError("batch_size must be >= 1, got %r" % (batch_size,))
        variants = (False, True) if flip_aug else (False,)
        todo, seen, reused = [], set(), 0
        for i, (s, b) in enumerate(zip(samples, buckets)):
            if b is None:
                continue
            for flipped in variants:
                key = self.key(s.file_hash, b, flipped)
                if key in seen:
                    continue
                seen.add(key)
                if self.contains(s.file_hash, b, flipped):
                    reused += 1
                else:
                    todo.append((i, flipped))
        by_size = {}
        for item in todo:
            by_size.setdefault(tuple(buckets[item[0]][0]), []).append(item)
        failed, warnings, computed, done = {}, [], 0, 0
        for size in sorted(by_size):
            items = by_size[size]
            for start in range(0, len(items), batch_size):
                chunk = items[start:start + batch_size]
                wanted = sorted({i for i, _ in chunk})
                pixels, kept, warns = load_batch(samples, wanted, buckets, threads=threads)
                row = {i: r for r, i in enumerate(kept)}
                for i, warning in zip([i for i in wanted if i not in row], warns):
                    if i not in failed:  # both variants of a file may fail in two batches: report it once
                        failed[i] = None
                        warnings.append(warning)
                ok = [(i, f) for i, f in chunk if i in row]
                if ok:
                    batch = torch.stack([pixels[row[i]].flip(2) if f else pixels[row[i]] for i, f in ok])
                    with torch.no_grad():
                        latents = encode_fn(batch)
                    if len(latents) != len(ok):
                        raise UsageError("encode_fn returned %d latents for %d images" % (len(latents), len(ok)))
                    for (i, f), latent in zip(ok, latents):
                        self.put(samples[i].file_hash, buckets[i], f, latent)
                    computed += len(ok)
                done += len(chunk)
                if progress:
                    progress(done, len(todo))
        return CachePrepared(computed=computed, reused=reused, failed=tuple(failed), warnings=tuple(warnings))


__all__ = ["LatentCache", "CachePrepared"]
