"""Semantic-duplicate search benchmark: every pair of L2-normalised embeddings with cosine >=
threshold, in one process:

- ours: lora_native._native.similar_pairs (blocked fp32 upper triangle in C, candidates near the
  threshold decided again in float64: exactly the float64 brute force), all cores;
- NumPy: blocked matmul over the upper-triangle blocks (BLOCK x BLOCK, fp32 sgemm through NumPy's
  BLAS, all cores), `np.nonzero(block >= t)`;
- faiss-cpu: IndexFlatIP + range_search of every row against all rows (full n x n, all cores),
  keeping i < j. faiss is optional: `pip install faiss-cpu`; without it the others still run.

The pair sets are compared: ours is the float64 decision; NumPy and faiss decide on their fp32
dot, so pairs within fp32 rounding of the threshold may differ (counted, with the largest
distance of a differing pair's float64 dot from the threshold).

    python bench/bench_semantic.py               # 100,000 x 512, t = 0.95; appends to bench/RESULTS.md
    python bench/bench_semantic.py --quick --no-record
    python bench/bench_semantic.py --n 50000 --dim 768
"""
import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))  # the embedding builders shared with tests/test_semantic.py
sys.path.insert(0, HERE)

from lora_native import _native  # noqa: E402
from builders.embeddings import planted_embeddings  # noqa: E402

from _common import append_section, machine_line, timed  # noqa: E402

try:
    import faiss
except ImportError:  # optional comparison
    faiss = None


def ours(emb, t, threads):
    i, j, _ = _native.similar_pairs(emb, t, threads)
    return i, j


def numpy_blocked(emb, t, block):
    """Upper-triangle blocks of `block` rows: fp32 matmul, threshold, keep i < j."""
    n = len(emb)
    out_i, out_j = [], []
    for b0 in range(0, n, block):
        rows = emb[b0:b0 + block]
        for c0 in range(b0, n, block):
            sims = rows @ emb[c0:c0 + block].T
            bi, bj = np.nonzero(sims >= t)
            bi += b0
            bj += c0
            if c0 == b0:
                keep = bi < bj
                bi, bj = bi[keep], bj[keep]
            out_i.append(bi)
            out_j.append(bj)
    i, j = np.concatenate(out_i).astype(np.int64), np.concatenate(out_j).astype(np.int64)
    order = np.lexsort((j, i))
    return i[order], j[order]


def faiss_range(emb, t):
    """IndexFlatIP range search of every row against all: faiss keeps inner products > t."""
    index = faiss.IndexFlatIP(emb.shape[1])
    index.add(emb)
    lims, _, ids = index.range_search(emb, float(t))
    i = np.repeat(np.arange(len(emb), dtype=np.int64), np.diff(lims.astype(np.int64)))
    j = ids.astype(np.int64)
    keep = i < j
    i, j = i[keep], j[keep]
    order = np.lexsort((j, i))
    return i[order], j[order]


def compare(emb, t, ref, other):
    """(pairs only in ref, pairs only in other, largest |float64 dot - t| over those pairs)."""
    a = set(zip(ref[0].tolist(), ref[1].tolist()))
    b = set(zip(other[0].tolist(), other[1].tolist()))
    diff = list(a ^ b)
    far = 0.0
    for i, j in diff:
        d = float(np.dot(emb[i].astype(np.float64), emb[j].astype(np.float64)))
        far = max(far, abs(d - t))
    return len(a - b), len(b - a), far


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--quick", action="store_true", help="20,000 rows (unless --n is given)")
    ap.add_argument("--threshold", type=float, default=0.95)
    ap.add_argument("--copies", type=float, default=0.01, help="fraction of rows that are planted near-copies")
    ap.add_argument("--block", type=int, default=4096, help="rows per block of the NumPy baseline")
    ap.add_argument("--threads", type=int, default=0, help="ours: 0 = all cores")
    ap.add_argument("--repeat", type=int, default=1, help="runs per timing; the best is used")
    ap.add_argument("--seed", type=int, default=20261124)
    ap.add_argument("--no-one-thread", action="store_true", help="skip the single-thread run of ours")
    ap.add_argument("--no-faiss", action="store_true", help="skip faiss even when it is installed")
    ap.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = ap.parse_args()
    if args.quick and "--n" not in sys.argv:
        args.n = 20_000
    n, dim, t = args.n, args.dim, args.threshold

    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    # near-copies: noise 0..0.5 of the coordinate scale, cosines ~0.875..1, spread over t = 0.95
    emb = planted_embeddings(rng, n, dim, copy_fraction=args.copies, noise=(0.0, 0.5), dtype=np.float32)
    print("data: %d x %d float32 (%.0f MB), %.1f s to build" % (n, dim, emb.nbytes / 2**20, time.perf_counter() - t0))
    cores = os.cpu_count()
    threads = args.threads or cores
    machine = machine_line(", faiss-cpu %s" % faiss.__version__ if faiss is not None and not args.no_faiss else "")

    rows, results = [], {}
    res, times = timed(lambda: ours(emb, t, args.threads), args.repeat)
    results["ours"] = res
    rows.append(("lora_native similar_pairs (exact: float64 decision)", threads, times))
    print("ours: %.2f s, %d pairs" % (min(times), len(res[0])))
    if threads > 1 and not args.no_one_thread:
        res1, times = timed(lambda: ours(emb, t, 1), args.repeat)
        assert all(np.array_equal(a, b) for a, b in zip(res1, results["ours"])), "1 thread disagrees"
        rows.append(("lora_native similar_pairs, 1 thread", 1, times))
        print("ours, 1 thread: %.2f s" % min(times))
    res, times = timed(lambda: numpy_blocked(emb, t, args.block), args.repeat)
    results["numpy"] = res
    rows.append(("NumPy blocked matmul, upper-triangle %d-row blocks (fp32)" % args.block, cores, times))
    print("numpy: %.2f s, %d pairs" % (min(times), len(res[0])))
    if faiss is not None and not args.no_faiss:
        res, times = timed(lambda: faiss_range(emb, t), args.repeat)
        results["faiss"] = res
        rows.append(("faiss-cpu IndexFlatIP.range_search (fp32, full n x n)", faiss.omp_get_max_threads(), times))
        print("faiss: %.2f s, %d pairs" % (min(times), len(res[0])))
        if times.cpu_of_best < 1.3 * min(times) and cores > 1:
            print("note: faiss used about one core (CPU/wall %.2f)" % (times.cpu_of_best / min(times)))
    else:
        print("faiss: skipped (%s)" % ("--no-faiss" if args.no_faiss else "not installed: pip install faiss-cpu"))

    best_ours = min(rows[0][2])
    flops = n * (n - 1) / 2 * dim * 2
    table = ["| method | threads | best (s) | CPU of best (s) | vs ours | pairs | only ours / only theirs |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    notes = []
    keys = ["ours"] * (len(rows) - len(results) + 1) + list(results)[1:]
    for (name, th, times), key in zip(rows, keys):
        pairs = len(results[key][0])
        if key == "ours":
            diff_cell = "reference"
        else:
            only_ref, only_other, far = compare(emb, t, results["ours"], results[key])
            diff_cell = "%d / %d" % (only_ref, only_other)
            if only_ref or only_other:
                notes.append("- %s differs from ours in %d pairs, all within %.1e of the threshold in float64 "
                             "(their fp32 decision)" % (key, only_ref + only_other, far))
            else:
                notes.append("- %s finds exactly our pairs" % key)
        table.append("| %s | %d | %.2f | %.2f | %.2fx | %d | %s |" % (name, th, min(times), times.cpu_of_best,
                                                                    min(times) / best_ours, pairs, diff_cell))
    notes = ["- data: %d x %d float32 unit rows (seed %d), %.0f%% planted near-copies (source + Gaussian noise of "
             "0-0.5 x the coordinate scale, renormalised); threshold %g" % (n, dim, args.seed, 100 * args.copies, t),
             "- 'vs ours' is time / our time (above 1: slower than ours); ours and NumPy compute the upper "
             "triangle (%.2f TFLOP, ours at %.0f GFLOP/s), faiss the full n x n" % (flops / 1e12,
                                                                                   flops / best_ours / 1e9)] + notes
    faiss_row = [r for r in rows if r[0].startswith("faiss")]
    if faiss_row:
        ft = faiss_row[0][2]
        notes.append("- faiss-cpu CPU/wall %.2f with %d cores (faiss.omp_get_max_threads() = %d); CPU seconds: "
                     "faiss %.1f, ours %.1f (%.2fx)" % (ft.cpu_of_best / min(ft), cores, faiss.omp_get_max_threads(),
                                                      ft.cpu_of_best, rows[0][2].cpu_of_best,
                                                      ft.cpu_of_best / rows[0][2].cpu_of_best))
    if "faiss" not in results:
        notes.append("- faiss-cpu not run (%s)" % ("--no-faiss" if args.no_faiss else "not installed: "
                                                   "`pip install faiss-cpu`"))
    print("\n".join(table))
    print("\n".join(notes))
    if args.no_record:
        return
    append_section("semantic duplicates, exact similarity search", "bench_semantic.py", machine, table, notes)


if __name__ == "__main__":
    main()
