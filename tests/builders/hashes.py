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
    return np.uint64(int(value) ^ int(random_masks(rng, np.array([k]))[0]))


def random_masks(rng, k):
    """One uint64 mask per entry of k, with k[i] distinct random bits set."""
    k = np.asarray(k)
    ranks = rng.random((k.size, 64)).argsort(axis=1).argsort(axis=1)  # a random permutation per row
    bits = np.left_shift(np.uint64(1), np.arange(64, dtype=np.uint64))
    return np.bitwise_or.reduce(np.where(ranks < k[:, None], bits, np.uint64(0)), axis=1)


def planted_hashes(rng, n, group_fraction=0.3, min_size=2, max_size=6, max_flips=6, identical_fraction=0.0,
                   return_groups=False):
    """n random hashes where about group_fraction of them sit in planted groups: a random seed
    plus copies with 0..max_flips bits flipped each (max_flips may exceed the t under test, so
    some copies fall outside it). identical_fraction of the hashes are then overwritten with
    copies of other hashes. Returns the shuffled uint64 array, and with return_groups also
    each hash's planted group number (-1: background)."""
    h = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    sizes, total = [], 0
    while total < int(n * group_fraction):
        sizes.append(min(int(rng.integers(min_size, max_size + 1)), n - total))
        total += sizes[-1]
    group = np.full(n, -1, dtype=np.int64)
    if sizes:
        group[:total] = np.repeat(np.arange(len(sizes)), sizes)
        seed_pos = np.repeat(np.cumsum([0] + sizes[:-1]), sizes)
        copies = np.flatnonzero(np.arange(total) != seed_pos)
        masks = random_masks(rng, rng.integers(0, max_flips + 1, size=copies.size))
        h[copies] = h[seed_pos[copies]] ^ masks
    copied = int(n * identical_fraction)
    if copied and n > 1:
        h[rng.integers(0, n, size=copied)] = h[rng.integers(0, n, size=copied)]
    order = rng.permutation(n)
    return (h[order], group[order]) if return_groups else h[order]


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
