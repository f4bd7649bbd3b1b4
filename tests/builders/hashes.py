"""64-bit hash sets with planted near-duplicates, and an independent NumPy reference for
grouping them (pair graph by vectorised XOR + popcount, components by a small union-find)."""
import numpy as np

_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def popcount64(x):
    """Bit counts of a uint64 array."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    x = np.ascontiguousarray(x, dtype=np.uint64)
    return _BYTE_POPCOUNT[x.view(np.uint8)].reshape(x.shape + (8,)).sum(axis=-1)


def flip_bits(rng, value, k):
    """value with k distinct random bits flipped."""
    mask = 0
    for bit in rng.choice(64, size=k, replace=False):
        mask |= 1 << int(bit)
    return np.uint64(int(value) ^ mask)


def planted_hashes(rng, n, group_fraction=0.3, min_size=2, max_size=6, max_flips=6, identical_fraction=0.0):
    """n random hashes where about group_fraction of them sit in planted groups: a random seed
    plus copies with 0..max_flips bits flipped each (max_flips may exceed the t under test, so
    some copies fall outside it). identical_fraction of the hashes are then overwritten with
    copies of other hashes. Returns the shuffled uint64 array."""
    out = list(rng.integers(0, 2**64, size=n, dtype=np.uint64))
    i = 0
    planted = int(n * group_fraction)
    while i < planted:
        size = int(rng.integers(min_size, max_size + 1))
        seed = out[i]
        for j in range(i + 1, min(i + size, n)):
            out[j] = flip_bits(rng, seed, int(rng.integers(0, max_flips + 1)))
        i += size
    h = np.array(out, dtype=np.uint64) if n else np.zeros(0, np.uint64)
    copies = int(n * identical_fraction)
    if copies and n > 1:
        h[rng.integers(0, n, size=copies)] = h[rng.integers(0, n, size=copies)]
    rng.shuffle(h)
    return h


def pairs_within(h, t, chunk=512):
    """All pairs (i, j), i < j, with popcount(h[i] ^ h[j]) <= t, by rows of chunk values."""
    h = np.asarray(h, dtype=np.uint64)
    n = h.size
    ii, jj = [], []
    for start in range(0, n, chunk):
        rows = h[start:start + chunk]
        dist = popcount64(rows[:, None] ^ h[None, start:])
        r, c = np.nonzero(dist <= t)
        keep = c > r  # columns start at `start`: the upper triangle only
        ii.append(r[keep] + start)
        jj.append(c[keep] + start)
    if not ii:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(ii), np.concatenate(jj)


def labels_from_pairs(n, ii, jj):
    """Connected components of the pairs; each index labelled with its component's smallest index."""
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(ii.tolist(), jj.tolist()):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(i) for i in range(n)], dtype=np.int64)


def numpy_reference_labels(h, t, chunk=512):
    """Group labels computed without lora_native."""
    ii, jj = pairs_within(h, t, chunk)
    return labels_from_pairs(len(h), ii, jj)
