"""Building an index from a large folder: images/s, peak RSS of the whole command, and the cost of a resume.

Generates folders of N JPEGs (48 px, 25 images per class; default N = 2,000 and
20,000; `--images 2000 20000 100000` for more) and on each runs, as a child
process whose peak RSS is read from its rusage (``os.wait4``):
- `rankloss-tf index --gallery folder:DIR --image-size 32` with the small CNN
  (random weights, exported as a SavedModel, D = 64): the whole command's
  seconds and peak RSS, and the embedding images/s it reports on stderr. The
  folder scan (every image decoded once, then cached) runs in a first command,
  timed apart, so the builds compare embedding with embedding;
- the same build killed (SIGKILL) once half of its block files are on disk,
  then run again: the resume's seconds, and the overhead = killed part +
  resume - uninterrupted build (start-up of a second process, the blocks
  read back, the block in flight lost).
Streaming keeps the peak RSS flat in N: only one block of images is decoded
at a time; what grows is the final index (N x 64 float32, ids and paths).
Writes benchmarks/results/index_build.json and index_build.md with the machine and the load.

Usage: python benchmarks/bench_index_build.py [--images 2000 20000] [--block-size 1024] [--work DIR] [--quick]
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_streaming import child_env, make_folder
from harness import machine, results as results_file

RESULTS = Path(__file__).resolve().parent / "results"
SIDE, SIZE, DIM = 48, 32, 64
RATE = re.compile(r"embedding: (\d+)/(\d+) images.*?, (\d+) images/s")


def export_model(path):
    code = ("import sys, keras; from rankloss_tf.export import export_saved_model; "
            "from rankloss_tf.models import build_embedding_model; keras.utils.set_random_seed(0); "
            f"export_saved_model(build_embedding_model(({SIZE}, {SIZE}, 3), embedding_dim={DIM}), sys.argv[1])")
    subprocess.run([sys.executable, "-c", code, str(path)], env=child_env(path.parent / "cache"), check=True,
                   capture_output=True)


def run(command, env, kill_when=None):
    """``(seconds, peak RSS GB, exit status, stderr text)``; ``kill_when()`` true -> SIGKILL (status "killed")."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True)
        killed = False
        while True:  # os.wait4, not poll(): the rusage of the child comes with its reaping
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if not killed and kill_when is not None and kill_when():
                child.send_signal(signal.SIGKILL)
                killed = True
            time.sleep(0.05)
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        err.seek(0)
        text = err.read()
    code = "killed" if killed else os.waitstatus_to_exitcode(status)
    return seconds, usage.ru_maxrss / 1024 ** 2, code, text


def index_command(model, folder, out, block_size, *extra):
    return [str(Path(sys.executable).parent / "rankloss-tf"), "index", "--model", str(model), "--gallery",
            f"folder:{folder}", "--image-size", str(SIZE), "--block-size", str(block_size), "--out", str(out),
            *extra]


def measure(images, work, model, block_size):
    folder, cache = work / f"folder{images}", work / f"cache{images}"
    made = [folder, cache, work / f"resumed{images}", work / f"resumed{images}.rankloss_tf-build",
            work / f"whole{images}", work / "scan_only.rankloss_tf-build"]
    for path in made:  # a previous, interrupted run's
        shutil.rmtree(path, ignore_errors=True)
    started = time.perf_counter()
    make_folder(folder, images, side=SIDE)
    generate = time.perf_counter() - started
    env = child_env(cache)
    scan = run(index_command(model, folder, work / "scan_only", block_size, "--shard", "0/1", "--block-size",
                             str(images)), env, kill_when=lambda: (work / "scan_only.rankloss_tf-build").exists())
    whole = run(index_command(model, folder, work / f"whole{images}", block_size), env)
    if whole[2] != 0:
        raise SystemExit(f"index failed ({whole[2]}): {whole[3][-2000:]}")
    rate = [int(m.group(3)) for m in RATE.finditer(whole[3])][-1]
    blocks = -(-images // block_size)
    target = work / f"resumed{images}"
    written = target.parent / (target.name + ".rankloss_tf-build")
    killed = run(index_command(model, folder, target, block_size), env,
                 kill_when=lambda: len(list(written.glob("block-*.npz"))) >= max(1, blocks // 2))
    resumed = run(index_command(model, folder, target, block_size), env)
    if resumed[2] != 0:
        raise SystemExit(f"resume failed ({resumed[2]}): {resumed[3][-2000:]}")
    for path in made:
        shutil.rmtree(path, ignore_errors=True)
    return {"images": images, "generate_s": round(generate, 1), "scan_s": round(scan[0], 1),
            "build_s": round(whole[0], 1), "embed_images_per_s": rate, "peak_rss_gb": round(whole[1], 3),
            "killed_after_s": round(killed[0], 1), "resume_s": round(resumed[0], 1),
            "resume_peak_rss_gb": round(resumed[1], 3),
            "resume_overhead_s": round(killed[0] + resumed[0] - whole[0], 1), "blocks": blocks}


def markdown(record):
    rows = "\n".join(
        f"| {r['images']:,} | {r['scan_s']} | {r['build_s']} | {r['embed_images_per_s']} | {r['peak_rss_gb']} | "
        f"{r['killed_after_s']} + {r['resume_s']} | {r['resume_overhead_s']} | {r['resume_peak_rss_gb']} |"
        for r in record["rows"])
    return f"""# Building an index from a large folder (`rankloss-tf index`, streamed in blocks)

Machine: {record['machine']}; load (1, 5, 15 min) before {record['load_before']}, after {record['load_after']}.
Small CNN (random weights, SavedModel, D = {DIM}) at {SIZE} px on {SIDE} px JPEGs, blocks of
{record['block_size']} images, batch 256, exact backend. Scan: the folder scan (every image decoded once)
in a first command, then cached; the build runs on the cached scan. Peak RSS: the whole command's (rusage).
Resume: the build killed (SIGKILL) once half its blocks were written, then run again; overhead = both
runs - the uninterrupted build (a second start-up and the block in flight). On a shared machine the
seconds swing with the other processes' load (here {record['load_before'][0]}-{record['load_after'][0]} on
2 cores): the overhead is a second start-up (tens of seconds at that load) and at most one block
lost, and a row can show it negative when the load fell between runs. Peak RSS does not swing.

| images | scan s | build s | embed images/s | peak RSS GB | killed + resumed s | resume overhead s | resume peak RSS GB |
| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
{rows}

Produced by `python benchmarks/bench_index_build.py --images {' '.join(str(r['images']) for r in record['rows'])}`.
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--block-size", type=int, default=1024)
    parser.add_argument("--work", type=Path)
    parser.add_argument("--out", type=Path, default=RESULTS / "index_build")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 200 and 400 images in blocks of 64, "
                                                             "results under .bench/")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.block_size = [200, 400], 64
        args.out = RESULTS.parents[1] / ".bench" / "index_build"
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_index_build_"))
    work.mkdir(parents=True, exist_ok=True)
    model = work / "model"
    if not model.exists():
        export_model(model)
    watch = machine.Stopwatch()
    rows = []
    for images in args.images:
        rows.append(measure(images, work, model, args.block_size))
        print(rows[-1], flush=True)
    record = {"machine": machine.line(), "describe": machine.describe(), **watch.record(),
              "block_size": args.block_size, "rows": rows}
    record["load_before"] = [round(x, 2) for x in record["load_before"]]
    record["load_after"] = [round(x, 2) for x in record["load_after"]]
    results_file.write(args.out, record, markdown(record))
    print(f"wrote {args.out}.json and .md")


if __name__ == "__main__":
    main()
