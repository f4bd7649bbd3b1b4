"""Semantic near-duplicates: pairs of images whose embeddings (e.g. CLIP image embeddings) have a
cosine similarity at or above a threshold, grouped like the perceptual-hash near-duplicates.

The pair search is exact and runs in C (lora_native._native.similar_pairs): a blocked fp32
search over the upper triangle whose candidates near the threshold are decided again in
float64, so the pairs are exactly those a float64 brute force finds. Embeddings are cached on
disk by image content hash and model id (EmbeddingCache), so a second `clean` run does not
recompute them.
"""
import hashlib
import io
import os
import re
import warnings

import numpy as np

from . import _native
from .fsutil import atomic_write_bytes, display_path

__all__ = ["normalize", "similar_pairs", "group_pairs", "EmbeddingCache", "default_cache_dir"]


def normalize(emb):
    """Rows scaled to unit L2 norm, as float32 (the norm is taken in float64); zero rows stay zero."""
    x = np.asarray(emb, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError("embeddings must be a 2-D array (n, dim), got %d dimensions" % x.ndim)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    out = np.zeros_like(x)
    nonzero = norms > 0
    out[nonzero] = x[nonzero] / norms[nonzero, None]
    return out.astype(np.float32)


def similar_pairs(emb, threshold, threads=None):
    """Every pair i < j of rows with dot(emb[i], emb[j]) >= threshold, as (i, j, sim): int64
    arrays sorted by (i, j) and the float32 similarities. Rows should be L2-normalised
    (see normalize) so that the dot product is the cosine. emb: (n, dim) float32 or float16,
    taken as stored (other dtypes are refused rather than silently rounded). Exact: the pairs
    are those of a float64 brute force over the stored values (`E64 @ E64.T >= threshold`),
    and sim is that float64 dot rounded to float32. ValueError for rows holding NaN or Inf.
    threads: None or 0 for all cores."""
    return _native.similar_pairs(np.ascontiguousarray(emb), float(threshold), threads)


def group_pairs(n, i, j):
    """Connected components of the pairs (i[k], j[k]) over n items: ``labels[x]`` is the
    smallest index of x's group (x itself when it is in no pair), the convention of
    lora_native.dedup (groups_from_labels turns labels into lists of indices).

    Array union-find: each round hooks the larger root of every pair that still joins two
    trees under the smaller one, then compresses the trees to depth one; every root with a
    pair left is merged within two rounds, so O(log n) rounds of O(n + pairs) NumPy work."""
    n = int(n)
    if n < 0:
        raise ValueError("n must be >= 0, got %d" % n)
    i = np.asarray(i, dtype=np.int64).ravel()
    j = np.asarray(j, dtype=np.int64).ravel()
    if i.shape != j.shape:
        raise ValueError("i and j must have the same length (%d != %d)" % (i.size, j.size))
    if i.size and (min(i.min(), j.min()) < 0 or max(i.max(), j.max()) >= n):
        raise ValueError("pair indices must be in [0, %d)" % n)
    parent = np.arange(n, dtype=np.int64)
    while i.size:
        ri, rj = parent[i], parent[j]
        keep = ri != rj
        if not keep.any():
            break
        i, j, ri, rj = i[keep], j[keep], ri[keep], rj[keep]
        np.minimum.at(parent, np.maximum(ri, rj), np.minimum(ri, rj))
        while True:  # pointer jumping: parents only decrease, so this ends at the roots
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
    return parent


def default_cache_dir():
    """Where embeddings are cached: $LORA_NATIVE_CACHE_DIR, else $LORA_NATIVE_CACHE (the cache
    root the rest of lora-native uses), else $XDG_CACHE_HOME/lora-native, else
    ~/.cache/lora-native; with "embeddings" appended."""
    root = os.environ.get("LORA_NATIVE_CACHE_DIR") or os.environ.get("LORA_NATIVE_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "lora-native")
    return os.path.join(root, "embeddings")


_CACHE_FORMAT = 1


class EmbeddingCache:
    """Embeddings on disk, keyed by image content hash (a hex string such as the XXH64 pixel
    hash of `lora-native clean`, Item.hashes["pixels"]; compared case-insensitively) for one
    model id. One file per model id under root (`<slug>-<sha256 of the id>.npz`: keys, float16
    rows, the model id), rewritten atomically (temporary file + rename) on each put, so readers
    never see a half-written file; batch puts, since each rewrites the whole file. A file that
    cannot be read is reported with a warning and treated as an empty cache (the next put
    replaces it). Embeddings are stored as float16: get returns them as float32.

    Writers in two processes at once do not corrupt the file, but the last put wins."""

    def __init__(self, root=None, model_id=""):
        if not isinstance(model_id, str) or not model_id:
            raise ValueError("model_id must be a non-empty string")
        self.root = os.fspath(root) if root is not None else default_cache_dir()
        self.model_id = model_id
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("._")[:64] or "model"
        digest = hashlib.sha256(model_id.encode("utf-8")).hexdigest()[:16]
        self.path = os.path.join(self.root, "%s-%s.npz" % (slug, digest))
        self._index = None  # key -> row
        self._rows = None   # float16 [len(index), dim]

    @property
    def dim(self):
        """Width of the cached embeddings, None while the cache is empty."""
        self._load()
        return self._rows.shape[1] if len(self._index) else None

    def __len__(self):
        self._load()
        return len(self._index)

    @staticmethod
    def _keys(keys):
        out = []
        for k in keys:
            if not isinstance(k, str) or not k:
                raise TypeError("cache keys must be non-empty hex strings, got %r" % (k,))
            out.append(k.lower())
        return out

    def _load(self):
        if self._index is not None:
            return
        self._index, self._rows = {}, np.zeros((0, 0), dtype=np.float16)
        if not os.path.exists(self.path):
            return
        try:
            with np.load(self.path, allow_pickle=False) as f:
                version = int(f["format"])
                model_id = str(f["model_id"])
                keys = f["keys"]
                rows = f["embeddings"]
            if version != _CACHE_FORMAT:
                raise ValueError("format %d, expected %d" % (version, _CACHE_FORMAT))
            if model_id != self.model_id:
                raise ValueError("it holds model %r" % model_id)
            if rows.dtype != np.float16 or rows.ndim != 2 or keys.ndim != 1 or len(keys) != len(rows):
                raise ValueError("unexpected arrays (%s %s, %d keys)" % (rows.dtype, rows.shape, len(keys)))
        except Exception as e:  # noqa: BLE001 - whatever is wrong with the file, the cache is only a cache
            warnings.warn("embedding cache %s cannot be read (%s); starting with an empty cache"
                          % (display_path(self.path), e), UserWarning, stacklevel=3)
            return
        self._index = {str(k): r for r, k in enumerate(keys.tolist())}
        self._rows = rows

    def get(self, keys):
        """(found, embeddings): a bool mask over keys and a float32 array [len(keys), dim]
        whose rows are the cached embeddings (zeros where not found; dim 0 while the cache
        is empty)."""
        keys = self._keys(keys)
        self._load()
        rows = np.array([self._index.get(k, -1) for k in keys], dtype=np.int64)
        found = rows >= 0
        out = np.zeros((len(keys), self._rows.shape[1]), dtype=np.float32)
        if found.any():
            out[found] = self._rows[rows[found]].astype(np.float32)
        return found, out

    def put(self, keys, embeddings):
        """Store embeddings [len(keys), dim] (any float dtype; kept as float16) under keys,
        replacing rows already cached under the same keys, and write the file atomically.
        A dim other than the cached one is refused (ValueError): one model has one width."""
        keys = self._keys(keys)
        emb = np.asarray(embeddings)
        if emb.ndim != 2 or emb.shape[0] != len(keys):
            raise ValueError("embeddings must have shape (%d, dim) for %d keys, got %s"
                             % (len(keys), len(keys), emb.shape))
        if not np.issubdtype(emb.dtype, np.floating):
            raise TypeError("embeddings must be floating point, got dtype %s" % emb.dtype)
        with np.errstate(over="ignore"):
            half = emb.astype(np.float16)
        if not np.isfinite(half).all():
            raise ValueError("embeddings hold NaN/Inf or values beyond float16's range (65504)")
        self._load()
        if len(self._index) and half.shape[1] != self._rows.shape[1]:
            raise ValueError("embedding cache for model %r holds %d-dimensional embeddings, got %d; use a "
                             "different model id (or delete %s)" % (self.model_id, self._rows.shape[1],
                                                                   half.shape[1], display_path(self.path)))
        if not keys:
            return
        old = self._rows if len(self._index) else half[:0]
        index = dict(self._index)  # insertion order: cached keys, then new ones
        for r, k in enumerate(keys):
            index[k] = len(old) + r  # a key put again points at its newest row
        rows = np.concatenate([old, half])[np.fromiter(index.values(), dtype=np.int64, count=len(index))]
        keys_arr = np.array(list(index), dtype=np.str_)
        index = {k: r for r, k in enumerate(index)}
        buf = io.BytesIO()
        np.savez(buf, format=np.int64(_CACHE_FORMAT), model_id=np.str_(self.model_id), keys=keys_arr,
                 embeddings=rows)
        os.makedirs(self.root, exist_ok=True)
        atomic_write_bytes(self.path, buf.getvalue())
        self._index, self._rows = index, rows
