"""Near-duplicate grouping benchmark: lora_native.dedup (multi-index hashing in C) against
brute force, on 64-bit hashes with planted near-duplicate groups.

    python bench/bench_dedup.py                # 1,000,000 hashes, t = 6; appends to bench/RESULTS.md
    python bench/bench_dedup.py --n 200000 --no-record

Brute force (NumPy: XOR + popcount over all pairs in row chunks; and the C O(N^2) reference)
runs on a subsample and is extrapolated to N as O(N^2). Peak memory of the grouping call is
measured in a fresh process (VmHWM growth around the call, labels included).
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the hash builders shared with tests/test_group.py
sys.path.insert(0, str(ROOT / "bench"))

from lora_native import _native  # noqa: E402
from lora_native.dedup import group_near_duplicates, groups_from_labels  # noqa: E402
from builders.hashes import labels_from_pairs, pairs_within, planted_hashes  # noqa: E402

from _common import append_section, machine_line, timed  # noqa: E402


def vm_hwm_mib():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure_memory(path, t, threads):
    """Child process: peak resident growth of one grouping call."""
    h = np.load(path)
    before = vm_hwm_mib()
    group_near_duplicates(h, t=t, threads=threads)
    print("%.1f" % (vm_hwm_mib() - before))


def peak_memory_mib(h, t, threads):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "hashes.npy")
        np.save(path, h)
        out = subprocess.run([sys.executable, __file__, "--measure-memory", path, "--t", str(t),
                              "--threads", str(threads)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def check_planted(labels, group):
    """(planted groups, planted groups split apart, found groups that are not exactly one planted group)."""
    planted = {}
    for i in np.flatnonzero(group >= 0).tolist():
        planted.setdefault(int(group[i]), []).append(i)
    split = sum(1 for members in planted.values() if len(set(labels[members].tolist())) != 1)
    exact = {tuple(sorted(m)) for m in planted.values() if len(m) >= 2}
    found = groups_from_labels(labels)
    extra = sum(1 for g in found if tuple(g) not in exact)
    return len(planted), split, extra, len(found)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--t", type=int, default=6)
    ap.add_argument("--sample", type=int, default=20_000, help="brute-force subsample size")
    ap.add_argument("--seed", type=int, default=20240611)
    ap.add_argument("--repeat", type=int, default=3, help="runs per timing (brute force: at most 2); best is used")
    ap.add_argument("--threads", type=int, default=0, help="0: all cores (the multi-thread row)")
    ap.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    ap.add_argument("--measure-memory", metavar="NPY", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure_memory:
        measure_memory(args.measure_memory, args.t, args.threads)
        return

    rng = np.random.default_rng(args.seed)
    h, group = planted_hashes(rng, args.n, group_fraction=0.05, min_size=2, max_size=8, max_flips=6,
                              return_groups=True)
    n_distinct = len(np.unique(h))
    threads_all = args.threads or os.cpu_count()
    plan = _native.group_hamming_plan(n_distinct, args.t)

    (labels, cand), t_all = timed(lambda: _native.group_hamming(h, args.t, args.threads), args.repeat)
    labels_1, t_one = timed(lambda: group_near_duplicates(h, t=args.t, threads=1), args.repeat)
    front, t_front = timed(lambda: group_near_duplicates(h, t=args.t, threads=args.threads), args.repeat)
    assert np.array_equal(labels, labels_1) and np.array_equal(labels, front), "thread counts disagree"
    n_planted, split, extra, n_found = check_planted(labels, group)
    peak = peak_memory_mib(h, args.t, args.threads)

    # Brute force on a subsample, extrapolated by (N / sample)^2.
    sub = h[: min(args.sample, args.n)]
    bf_repeat = max(1, min(args.repeat, 2))
    pairs, t_np = timed(lambda: pairs_within(sub, args.t, chunk=256), bf_repeat)
    ref = labels_from_pairs(len(sub), *pairs)
    c_ref, t_cref = timed(lambda: _native.group_hamming_bruteforce(sub, args.t), bf_repeat)
    (sub_labels, _), t_sub = timed(lambda: _native.group_hamming(sub, args.t, args.threads), args.repeat)
    assert np.array_equal(sub_labels, ref) and np.array_equal(c_ref, ref), "subsample labels differ from brute force"
    scale = (args.n / len(sub)) ** 2
    np_full, c_full = min(t_np) * scale, min(t_cref) * scale
    best_all, best_one = min(t_all), min(t_one)

    rows = [
        ("MIH (lora_native), all threads", args.n, threads_all, t_all),
        ("MIH (lora_native), 1 thread", args.n, 1, t_one),
        ("MIH via dedup.group_near_duplicates", args.n, threads_all, t_front),
        ("MIH, subsample", len(sub), threads_all, t_sub),
        ("NumPy brute force, subsample", len(sub), 1, t_np),
        ("C brute force (reference), subsample", len(sub), 1, t_cref),
    ]
    table = ["| case | N | threads | best (s) | median (s) | CPU of best (s) |", "|---|---:|---:|---:|---:|---:|"]
    for name, n, th, times in rows:
        table.append("| %s | %d | %d | %.3f | %.3f | %.3f |" % (name, n, th, min(times), statistics.median(times),
                                                              times.cpu_of_best))
    for name, full in (("NumPy brute force, extrapolated", np_full), ("C brute force, extrapolated", c_full)):
        table.append("| %s | %d | 1 | %.0f | | |" % (name, args.n, full))
    notes = [
        "- data: %d hashes, seed %d, 5%% in planted groups of 2-8 (copies of a seed with 0-6 bits "
        "flipped), %d distinct values; t = %d; cost model chose %s" % (
            args.n, args.seed, n_distinct, args.t, "all pairs" if plan == 1 else "m = %d blocks" % plan),
        "- candidates verified (full popcount): %d (%.0f per hash)" % (cand, cand / max(args.n, 1)),
        "- planted groups: %d, all found: %s (split: %d); groups found: %d, not exactly a planted group: %d "
        "(chance pairs within t)" % (n_planted, "yes" if split == 0 else "NO", split, n_found, extra),
        "- peak memory of the grouping call (fresh process, VmHWM growth, %.1f MiB of it the int64 labels): "
        "%.1f MiB" % (args.n * 8 / 2**20, peak),
        "- speed-up at N = %d (all threads): %.0fx vs NumPy brute force, %.0fx vs the C O(N^2) reference "
        "(both single-threaded, extrapolated from %d hashes); 1 thread: %.0fx vs NumPy" % (
            args.n, np_full / best_all, c_full / best_all, len(sub), np_full / best_one),
        "- subsample labels: MIH == NumPy brute force == C brute force",
    ]
    machine = machine_line()
    print("\n".join(table))
    print("\n".join(notes))
    if split:
        raise SystemExit("planted groups were split: grouping is wrong")
    if args.no_record:
        return
    append_section("dedup, near-duplicate grouping", "bench_dedup.py", machine, table, notes)

if __name__ == "__main__":
    main()
