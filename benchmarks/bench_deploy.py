"""Deploy targets against the SavedModel: agreement, size, speed and held-out Recall@1 (float and int8 LiteRT).

Trains (or reuses, ``--model``) an Omniglot embedding model through the library's runner
(``TrainConfig``, ``--epochs`` epochs of the Omniglot recipe), exports it four ways with
``rankloss_tf.deploy.export`` (SavedModel; LiteRT float32; LiteRT int8 calibrated on
``--representative`` training images spread over the training classes; ONNX), and runs each
file in its own runtime (TensorFlow, ``ai_edge_litert``, ``onnxruntime``) on every held-out
image (the 106 test characters: classes never seen in training). Measured: file size, max abs
difference of the embeddings to the SavedModel's, Recall@1 / MAP@R on the held-out classes,
and milliseconds per image (batches of 64, after one warm-up batch).

Writes benchmarks/results/deploy.md and deploy.json with the machine and its load (--quick:
the digits dataset, 1 epoch, results under .bench/results-quick/).

Usage: python benchmarks/bench_deploy.py [--quick] [--epochs 80] [--model RUN_OR_KERAS] [--data-dir DIR]
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from harness import machine, results as results_file

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

BATCH = 64


def load_images(dataset, split, data_dir, size):
    from rankloss_tf import datasets

    pairs = list(datasets.load(dataset, split, data_dir=data_dir, image_size=size).as_numpy_iterator())
    return np.stack([image for image, _ in pairs]), np.array([label for _, label in pairs])


def trained_model(args, out):
    """The model of ``--model``, else a run trained (or resumed, or reused when finished) under ``out``."""
    from rankloss_tf.loading import load_model
    from rankloss_tf.app.config import TrainConfig
    from rankloss_tf.app.runner import train

    if args.model:
        return load_model(args.model), {"model": str(args.model)}
    config = TrainConfig(dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs, out_dir=str(out),
                         plots=False, verbose=2)
    result = train(config)
    return result.model, {"trained": {"dataset": args.dataset, "epochs": args.epochs, "run": str(out.relative_to(ROOT)),
                                      "recall@1 (runner)": result.metrics.get("recall@1")}}


def runners(paths):
    """{name: embed(images) -> float32 [N, D]} for each exported file, in its own runtime."""
    import onnxruntime
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    signature = tf.saved_model.load(str(paths["saved_model"])).signatures["serving_default"]
    session = onnxruntime.InferenceSession(str(paths["onnx"]))
    lite = {name: Interpreter(model_path=str(paths[name])).get_signature_runner() for name in ("litert", "litert_int8")}
    return {
        "saved_model": lambda x: signature(images=tf.constant(x))["embeddings"].numpy(),
        "litert": lambda x: lite["litert"](images=x)["embeddings"],
        "litert_int8": lambda x: lite["litert_int8"](images=x)["embeddings"],
        "onnx": lambda x: session.run(["embeddings"], {"images": x})[0],
    }


def embed_all(embed, images):
    embed(images[:BATCH])  # warm-up
    start = time.perf_counter()
    out = np.concatenate([embed(images[i:i + BATCH]) for i in range(0, len(images), BATCH)])
    return out, (time.perf_counter() - start) * 1000 / len(images)


def measure(model, args, directory):
    from rankloss_tf.deploy import export
    from rankloss_tf.evaluation import evaluate
    from rankloss_tf.images import model_image_shape

    shape = model_image_shape(model)
    test_images, test_labels = load_images(args.dataset, "test", args.data_dir, shape[:2])
    train_images, _ = load_images(args.dataset, "train", args.data_dir, shape[:2])
    spread = np.linspace(0, len(train_images) - 1, min(args.representative, len(train_images))).astype(int)
    paths = {
        "saved_model": export(model, directory / "saved_model"),
        "litert": export(model, directory / "float.tflite", format="litert"),
        "litert_int8": export(model, directory / "int8.tflite", format="litert", int8=True,
                              representative_images=train_images[spread]),
        "onnx": export(model, directory / "model.onnx", format="onnx"),
    }
    rows, reference = [], None
    for name, embed in runners(paths).items():
        embeddings, ms = embed_all(embed, test_images)
        reference = embeddings if reference is None else reference
        metrics = evaluate(embeddings, test_labels, ks=(1,), clustering=False)
        size = sum(p.stat().st_size for p in Path(paths[name]).rglob("*") if p.is_file()) \
            if Path(paths[name]).is_dir() else Path(paths[name]).stat().st_size
        rows.append({"format": name, "bytes": size, "max_abs_diff": float(np.abs(embeddings - reference).max()),
                     "recall@1": metrics["recall@1"], "map@r": metrics["map@r"], "ms_per_image": ms})
    return rows, {"test_images": len(test_images), "test_classes": len(set(test_labels.tolist())),
                  "representative_images": len(spread), "image_shape": list(shape)}


def write(rows, meta, out):
    base = rows[0]
    lines = [
        "# Deploy targets: SavedModel, LiteRT (float32, int8), ONNX",
        "",
        f"Machine: {meta['cpu']}, {meta['cores']} cores; load before the run: {meta['load_before']}, after: "
        f"{meta['load_after']}. Model: {json.dumps(meta['source'])}; input {tuple(meta['image_shape'])}. "
        f"Held-out: {meta['test_images']} images of {meta['test_classes']} classes never trained on; int8 "
        f"calibrated on {meta['representative_images']} training images. Each file runs in its own runtime; "
        f"ms per image over batches of {BATCH} (a shared CPU: compare rows, not machines).",
        "",
        "| format | size KB | max abs diff to SavedModel | Recall@1 | change | MAP@R | ms / image |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['format']} | {r['bytes'] / 1024:,.0f} | {r['max_abs_diff']:.2e} | {r['recall@1']:.4f} | "
                     f"{r['recall@1'] - base['recall@1']:+.4f} | {r['map@r']:.4f} | {r['ms_per_image']:.3f} |")
    results_file.write(out, {"machine": meta, "results": rows}, "\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits, 1 epoch, results under .bench/")
    parser.add_argument("--epochs", type=int, default=80, help="training epochs of the Omniglot recipe (its 80)")
    parser.add_argument("--model", help="a run directory or .keras file to export instead of training")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "omniglot"))
    parser.add_argument("--representative", type=int, default=256, help="int8 calibration images")
    args = parser.parse_args(argv)
    args.dataset = "digits" if args.quick else "omniglot"
    if args.quick:
        args.epochs, args.data_dir = 1, None
    results = ROOT / (".bench/results-quick" if args.quick else "benchmarks/results")
    meta = {"cpu": machine.cpu(), "cores": machine.describe()["cpus"],
            "load_before": machine.load(2)}
    model, meta["source"] = trained_model(args, ROOT / ".bench" / f"deploy_{args.dataset}_{args.epochs}")
    with tempfile.TemporaryDirectory() as directory:
        rows, found = measure(model, args, Path(directory))
    meta.update(found, load_after=machine.load(2))
    write(rows, meta, results / "deploy")
    print((results / "deploy.md").read_text())


if __name__ == "__main__":
    main()
