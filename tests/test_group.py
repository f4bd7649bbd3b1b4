"""Near-duplicate grouping (lora_native.dedup, _native.group_hamming) against brute force."""
import numpy as np
import pytest

from builders.hashes import flip_bits, numpy_reference_labels, planted_hashes
from lora_native import _native
from lora_native.dedup import group_near_duplicates, groups_from_labels, hamming

T_VALUES = [0, 2, 6, 10]
# 1 = all pairs of distinct values; 3..64 = multi-index hashing with that many blocks.
FORCED_BLOCKS = [1, 3, 4, 5, 7, 11, 16, 64]


def mih(h, t, threads=None, blocks=0):
    labels, candidates = _native.group_hamming(h, t, threads, blocks=blocks)
    assert labels.dtype == np.int64 and labels.shape == (len(h),)
    return labels, candidates


@pytest.mark.parametrize("t", T_VALUES)
@pytest.mark.parametrize("n", [0, 1, 2, 3, 40, 300, 2000])
def test_matches_numpy_bruteforce(n, t):
    rng = np.random.default_rng(1000 * n + t)
    h = planted_hashes(rng, n, max_flips=t + 3, identical_fraction=0.05)
    expected = numpy_reference_labels(h, t)
    labels, _ = mih(h, t)
    np.testing.assert_array_equal(labels, expected)


@pytest.mark.parametrize("t", T_VALUES)
def test_matches_numpy_bruteforce_tight_clusters(t):
    # Many seeds with many close copies: dense buckets, long chains, merges across seeds.
    rng = np.random.default_rng(7 + t)
    h = planted_hashes(rng, 3000, group_fraction=0.9, min_size=5, max_size=40, max_flips=t + 2,
                       identical_fraction=0.2)
    np.testing.assert_array_equal(mih(h, t)[0], numpy_reference_labels(h, t))


@pytest.mark.parametrize("blocks", FORCED_BLOCKS)
@pytest.mark.parametrize("t", [1, 2, 6, 10])
def test_every_strategy_equals_c_bruteforce(t, blocks):
    rng = np.random.default_rng(31 * t + blocks)
    h = planted_hashes(rng, 1500, group_fraction=0.5, max_size=8, max_flips=t + 3, identical_fraction=0.1)
    expected = _native.group_hamming_bruteforce(h, t)
    labels, _ = mih(h, t, blocks=blocks)
    np.testing.assert_array_equal(labels, expected)


@pytest.mark.parametrize("t", T_VALUES + [20, 64])
def test_c_bruteforce_equals_numpy_bruteforce(t):
    rng = np.random.default_rng(t)
    h = planted_hashes(rng, 500, max_flips=min(t + 3, 64))
    np.testing.assert_array_equal(_native.group_hamming_bruteforce(h, t), numpy_reference_labels(h, t))


def test_cost_model_choice_equals_bruteforce_at_larger_n():
    rng = np.random.default_rng(99)
    h = planted_hashes(rng, 6000, group_fraction=0.2, max_size=8, max_flips=8, identical_fraction=0.02)
    for t in (3, 6, 8):
        assert _native.group_hamming_plan(len(np.unique(h)), t) >= 3  # MIH, not all pairs
        np.testing.assert_array_equal(mih(h, t)[0], numpy_reference_labels(h, t))


def test_portable_popcount_equals_hardware(monkeypatch):
    rng = np.random.default_rng(5)
    h = planted_hashes(rng, 2000, max_flips=8)
    hw = mih(h, 6, blocks=4)
    monkeypatch.setenv("LORA_NATIVE_SIMD", "scalar")  # also selects the portable popcount
    portable = mih(h, 6, blocks=4)
    np.testing.assert_array_equal(hw[0], portable[0])
    assert hw[1] == portable[1]


@pytest.mark.parametrize("t", [2, 6, 10])
def test_threads_give_identical_results(t):
    rng = np.random.default_rng(t)
    h = planted_hashes(rng, 30000, group_fraction=0.1, max_size=8, max_flips=t + 2, identical_fraction=0.01)
    one = mih(h, t, threads=1)
    two = mih(h, t, threads=2)
    auto = mih(h, t, threads=None)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[0], auto[0])
    assert one[1] == two[1] == auto[1]
    # Every planted copy within t of its seed is found: spot-check against the C reference.
    sub = h[:2500]
    np.testing.assert_array_equal(mih(sub, t, threads=2)[0], _native.group_hamming_bruteforce(sub, t))


@pytest.mark.parametrize("t", [0, 6, 64])
def test_all_identical(t):
    h = np.full(5000, 0xDEADBEEF12345678, dtype=np.uint64)
    labels, candidates = mih(h, t)
    np.testing.assert_array_equal(labels, np.zeros(5000, np.int64))
    assert candidates == 0  # one distinct value: nothing to verify


def test_identical_runs_collapse():
    # 200 distinct values, each repeated 50 times at scattered positions: no pair blow-up.
    rng = np.random.default_rng(3)
    distinct = rng.integers(0, 2**64, size=200, dtype=np.uint64)
    distinct[100:] = [flip_bits(rng, v, 2) for v in distinct[:100]]
    h = distinct[rng.integers(0, 200, size=10000)]
    labels, candidates = mih(h, 2)
    np.testing.assert_array_equal(labels, numpy_reference_labels(h, 2))
    assert candidates <= 200 * 199 // 2  # bounded by distinct pairs, not 10000^2


@pytest.mark.parametrize("t", [0, 2, 6])
def test_all_distinct(t):
    rng = np.random.default_rng(11)
    h = np.unique(rng.integers(0, 2**64, size=4000, dtype=np.uint64))
    labels, _ = mih(h, t)
    np.testing.assert_array_equal(labels, numpy_reference_labels(h, t))
    if t == 0:
        np.testing.assert_array_equal(labels, np.arange(len(h)))


def test_t_zero_groups_exact_duplicates_only():
    h = np.array([5, 4, 5, 7, 4, 5], dtype=np.uint64)
    np.testing.assert_array_equal(mih(h, 0)[0], [0, 1, 0, 3, 1, 0])


def test_t_64_groups_everything():
    h = np.array([0, 2**64 - 1], dtype=np.uint64)
    np.testing.assert_array_equal(mih(h, 64)[0], [0, 0])
    np.testing.assert_array_equal(mih(h, 63)[0], [0, 1])
    np.testing.assert_array_equal(_native.group_hamming_bruteforce(h, 64), [0, 0])


def test_chain_is_one_group():
    # a ~ b ~ c within t = 4 while a and c are 8 bits apart: single linkage joins all three.
    a = 0x0123456789ABCDEF
    b = a ^ 0b1111
    c = b ^ (0b1111 << 40)
    assert hamming(a, b) == 4 and hamming(b, c) == 4 and hamming(a, c) == 8
    h = np.array([c, 0xFFFF0000FFFF0000, a, b], dtype=np.uint64)
    np.testing.assert_array_equal(group_near_duplicates(h, t=4), [0, 1, 0, 0])
    np.testing.assert_array_equal(group_near_duplicates(h, t=3), [0, 1, 2, 3])


@pytest.mark.parametrize("blocks", [0, 1, 3, 4, 7])
def test_long_chain_spans_far_hashes(blocks):
    # 40 steps of 2 new bits each: ends are 64 bits apart, yet one group at t = 2.
    rng = np.random.default_rng(8)
    bits = rng.permutation(64)
    chain = [0]
    for step in range(32):
        chain.append(chain[-1] ^ (1 << int(bits[2 * step])) ^ (1 << int(bits[2 * step + 1])))
    h = np.array(chain + list(rng.integers(0, 2**64, size=200, dtype=np.uint64)), dtype=np.uint64)
    order = rng.permutation(len(h))
    labels, _ = mih(h[order], 2, blocks=blocks)
    chain_positions = np.flatnonzero(order < len(chain))
    assert len(set(labels[chain_positions].tolist())) == 1
    assert labels[chain_positions[0]] == chain_positions[0]
    np.testing.assert_array_equal(labels, numpy_reference_labels(h[order], 2))


def test_labels_point_to_smallest_index():
    rng = np.random.default_rng(4)
    h = planted_hashes(rng, 1000, group_fraction=0.6)
    labels = group_near_duplicates(h, t=6)
    for i, lab in enumerate(labels.tolist()):
        assert lab <= i and labels[lab] == lab


def test_input_dtypes():
    h = [0, 1, 3, 2**63 + 0xF0, 2**63 + 0xF1, 2**64 - 1]
    expected = [0, 0, 0, 3, 3, 5]
    np.testing.assert_array_equal(group_near_duplicates(h, t=1), expected)
    np.testing.assert_array_equal(group_near_duplicates(np.array(h, dtype=np.uint64), t=1), expected)
    np.testing.assert_array_equal(group_near_duplicates(["0", "1", "3", "80000000000000f0", "80000000000000F1",
                                                        "ffffffffffffffff"], t=1), expected)
    # Signed arrays are taken bit for bit (two's complement), e.g. hashes stored as int64.
    signed = np.array(h, dtype=np.uint64).view(np.int64)
    np.testing.assert_array_equal(group_near_duplicates(signed, t=1), expected)
    np.testing.assert_array_equal(group_near_duplicates(np.array([1, 3, 8], dtype=np.uint8), t=1), [0, 0, 2])
    # Non-contiguous input is copied, not misread.
    np.testing.assert_array_equal(group_near_duplicates(np.repeat(np.array(h, dtype=np.uint64), 2)[::2], t=1), expected)
    assert group_near_duplicates([], t=6).tolist() == []
    assert _native.group_hamming(np.zeros(0), 6)[0].shape == (0,)


def test_errors():
    h = np.arange(10, dtype=np.uint64)
    for t in (-1, 65, 2**70):
        with pytest.raises(ValueError, match="t must be between 0 and 64"):
            _native.group_hamming(h, t)
        with pytest.raises(ValueError, match="t must be between 0 and 64"):
            _native.group_hamming_bruteforce(h, t)
    for t in (1.5, "6", None, True):
        with pytest.raises(TypeError, match="t must be an int"):
            _native.group_hamming(h, t)
    with pytest.raises(ValueError, match="1-D"):
        _native.group_hamming(h.reshape(2, 5), 6)
    with pytest.raises(ValueError, match="1-D"):
        _native.group_hamming(np.uint64(5), 6)
    with pytest.raises(TypeError, match="float64"):
        _native.group_hamming(h.astype(np.float64), 6)
    with pytest.raises(TypeError, match="bool"):
        _native.group_hamming(h.astype(bool), 6)
    with pytest.raises(TypeError, match="integers"):
        _native.group_hamming(np.array([2**64, -1], dtype=object), 6)
    with pytest.raises(ValueError, match="threads"):
        _native.group_hamming(h, 6, -1)
    with pytest.raises(ValueError, match="blocks"):
        _native.group_hamming(h, 6, blocks=2)
    with pytest.raises(ValueError, match="blocks"):
        _native.group_hamming(h, 6, blocks=65)
    with pytest.raises(Exception, match="bucket lookups"):
        _native.group_hamming(h, 40, blocks=3)  # radius 13 over 22-bit blocks: refused, not run
    with pytest.raises(ValueError, match=r"outside \[0, 2\*\*64\)"):
        group_near_duplicates([1, -1])
    with pytest.raises(ValueError, match="position 1"):
        group_near_duplicates([1, 2**64])
    with pytest.raises(TypeError, match="int or a hex string"):
        group_near_duplicates([1, 2.0])
    with pytest.raises(ValueError, match="hexadecimal"):
        group_near_duplicates(["zz"])


def test_plan():
    assert _native.group_hamming_plan(10**6, 0) == 0
    assert _native.group_hamming_plan(1, 6) == 0
    assert _native.group_hamming_plan(10**6, 64) == 0
    assert _native.group_hamming_plan(10, 6) == 1  # tiny: all pairs beat building tables
    for n in (10**4, 10**6, 10**8):
        for t in (1, 6, 10):
            assert 3 <= _native.group_hamming_plan(n, t) <= 16


def test_groups_from_labels():
    assert groups_from_labels([]) == []
    assert groups_from_labels([0, 1, 2]) == []
    assert groups_from_labels([0, 1, 0, 3, 1, 0]) == [[0, 2, 5], [1, 4]]
    # Any label values: groups still sorted inside and by first index.
    assert groups_from_labels(np.array([9, 4, 9, 7, 4])) == [[0, 2], [1, 4]]
    with pytest.raises(ValueError):
        groups_from_labels(np.zeros((2, 2)))


def test_hamming():
    assert hamming(0, 0) == 0
    assert hamming(0, 2**64 - 1) == 64
    assert hamming("ff00", "0f00") == 4
    assert hamming(np.uint64(5), 6) == 2
    with pytest.raises(ValueError):
        hamming(-1, 0)
