"""Near-duplicate grouping of 64-bit perceptual hashes by Hamming distance.

Two hashes are near-duplicates when they differ in at most ``t`` bits; groups are the
connected components of that relation (single linkage: a~b and b~c put a, b, c in one group
even when a and c are farther apart). The work is done in C (lora_native._native) by
multi-index hashing, expected O(N) for spread-out hashes instead of O(N^2) pairs.
"""
import numpy as np

from . import _native

__all__ = ["group_near_duplicates", "groups_from_labels", "hamming"]

_MAX_HASH = (1 << 64) - 1


def _hash_int(value, where="hash"):
    """One hash as a Python int in [0, 2**64): ints (Python or NumPy) or hex strings
    such as str(imagehash.phash(img))."""
    if isinstance(value, str):
        try:
            value = int(value, 16)
        except ValueError:
            raise ValueError("%s %r is not a hexadecimal hash" % (where, value)) from None
    elif isinstance(value, (bool, np.bool_)) or not hasattr(value, "__index__"):
        raise TypeError("%s must be an int or a hex string, got %s" % (where, type(value).__name__))
    value = value.__index__()
    if not 0 <= value <= _MAX_HASH:
        raise ValueError("%s %d is outside [0, 2**64)" % (where, value))
    return value


def _hash_array(hashes):
    """A NumPy integer array passes through (the C glue checks dtype and shape; signed values
    are taken bit for bit); anything else is read as a sequence of hashes."""
    if isinstance(hashes, np.ndarray):
        return hashes
    values = [_hash_int(h, "hash at position %d" % i) for i, h in enumerate(hashes)]
    return np.array(values, dtype=np.uint64)


def group_near_duplicates(hashes, t=6, threads=None):
    """Labels of near-duplicate groups: ``labels[i]`` is the smallest index of the group
    holding hash ``i`` (``i`` itself when it has no near-duplicate). ``hashes``: a NumPy
    uint64 array, or a sequence of ints / hex strings. ``t``: largest Hamming distance
    (0..64) that still counts as a duplicate. ``threads``: None or 0 for all cores."""
    labels, _ = _native.group_hamming(_hash_array(hashes), t, threads)
    return labels


def groups_from_labels(labels):
    """Groups of two or more indices from a label array: each group sorted, groups ordered
    by their first index."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError("labels must be 1-D, got %d dimensions" % labels.ndim)
    if labels.size == 0:
        return []
    order = np.argsort(labels, kind="stable")  # indices ascending within each label
    cuts = np.flatnonzero(labels[order][1:] != labels[order][:-1]) + 1
    groups = [g.tolist() for g in np.split(order, cuts) if g.size >= 2]
    groups.sort(key=lambda g: g[0])
    return groups


def hamming(a, b):
    """Number of differing bits between two 64-bit hashes (ints or hex strings)."""
    return (_hash_int(a, "a") ^ _hash_int(b, "b")).bit_count()
