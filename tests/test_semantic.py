"""Semantic duplicates (lora_native.semantic, _native.similar_pairs): the exact pair search
against a float64 brute force, pair grouping, and the on-disk embedding cache."""
import os
import warnings

import numpy as np
import pytest

from builders.embeddings import bruteforce_pairs, planted_embeddings, unit_rows
from lora_native import _native
from lora_native.dedup import groups_from_labels
from lora_native.semantic import EmbeddingCache, default_cache_dir, group_pairs, normalize, similar_pairs

THRESHOLDS = [0.8, 0.9, 0.95, 0.99]
DTYPES = [np.float32, np.float16]


def check_pairs(emb, threshold, threads=None):
    """The search equals the float64 brute force: same pairs, sims within 1e-7 relative."""
    i, j, sim = similar_pairs(emb, threshold, threads)
    assert i.dtype == np.int64 and j.dtype == np.int64 and sim.dtype == np.float32
    ri, rj, rdot = bruteforce_pairs(emb, threshold)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_array_equal(j, rj)
    # sim is the float64 dot rounded to float32: within 1e-7 relative (an absolute 2^-149 for
    # float32 subnormals), and rounded as NumPy rounds beyond float32's range (+-inf)
    big = np.abs(rdot) > np.finfo(np.float32).max
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(sim[big], rdot[big].astype(np.float32))
    np.testing.assert_allclose(sim[~big], rdot[~big], rtol=1e-7, atol=2.0**-149)
    return i, j, sim


# n: 1, 2, small odd sizes, sizes that are not multiples of any block (6, 16, 48, 256 rows),
# and one past the 2048-row task chunk; dim: tiny, odd, and a K-blocked one (> 512).
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,dim", [(1, 8), (2, 3), (7, 3), (97, 33), (97, 64), (300, 3), (1000, 64), (1000, 512),
                                   (1300, 768), (1100, 33), (2100, 64)])
def test_matches_float64_bruteforce(n, dim, dtype):
    rng = np.random.default_rng(1000 * n + dim)
    emb = planted_embeddings(rng, n, dim, copy_fraction=0.3, noise=(0.0, 0.6), dtype=dtype)
    found = 0
    for t in THRESHOLDS:
        found += len(check_pairs(emb, t)[0])
    if n >= 97:
        assert found > 0  # the planted copies are there to be found


@pytest.mark.parametrize("dtype", DTYPES)
def test_low_thresholds_many_pairs(dtype):
    # dim 3: random unit vectors are often close, so many pairs of every kind cross the threshold
    rng = np.random.default_rng(5)
    emb = planted_embeddings(rng, 700, 3, dtype=dtype)
    for t in (-1.0, -0.3, 0.0, 0.5, 0.999):
        check_pairs(emb, t)


def test_threads_give_identical_results():
    rng = np.random.default_rng(11)
    emb = planted_embeddings(rng, 1500, 96, copy_fraction=0.4, noise=(0.0, 1.0))
    one = similar_pairs(emb, 0.9, threads=1)
    for threads in (2, 3, 0, None):
        other = similar_pairs(emb, 0.9, threads=threads)
        for a, b in zip(one, other):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("simd", ["scalar", "avx2"])
def test_scalar_and_vector_kernels(monkeypatch, simd):
    monkeypatch.setenv("LORA_NATIVE_SIMD", simd)
    rng = np.random.default_rng(12)
    for dtype in DTYPES:
        emb = planted_embeddings(rng, 600, 520, copy_fraction=0.4, noise=(0.0, 0.5), dtype=dtype)
        for t in THRESHOLDS:
            check_pairs(emb, t)


def dyadic_near_copies(rng, n, dim):
    """Near-copies of one random unit row whose values are multiples of 2^-20, 0 or at least
    2^-10 in magnitude, below 1 (so float16 keeps them multiples of 2^-20). Every product is a
    multiple of 2^-40 and every partial sum needs at most 50 bits: any float64 evaluation gives
    the exact dot, while fp32 accumulation (24 bits) rounds."""
    base = unit_rows(rng.standard_normal((1, dim)))
    rows = unit_rows(base + rng.uniform(0.0, 0.05, (n, 1)) * rng.standard_normal((n, dim)) / np.sqrt(dim))
    rows = np.where(np.abs(rows) < 2.0**-10, np.copysign(2.0**-10, rows), rows)
    return np.clip(np.round(rows * 2**20), 1 - 2**20, 2**20 - 1) / 2**20


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [3, 33, 512, 768])
def test_thresholds_exactly_at_a_dot(dtype, dim):
    # The threshold is set to a pair's exact dot, and one double step either side of it: the
    # pair is in, in, out; the fp32 value alone cannot tell (it is off by ~dim * 2^-24).
    rng = np.random.default_rng(dim)
    emb = dyadic_near_copies(rng, 40, dim).astype(dtype)
    e64 = emb.astype(np.float64)
    exact = e64 @ e64.T
    ints = e64 * 2**20
    assert np.array_equal(ints, np.round(ints))
    assert np.array_equal(exact, ints @ ints.T / 2**40)  # exact, whatever the summation order
    iu, ju = np.triu_indices(len(emb), 1)
    dots = exact[iu, ju]
    picks = rng.choice(len(dots), size=8, replace=False)
    for p in picks:
        d = dots[p]
        for t, inside in ((d, True), (np.nextafter(d, -np.inf), True), (np.nextafter(d, np.inf), False)):
            i, j, sim = similar_pairs(emb, t)
            got = set(zip(i.tolist(), j.tolist()))
            assert ((int(iu[p]), int(ju[p])) in got) == inside
            want = set(zip(iu[dots >= t].tolist(), ju[dots >= t].tolist()))
            assert got == want
            np.testing.assert_array_equal(sim, exact[i, j].astype(np.float32))


def test_pairs_within_1e7_of_the_threshold():
    # Unit rows built at a cosine of t +- a few 1e-8 (as stored in float32): decided as float64 does.
    rng = np.random.default_rng(3)
    dim, t = 768, 0.95
    rows = []
    for k in range(60):
        a = unit_rows(rng.standard_normal((1, dim)))[0]
        u = rng.standard_normal(dim)
        u -= (u @ a) * a
        u /= np.linalg.norm(u)
        c = t + rng.uniform(-1e-7, 1e-7)
        rows += [a, c * a + np.sqrt(1 - c * c) * u]
    emb = np.array(rows, dtype=np.float32)
    e64 = emb.astype(np.float64)
    near = np.abs(np.einsum("ij,ij->i", e64[0::2], e64[1::2]) - t)
    assert (near < 2e-7).all() and (near < 3e-8).any()
    i, j, _ = check_pairs(emb, t)
    assert 0 < len(i) < 60


def test_unnormalised_and_huge_rows():
    # norms far from 1 (the error bound scales with them) and values whose fp32 products
    # overflow: still exactly the float64 brute force.
    rng = np.random.default_rng(8)
    emb = planted_embeddings(rng, 300, 40, copy_fraction=0.5, noise=(0.0, 0.4))
    # 1e-20: fp32 products underflow to subnormals; 1e21: they overflow (dots ~1e42 > 3.4e38)
    scales = rng.choice([1e-20, 1e-3, 1.0, 7.0, 1e3, 1e21], size=(300, 1))
    emb = (emb * scales).astype(np.float32)
    for t in (-1e30, -1.0, 0.0, 0.5, 1e6, 1e30, 1e40):
        check_pairs(emb, t)


def test_infinite_thresholds():
    emb = normalize(np.random.default_rng(2).standard_normal((20, 5)))
    i, j, _ = similar_pairs(emb, -np.inf)
    assert len(i) == 20 * 19 // 2
    assert len(similar_pairs(emb, np.inf)[0]) == 0


@pytest.mark.parametrize("n", [0, 1])
def test_empty_and_single(n):
    for dtype in DTYPES:
        i, j, sim = similar_pairs(np.ones((n, 16), dtype=dtype), 0.5)
        assert len(i) == len(j) == len(sim) == 0
        assert i.dtype == np.int64 and sim.dtype == np.float32


def test_duplicate_rows_all_pairs():
    emb = normalize(np.tile(np.arange(1, 9, dtype=np.float32), (50, 1)))
    i, j, sim = similar_pairs(emb, 1.0 - 1e-6)
    assert len(i) == 50 * 49 // 2
    np.testing.assert_allclose(sim, 1.0, rtol=1e-7)
    check_pairs(emb, 1.0 - 1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rows_refused(dtype, bad):
    emb = normalize(np.random.default_rng(0).standard_normal((30, 10))).astype(dtype)
    emb[17, 4] = bad
    with pytest.raises(ValueError, match="row 17 .*column 4"):
        similar_pairs(emb, 0.9)
    emb1 = emb[17:18].copy()  # one row: nothing to compare, still refused
    with pytest.raises(ValueError, match="row 0 "):
        similar_pairs(emb1, 0.9)


def test_argument_errors():
    good = np.zeros((4, 3), dtype=np.float32)
    with pytest.raises(TypeError, match="float32 or float16"):
        _native.similar_pairs(good.astype(np.float64), 0.9)
    with pytest.raises(TypeError, match="float32 or float16"):
        similar_pairs(np.zeros((4, 3), dtype=np.int32), 0.9)
    with pytest.raises(TypeError, match="numpy array"):
        _native.similar_pairs([[1.0, 0.0]], 0.9)
    with pytest.raises(ValueError, match="2-D"):
        _native.similar_pairs(np.zeros(5, dtype=np.float32), 0.9)
    with pytest.raises(ValueError, match="C-contiguous"):
        _native.similar_pairs(np.zeros((4, 6), dtype=np.float32)[:, ::2], 0.9)
    with pytest.raises(ValueError, match="NaN"):
        _native.similar_pairs(good, float("nan"))
    with pytest.raises(ValueError, match="0 columns"):
        _native.similar_pairs(np.zeros((4, 0), dtype=np.float32), 0.9)
    with pytest.raises(ValueError, match="threads"):
        _native.similar_pairs(good, 0.9, -1)
    # the Python wrapper makes a strided array contiguous
    strided = normalize(np.random.default_rng(1).standard_normal((10, 8)))[:, ::2]
    np.testing.assert_array_equal(similar_pairs(strided, 0.5)[0],
                                  similar_pairs(np.ascontiguousarray(strided), 0.5)[0])


def test_normalize():
    x = np.array([[3.0, 4.0], [0.0, 0.0], [1e-30, 0.0], [-2.0, 0.0]])
    out = normalize(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0], [1.0, 0.0], [-1.0, 0.0]], rtol=1e-7)
    big = normalize(np.random.default_rng(0).standard_normal((50, 512)).astype(np.float16))
    np.testing.assert_allclose(np.linalg.norm(big.astype(np.float64), axis=1), 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="2-D"):
        normalize(np.ones(3))


# ---- grouping ----

def reference_labels(n, i, j):
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in zip(i, j):
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(x) for x in range(n)], dtype=np.int64)


@pytest.mark.parametrize("n,m", [(0, 0), (1, 0), (5, 0), (10, 4), (200, 150), (2000, 1500), (3000, 6000)])
def test_group_pairs_matches_reference(n, m):
    rng = np.random.default_rng(n + m)
    i = rng.integers(0, max(n, 1), size=m)
    j = rng.integers(0, max(n, 1), size=m)
    labels = group_pairs(n, i, j)
    assert labels.dtype == np.int64 and labels.shape == (n,)
    np.testing.assert_array_equal(labels, reference_labels(n, i, j))


def test_group_pairs_chain_and_label_convention():
    n = 1000
    order = np.random.default_rng(4).permutation(n)  # one long path visiting every index
    labels = group_pairs(n, order[:-1], order[1:])
    assert (labels == 0).all()
    labels = group_pairs(6, [4, 1, 5], [2, 3, 4])
    np.testing.assert_array_equal(labels, [0, 1, 2, 1, 2, 2])
    assert groups_from_labels(labels) == [[1, 3], [2, 4, 5]]


def test_group_pairs_from_search():
    rng = np.random.default_rng(9)
    emb = planted_embeddings(rng, 400, 64, copy_fraction=0.4, noise=(0.0, 0.3))
    i, j, _ = similar_pairs(emb, 0.95)
    np.testing.assert_array_equal(group_pairs(len(emb), i, j), reference_labels(len(emb), i, j))


def test_group_pairs_errors():
    with pytest.raises(ValueError, match="same length"):
        group_pairs(3, [0, 1], [1])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        group_pairs(3, [0], [3])


# ---- the embedding cache ----

def keys_for(n, start=0):
    return ["%016x" % (0x9E3779B97F4A7C15 * (k + 1) % 2**64) for k in range(start, start + n)]


def test_cache_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    emb = normalize(rng.standard_normal((30, 48)))
    keys = keys_for(30)
    cache = EmbeddingCache(tmp_path, "openai/clip-vit-large-patch14")
    found, got = cache.get(keys)
    assert not found.any() and got.shape == (30, 0)
    cache.put(keys[:20], emb[:20])
    found, got = cache.get(keys)
    assert found.tolist() == [True] * 20 + [False] * 10
    assert got.dtype == np.float32 and got.shape == (30, 48)
    np.testing.assert_array_equal(got[:20], emb[:20].astype(np.float16).astype(np.float32))
    assert (got[20:] == 0).all()
    cache.put(keys[20:], emb[20:])
    # a second cache object reads the file: everything is found
    again = EmbeddingCache(tmp_path, "openai/clip-vit-large-patch14")
    found, got = again.get([k.upper() for k in reversed(keys)])
    assert found.all() and len(again) == 30 and again.dim == 48
    np.testing.assert_array_equal(got[::-1], emb.astype(np.float16).astype(np.float32))
    # one file for the model under root, nothing else left behind (temporary files renamed)
    assert os.listdir(tmp_path) == [os.path.basename(cache.path)]
    # another model id has its own (empty) cache
    assert not EmbeddingCache(tmp_path, "other-model").get(keys)[0].any()


def test_cache_put_replaces_and_dedups(tmp_path):
    cache = EmbeddingCache(tmp_path, "m")
    a, b = np.full((1, 4), 0.25), np.full((1, 4), 0.5)
    cache.put(["aa", "bb"], np.vstack([a, a]))
    cache.put(["bb", "cc", "cc"], np.vstack([b, a, b]))
    found, got = EmbeddingCache(tmp_path, "m").get(["aa", "bb", "cc"])
    assert found.all()
    np.testing.assert_array_equal(got, np.vstack([a, b, b]))
    assert len(cache) == 3


def test_cache_write_is_atomic(tmp_path, monkeypatch):
    cache = EmbeddingCache(tmp_path, "m")
    cache.put(["aa"], np.ones((1, 4)))
    before = open(cache.path, "rb").read()

    import lora_native.fsutil as fsutil
    real_replace = os.replace

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(fsutil.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        cache.put(["bb"], np.ones((1, 4)))
    monkeypatch.setattr(fsutil.os, "replace", real_replace)
    assert open(cache.path, "rb").read() == before
    assert os.listdir(tmp_path) == [os.path.basename(cache.path)]  # the temporary file was removed
    found, _ = EmbeddingCache(tmp_path, "m").get(["aa", "bb"])
    assert found.tolist() == [True, False]


@pytest.mark.parametrize("content", [b"", b"not a zip file", b"PK\x03\x04garbage"])
def test_cache_corrupt_file_is_an_empty_cache(tmp_path, content):
    cache = EmbeddingCache(tmp_path, "m")
    os.makedirs(tmp_path, exist_ok=True)
    with open(cache.path, "wb") as f:
        f.write(content)
    with pytest.warns(UserWarning, match="cannot be read"):
        found, got = cache.get(["aa"])
    assert not found.any()
    cache.put(["aa"], np.ones((1, 3)))  # the next put replaces the bad file
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert EmbeddingCache(tmp_path, "m").get(["aa"])[0].all()


def test_cache_truncated_file(tmp_path):
    cache = EmbeddingCache(tmp_path, "m")
    cache.put(keys_for(100), np.ones((100, 64)))
    data = open(cache.path, "rb").read()
    with open(cache.path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.warns(UserWarning):
        assert not EmbeddingCache(tmp_path, "m").get(keys_for(3))[0].any()


def test_cache_dim_mismatch_refused(tmp_path):
    cache = EmbeddingCache(tmp_path, "m")
    cache.put(["aa"], np.ones((1, 8)))
    with pytest.raises(ValueError, match="8-dimensional.*got 16"):
        EmbeddingCache(tmp_path, "m").put(["bb"], np.ones((1, 16)))
    with pytest.raises(ValueError, match="shape"):
        cache.put(["bb", "cc"], np.ones((1, 8)))
    with pytest.raises(ValueError, match="float16"):
        cache.put(["bb"], np.full((1, 8), 1e6))
    with pytest.raises(TypeError, match="hex strings"):
        cache.get([123])


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("LORA_NATIVE_CACHE_DIR", raising=False)
    monkeypatch.delenv("LORA_NATIVE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == os.path.join(str(tmp_path / "xdg"), "lora-native", "embeddings")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == os.path.join(str(tmp_path / "home"), ".cache", "lora-native", "embeddings")
    monkeypatch.setenv("LORA_NATIVE_CACHE", str(tmp_path / "ln"))
    assert default_cache_dir() == os.path.join(str(tmp_path / "ln"), "embeddings")
    monkeypatch.setenv("LORA_NATIVE_CACHE_DIR", str(tmp_path / "explicit"))
    assert default_cache_dir() == os.path.join(str(tmp_path / "explicit"), "embeddings")
    assert EmbeddingCache(model_id="m").root == os.path.join(str(tmp_path / "explicit"), "embeddings")
