"""Embedding sets with planted near-copies, and the float64 brute force the similarity search
must reproduce (tests/test_semantic.py, bench/bench_semantic.py)."""
import numpy as np


def unit_rows(x):
    """Rows scaled to unit L2 norm in float64."""
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def planted_embeddings(rng, n, dim, copy_fraction=0.2, noise=(0.0, 0.3), dtype=np.float32):
    """n random unit rows where about copy_fraction of them are near-copies of another row:
    the source plus Gaussian noise of a per-copy scale drawn from the `noise` range (relative
    to the per-coordinate scale 1/sqrt(dim)), renormalised; so the copies' cosines spread over
    roughly [1 - noise_max^2 / 2, 1]. Rows are shuffled and returned in `dtype`."""
    e = unit_rows(rng.standard_normal((n, dim)))
    copies = int(n * copy_fraction)
    if n >= 2 and copies:
        dst = rng.choice(n, size=copies, replace=False)
        src = rng.integers(0, n, size=copies)
        scale = rng.uniform(noise[0], noise[1], size=(copies, 1)) / np.sqrt(dim)
        e[dst] = unit_rows(e[src] + scale * rng.standard_normal((copies, dim)))
    e = e[rng.permutation(n)]
    return e.astype(dtype)


def bruteforce_pairs(emb, threshold):
    """(i, j, dot) of every pair i < j with float64 dot >= threshold, sorted by (i, j)."""
    e = np.asarray(emb, dtype=np.float64)
    g = e @ e.T
    i, j = np.nonzero(np.triu(g >= threshold, 1))
    return i.astype(np.int64), j.astype(np.int64), g[i, j]
