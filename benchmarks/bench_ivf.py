"""IVF index in the SavedModel vs the exact index SavedModel vs faiss IVF, side by side in one run.

Gallery: synthetic embeddings that are *not* trivially clustered: 1,000
classes whose centres and samples live in a 16-dimensional subspace (sample
noise as wide as the spread of the centres, so classes overlap), mapped to
128 dimensions by a random matrix, plus isotropic noise 0.05, unit rows,
cosine metric; 1,024 held-out queries of the same distribution. The run
records how often a query's true top 10 holds another class than its own.

Each step runs in its own process (peak RSS is its own):

- ``build exact`` / ``build ivf``: ``Index(backend=...)``, ``add_embeddings``
  and ``save`` (for the IVF: k-means lists, calibrated probes), timed;
- ``serve``: the exported SavedModel loaded with ``tf.saved_model.load`` in
  a process where ``rankloss_tf`` cannot be imported: the exact export's
  top 10 is the truth; for the IVF export recall@10 and queries/s one query
  per call and in batches of 256, at the default probes and over a curve of
  probes (``search_embeddings_probes``);
- ``faiss``: ``faiss.IndexIVFFlat`` with the same number of lists (trained
  on the same sample size), 2 threads, over the same probes.

Writes benchmarks/results/index_ivf.json and the section between the
``<!-- ivf -->`` markers of benchmarks/results/index.md (--quick: a
20,000-item gallery, results under .bench/results-quick/).

Usage: python benchmarks/bench_ivf.py [--quick] [--size 1000000] [--min-time 2] [--large N [--large-only]]
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
QUICK_RESULTS = Path(__file__).resolve().parents[1] / ".bench" / "results-quick"
DIM, INTRINSIC, CLASSES, QUERIES, K, BATCH = 128, 16, 1000, 1024, 10, 256
PROBES = (1, 2, 4, 8, 16, 32, 64, 128)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_index import IVF_BEGIN as BEGIN, IVF_END as END  # noqa: E402  (one home for the section markers)
from harness import machine, results as results_file  # noqa: E402  (imports no rankloss_tf: the serving process)

BLOCKER = """
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "rankloss_tf":
            raise ImportError("rankloss_tf is blocked in the serving process")
sys.meta_path.insert(0, _Block())
"""


def data_blocks(n, seed=0):
    """``(labels [n + 1024], blocks)``: the rows of ``make_data`` (gallery, then queries) 100,000 at a time."""
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(INTRINSIC, DIM)).astype(np.float32) / np.sqrt(INTRINSIC)
    centres = rng.normal(size=(CLASSES, INTRINSIC)).astype(np.float32)
    labels = rng.integers(0, CLASSES, n + QUERIES)

    def blocks():
        for start in range(0, n + QUERIES, 100_000):
            part = labels[start : start + 100_000]
            local = centres[part] + rng.normal(size=(len(part), INTRINSIC)).astype(np.float32)
            block = local @ basis + 0.05 * rng.normal(size=(len(part), DIM)).astype(np.float32)
            yield start, (block / np.linalg.norm(block, axis=1, keepdims=True)).astype(np.float32)

    return labels, blocks()


def make_data(n, seed=0):
    """``(gallery [n, 128], labels [n], queries [1024, 128], query labels)``: overlapping classes, unit rows."""
    labels, blocks = data_blocks(n, seed)
    rows = np.empty((n + QUERIES, DIM), np.float32)
    for start, block in blocks:
        rows[start : start + len(block)] = block
    return rows[:n], labels[:n], rows[n:], labels[n:]


def gallery_chunks(n, rows=250_000):
    """``(labels [n], chunks)``: the gallery of ``make_data(n)`` in chunks of ``rows`` (bounded memory)."""
    labels, blocks = data_blocks(n)
    parts, start = [], 0

    def chunks():
        nonlocal parts, start
        for first, block in blocks:
            parts.append(block[: max(0, n - first)])
            if sum(map(len, parts)) >= rows or first + len(block) >= n:
                chunk, parts = np.concatenate(parts), []
                if len(chunk):
                    yield start, chunk
                start += len(chunk)

    return labels[:n], chunks()


def true_top(n, queries):
    """The exact top 10 (cosine) of ``queries`` over the gallery of ``make_data(n)``, chunk by chunk."""
    labels, chunks = gallery_chunks(n)
    best_scores, best = np.full((len(queries), K), -np.inf, np.float32), np.zeros((len(queries), K), np.int64)
    for start, chunk in chunks:
        for first in range(0, len(chunk), 32768):  # a [1024, 32768] score block at a time
            part = chunk[first : first + 32768]
            scores = np.concatenate([best_scores, queries @ part.T], axis=1)
            ids = np.concatenate([best, np.broadcast_to(np.arange(start + first, start + first + len(part)),
                                                        scores[:, K:].shape)], 1)
            top = np.argpartition(-scores, K - 1, axis=1)[:, :K]  # the K best, then sorted (a full sort: 10x slower)
            top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable"), 1)
            best_scores, best = np.take_along_axis(scores, top, 1), np.take_along_axis(ids, top, 1)
    return best


def rate(search, queries, batch, min_time):
    """Queries per second of ``search`` on ``batch`` rows per call, timed for about ``min_time`` s."""
    search(queries[:batch])
    done, position, start = 0, 0, time.perf_counter()
    while True:
        search(queries[position : position + batch])
        done += batch
        position = (position + batch) % (len(queries) - batch + 1)
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return done / elapsed


def peak_rss_gb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def build(backend, n, out):
    """Adds the gallery to an ``Index`` (250,000 rows per call) and saves it; prints build seconds, peak RSS.

    ``backend``: "exact", "ivf" or "ivf_int8" (the IVF with int8 codes).
    """
    from rankloss_tf.retrieval import Index, save_index

    labels, chunks = gallery_chunks(n)
    options = {"backend": "ivf", "codes": "int8"} if backend == "ivf_int8" else {"backend": backend}
    index, elapsed = Index(metric="cosine", **options), 0.0
    for first, chunk in chunks:  # generating the data is not timed
        start = time.perf_counter()
        index.add_embeddings(chunk, labels[first : first + len(chunk)])
        elapsed += time.perf_counter() - start
    del chunk
    start = time.perf_counter() - elapsed
    version = save_index(index, out)  # one SavedModel, out/<n>: what a plain TensorFlow process loads
    record = {"build_s": time.perf_counter() - start, "peak_rss_gb": peak_rss_gb(), "saved_model": str(version)}
    if index.ivf is not None:
        record.update(lists=len(index.ivf.centroids), probes=index.ivf.probes)
    print(json.dumps(record))


def recall(found, truth):
    return float(np.mean([len(set(a) & set(b)) / K for a, b in zip(found, truth)]))


def serve(n, path, truth_path, min_time, probes):
    """Loads an index SavedModel without rankloss_tf; recall and queries/s (default probes, then the curve)."""
    import tensorflow as tf

    assert "rankloss_tf" not in sys.modules
    labels, blocks = data_blocks(n)  # the queries follow the gallery in the stream
    queries, query_labels = np.concatenate([block for first, block in blocks if first + len(block) > n])[-QUERIES:], \
        labels[n:]
    if not Path(truth_path).exists() and probes == "truth":  # no exact export: the truth from the float rows
        np.save(truth_path, true_top(n, queries))
    probes = probes is True
    start = time.perf_counter()
    loaded = tf.saved_model.load(path)
    load_s = time.perf_counter() - start
    k = tf.constant(K)

    def answer(endpoint, **extra):
        return lambda q: endpoint(embeddings=tf.constant(q), k=k, **extra)["indices"].numpy()

    default = answer(loaded.signatures["search_embeddings"])
    found = np.concatenate([default(queries[s : s + BATCH]) for s in range(0, QUERIES, BATCH)])
    record = {"load_s": load_s, "qps_batch1": rate(default, queries, 1, min_time),
              "qps_batch256": rate(default, queries, BATCH, min_time)}
    if not Path(truth_path).exists():  # the exact export answers first: its top 10 is the truth
        np.save(truth_path, found)
        record["cross_class"] = float(np.mean((labels[found] != query_labels[:, None]).any(axis=1)))
    truth = np.load(truth_path)
    record["recall_at_10"] = recall(found, truth)
    if probes:
        record["curve"] = []
        for p in PROBES:
            search = answer(loaded.signatures["search_embeddings_probes"], probes=tf.constant(p))
            got = np.concatenate([search(queries[s : s + BATCH]) for s in range(0, QUERIES, BATCH)])
            record["curve"].append({"probes": p, "recall_at_10": recall(got, truth),
                                    "qps_batch1": rate(search, queries, 1, min_time),
                                    "qps_batch256": rate(search, queries, BATCH, min_time)})
    record["peak_rss_gb"] = peak_rss_gb()
    print(json.dumps(record))


def faiss_run(n, lists, truth_path, min_time):
    """faiss IndexIVFFlat (inner product) with ``lists`` lists, 2 threads: build time and the probes curve."""
    import faiss

    faiss.omp_set_num_threads(2)
    gallery, _, queries, _ = make_data(n)
    start = time.perf_counter()
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIM), DIM, lists, faiss.METRIC_INNER_PRODUCT)
    sample = gallery[np.random.default_rng(0).choice(n, min(n, 64 * lists), replace=False)]
    index.train(sample)
    index.add(gallery)
    record = {"build_s": time.perf_counter() - start, "curve": []}
    truth = np.load(truth_path)
    for p in PROBES:
        index.nprobe = p

        def search(q):
            return index.search(q, K)[1]

        record["curve"].append({"probes": p, "recall_at_10": recall(search(queries), truth),
                                "qps_batch1": rate(search, queries, 1, min_time),
                                "qps_batch256": rate(search, queries, BATCH, min_time)})
    record["peak_rss_gb"] = peak_rss_gb()
    print(json.dumps(record))


def run(args, timeout, blocked=False):
    """One step in a fresh process; its JSON record, or ``{"status": why}``."""
    command = [sys.executable, "-c", BLOCKER + f"\n__file__ = {__file__!r}\nsys.argv = {[__file__, *args]!r}\n"
               f"exec(open({__file__!r}).read())"] if blocked else [sys.executable, __file__, *args]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"status": f"timeout ({timeout} s)"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"status": f"failed: {tail[0][:200]}"}
    return {**json.loads(lines[-1]), "status": "ok"}


RECALL_TOLERANCE = 0.005  # "equal recall": within half a point of recall@10


def at_equal_recall(curve, target):
    """The point of a probes curve whose recall@10 is nearest ``target`` and at least ``target - 0.005``.

    Example:
    >>> at_equal_recall([{"probes": 32, "recall_at_10": 0.971}, {"probes": 64, "recall_at_10": 0.996}], 0.972)
    {'probes': 32, 'recall_at_10': 0.971}
    """
    near = [point for point in curve if point["recall_at_10"] >= target - RECALL_TOLERANCE]
    return min(near, key=lambda point: abs(point["recall_at_10"] - target), default=None)


def section(result):
    """The Markdown section of index.md between the ivf markers."""
    m, exact, ivf, faiss = result["machine"], result["exact"], result["ivf"], result.get("faiss", {})
    n = result["n"]
    lines = [BEGIN, "", f"## IVF in the SavedModel: {n:,} x {DIM} (benchmarks/bench_ivf.py)", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, shared; load before: {m['load_before']}, after: "
             f"{m.get('load_after', '?')}. Overlapping classes ({CLASSES} classes in a {INTRINSIC}-dim subspace; "
             f"true top 10 crosses classes for {exact.get('cross_class', float('nan')):.0%} of queries), cosine, "
             f"k = {K}, {QUERIES} held-out queries; served by `tf.saved_model.load` in a process without "
             f"rankloss_tf. Recall@10 against the exact export's top 10.", "",
             "| method | lists | probes | build (add + save) s | peak RSS GB | q/s batch 1 | q/s batch 256 | recall@10 |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def row(name, lists, probes, build, rss, point):
        ok = point is not None and "qps_batch1" in point
        cells = [f"{point['qps_batch1']:,.0f}", f"{point['qps_batch256']:,.0f}", f"{point['recall_at_10']:.3f}"] \
            if ok else ["-", "-", "-"]
        build = "-" if build is None else f"{build:.1f}"
        rss = "-" if rss is None else f"{rss:.2f}"
        lines.append(f"| {name} | {lists} | {probes} | {build} | {rss} | " + " | ".join(cells) + " |")

    row("exact SavedModel", "-", "-", exact.get("build_s"), exact.get("peak_rss_gb"), exact if "qps_batch1" in exact else None)
    row("IVF SavedModel (defaults)", ivf.get("lists", "-"), ivf.get("probes", "-"), ivf.get("build_s"),
        ivf.get("peak_rss_gb"), ivf if "qps_batch1" in ivf else None)
    int8 = result.get("ivf_int8", {})
    row("IVF SavedModel, int8 codes (defaults)", int8.get("lists", "-"), int8.get("probes", "-"), int8.get("build_s"),
        int8.get("peak_rss_gb"), int8 if "qps_batch1" in int8 else None)
    target = ivf.get("recall_at_10")
    match = at_equal_recall(faiss.get("curve", []), target) if target is not None else None
    row("faiss IVFFlat at equal recall (+-0.005)", ivf.get("lists", "-"), match["probes"] if match else "-",
        faiss.get("build_s"), faiss.get("peak_rss_gb"), match)
    if "qps_batch1" in ivf and "qps_batch1" in exact:
        lines += ["", f"IVF / exact: {ivf['qps_batch1'] / exact['qps_batch1']:.1f}x one query per call "
                  f"(target >= 10x), {ivf['qps_batch256'] / exact['qps_batch256']:.1f}x in batches of 256 "
                  "(target >= 2x)" + (f"; IVF / faiss at equal recall: {ivf['qps_batch1'] / match['qps_batch1']:.2f}x "
                                      f"and {ivf['qps_batch256'] / match['qps_batch256']:.2f}x (target >= 0.67x)"
                                      if match else "") + "."]
    lines += ["", "Recall / speed over lists probed (IVF SavedModel | faiss IVFFlat, same lists):", "",
              "| probes | IVF recall@10 | IVF q/s b1 | IVF q/s b256 | faiss recall@10 | faiss q/s b1 | faiss q/s b256 |",
              "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    faiss_curve = {p["probes"]: p for p in faiss.get("curve", [])}
    for point in ivf.get("curve", []):
        other = faiss_curve.get(point["probes"])
        theirs = [f"{other['recall_at_10']:.3f}", f"{other['qps_batch1']:,.0f}", f"{other['qps_batch256']:,.0f}"] \
            if other else ["-", "-", "-"]
        lines.append(f"| {point['probes']} | {point['recall_at_10']:.3f} | {point['qps_batch1']:,.0f} | "
                     f"{point['qps_batch256']:,.0f} | " + " | ".join(theirs) + " |")
    runs = sorted(result.get("large_runs", {}).values(), key=lambda run: run["n"])  # every size measured
    reached = any(run["n"] >= TARGET_LARGE and "build_s" in run for run in runs)
    for large in runs:
        lines += large_lines(large, {**result.get("ivf_int8", {}), "n": n}, extrapolate=not reached)
    statuses = {name: result[name].get("status") for name in ("exact", "ivf", "ivf_int8", "faiss", "large")
                if name in result}
    lines += ["", f"Step status: {statuses}.", "", END]
    return "\n".join(lines) + "\n"


def large_lines(large, small=None, extrapolate=True):
    """The lines of a large int8 run (``--large``; ``small``: the int8 run at the main size; ``extrapolate``: with
    the line taking it to 10^7 when it is smaller), or none."""
    if not large or "build_s" not in large:
        return [] if not large else ["", f"IVF with int8 codes, {large['n']:,} x {DIM}: {large.get('status')}."]
    served = "qps_batch1" in large
    return ["", f"IVF with int8 codes, {large['n']:,} x {DIM} (load before {large['load_before']}, after "
            f"{large['load_after']}): {large['lists']} lists, {large['probes']} probed; build (add + save) "
            f"{large['build_s']:.1f} s, build peak RSS {large['peak_rss_gb']:.2f} GB"
            + (f"; served: peak RSS {large['serve_peak_rss_gb']:.2f} GB, recall@10 {large['recall_at_10']:.3f} "
               f"against the exact top 10 of the float rows, {large['qps_batch1']:,.0f} q/s one per call, "
               f"{large['qps_batch256']:,.0f} q/s in batches of 256" if served else f"; serving: {large.get('status')}")
            + "."] + (extrapolated(large, small) if extrapolate else [])


TARGET_LARGE = 10**7


def extrapolated(large, small=None):
    """A line taking a large int8 run smaller than 10^7 to 10^7, or none: the line through the int8 run at the
    main size (``small``) and the large one (memory grows with the rows; the runtime's share stays), else
    scaled linearly (an upper bound).

    Example:
    >>> extrapolated({"n": 10**7})
    []
    """
    if large["n"] >= TARGET_LARGE or "peak_rss_gb" not in large:
        return []
    two = small is not None and small.get("n", large["n"]) < large["n"] and "peak_rss_gb" in small

    def at_target(key):
        if not two:
            return large[key] * TARGET_LARGE / large["n"]
        slope = (large[key] - small[key]) / (large["n"] - small["n"])
        return large[key] + slope * (TARGET_LARGE - large["n"])

    serve = f", serving {at_target('serve_peak_rss_gb'):.1f} GB" if "serve_peak_rss_gb" in large else ""
    how = (f"on the line through the int8 runs at {small['n']:,} and {large['n']:,}" if two
           else f"scaled linearly from {large['n']:,} (upper bound)")
    return ["", f"Not run at {TARGET_LARGE:,} (time and memory on the shared machine); extrapolated {how}: build "
            f"peak RSS {at_target('peak_rss_gb'):.1f} GB{serve}, int8 codes {TARGET_LARGE * DIM / 2**30:.2f} GiB, "
            f"build ~{at_target('build_s'):.0f} s."]


def write(result, out_dir):
    """index_ivf.json and the ivf section of index.md (replaced in place, the rest of the file kept)."""
    from rankloss_tf.io.atomic import write_file  # not at the top: the serving process runs without rankloss_tf

    results_file.write(out_dir / "index_ivf", result)
    page = out_dir / "index.md"
    text = page.read_text() if page.exists() else ""
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + text[text.index(END) + len(END) + 1 :]
    write_file(page, text.rstrip("\n") + ("\n\n" if text.strip() else "") + section(result))


def plot(result, out_dir):
    """index_ivf.png: recall@10 against queries/s (batch of 1) over probes, IVF SavedModel and faiss."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in ("ivf", "faiss"):
        curve = result.get(name, {}).get("curve", [])
        if curve:
            ax.plot([p["recall_at_10"] for p in curve], [p["qps_batch1"] for p in curve], "o-", label=name)
    ax.set_xlabel("recall@10 vs exact")
    ax.set_ylabel("queries/s, one per call")
    ax.set_yscale("log")
    ax.set_title(f"{result['n']:,} x {DIM}, lists probed {PROBES[0]}..{PROBES[-1]}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "index_ivf.png", dpi=110)


def step(backend, n, scratch, truth, min_time, timeout, serve_mode):
    """Build (own process) then serve (own process, without rankloss_tf): one method's record."""
    built = run(["--build", backend, str(n), str(Path(scratch) / f"{backend}_{n}")], timeout)
    served = run(["--serve", str(n), built.pop("saved_model"), truth, str(min_time), serve_mode], timeout,
                 blocked=True) if built["status"] == "ok" else {}
    record = {**{f"serve_{k}" if k == "peak_rss_gb" else k: v for k, v in served.items()}, **built}
    print(json.dumps({backend: record}), flush=True)
    return record


def measure(n, min_time, timeout, scratch):
    """Every step for a gallery of ``n`` items; the result record."""
    result = {"n": n, "machine": {"cpu": machine.cpu(), "cores": machine.describe()["cpus"],
                                  "load_before": machine.load(2), "min_time": min_time}}
    truth = str(Path(scratch) / "truth.npy")
    for backend in ("exact", "ivf", "ivf_int8"):
        result[backend] = step(backend, n, scratch, truth, min_time, timeout, "1" if backend == "ivf" else "0")
    from importlib.util import find_spec

    if find_spec("faiss") is not None and "lists" in result["ivf"]:
        result["faiss"] = run(["--faiss", str(n), str(result["ivf"]["lists"]), truth, str(min_time)], timeout)
        print(json.dumps({"faiss": result["faiss"]}), flush=True)
    result["machine"]["load_after"] = machine.load(2)
    return result


def measure_large(n, min_time, timeout, scratch):
    """The IVF with int8 codes on a gallery of ``n`` (build, peak RSS, recall@10 vs the float rows' exact top 10)."""
    load = machine.load(2)
    record = step("ivf_int8", n, scratch, str(Path(scratch) / f"truth_{n}.npy"), min_time, timeout, "truth")
    return {**record, "n": n, "load_before": load, "load_after": machine.load(2)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 20,000-item gallery, results under .bench/")
    parser.add_argument("--size", type=int, default=1_000_000, help="gallery items (default 10^6)")
    parser.add_argument("--min-time", type=float, default=2.0, help="seconds timed per batch size")
    parser.add_argument("--timeout", type=int, default=900, help="seconds allowed to one step")
    parser.add_argument("--out", type=Path, help="results folder (default benchmarks/results)")
    parser.add_argument("--large", type=int, help="also the IVF with int8 codes on a gallery of this size")
    parser.add_argument("--large-only", action="store_true",
                        help="with --large: only that run; the other figures already in index_ivf.json are kept")
    parser.add_argument("--build", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--serve", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--faiss", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.build:
        return build(args.build[0], int(args.build[1]), args.build[2])
    if args.serve:
        n, path, truth, min_time, probes = args.serve
        return serve(int(n), path, truth, float(min_time), {"1": True, "truth": "truth"}.get(probes, False))
    if args.faiss:
        n, lists, truth, min_time = args.faiss
        return faiss_run(int(n), int(lists), truth, float(min_time))
    n, min_time = (20_000, 0.3) if args.quick else (args.size, args.min_time)
    out_dir = args.out or (QUICK_RESULTS if args.quick else RESULTS)
    if args.large_only and not (args.large and (out_dir / "index_ivf.json").is_file()):
        parser.error(f"--large-only needs --large and an earlier {out_dir / 'index_ivf.json'}")
    with tempfile.TemporaryDirectory() as scratch:
        if args.large_only:
            result = json.loads((out_dir / "index_ivf.json").read_text())
        else:
            result = measure(n, min_time, args.timeout, scratch)
        if args.large:
            result["large"] = measure_large(args.large, min_time, args.timeout * 3, scratch)
            result.setdefault("large_runs", {})[str(args.large)] = result["large"]  # other sizes' runs kept
    write(result, out_dir)
    plot(result, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
