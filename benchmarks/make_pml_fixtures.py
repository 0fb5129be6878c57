"""Golden values of the issue-31 losses from pytorch-metric-learning 2.9, for tests/test_losses_modern_golden.py.

Runs PML 2.9 (the ``.bench/venv-pml`` environment of ``envs.py``; this script re-runs itself
there) on fixed batches and writes ``tests/fixtures/pml/modern.json``: each case's inputs,
PML's loss with its default reducer and the gradient of that loss with respect to the
embeddings (and the proxies / class weights). Class weights are written [C, D] (PML keeps
ArcFace / CosFace weights as [D, C], and sub-centre ArcFace's as [D, C * K] class-major:
written here [C, K, D]).

Usage::

    python benchmarks/envs.py pml                 # once
    python benchmarks/make_pml_fixtures.py        # writes the fixture
"""

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "tests" / "fixtures" / "pml" / "modern.json"
GOLDEN_EMBEDDINGS = [[1, 0, 0], [0.8, 0.6, 0], [0, 1, 0], [0, 0.6, 0.8], [0.6, 0, 0.8], [-0.6, -0.8, 0]]
GOLDEN_LABELS = [0, 0, 1, 1, 2, 2]
# (name, PML class, our short name, options)
PAIR_LOSSES = [
    ("multi_similarity", "MultiSimilarityLoss", {}),
    ("multi_similarity", "MultiSimilarityLoss", {"alpha": 1.0, "beta": 20.0, "base": 0.3}),
    ("supcon", "SupConLoss", {}),
    ("supcon", "SupConLoss", {"temperature": 0.5}),
    ("ntxent", "NTXentLoss", {}),
    ("ntxent", "NTXentLoss", {"temperature": 0.5}),
]
CLASS_LOSSES = [
    ("proxy_anchor", "ProxyAnchorLoss", {}),
    ("proxy_anchor", "ProxyAnchorLoss", {"margin": 0.2, "alpha": 16.0}),
    ("proxy_nca", "ProxyNCALoss", {}),
    ("proxy_nca", "ProxyNCALoss", {"softmax_scale": 9.0}),
    ("arcface", "ArcFaceLoss", {}),
    ("arcface", "ArcFaceLoss", {"margin": 10.0, "scale": 30.0}),
    ("cosface", "CosFaceLoss", {}),
    ("subcenter_arcface", "SubCenterArcFaceLoss", {"sub_centers": 3}),
]


def _pair_batches(torch):
    generator = torch.Generator().manual_seed(31)
    shuffled = torch.randperm(24, generator=generator)
    singles = torch.tensor([0, 0, 0, 1, 1, 2, 3, 4, 4, 5, 6, 6, 6, 6, 7, 8])
    return {
        "golden": (torch.tensor(GOLDEN_EMBEDDINGS, dtype=torch.float32), torch.tensor(GOLDEN_LABELS)),
        "pk_shuffled": (torch.randn(24, 8, generator=generator) * 3, torch.arange(6).repeat_interleave(4)[shuffled]),
        "singletons": (torch.randn(16, 5, generator=generator), singles),
    }


def _grad_case(torch, loss_fn, embeddings, labels, parameter=None):
    embeddings = embeddings.clone().requires_grad_(True)
    value = loss_fn(embeddings, labels)
    tensors = [embeddings] + ([parameter] if parameter is not None else [])
    grads = torch.autograd.grad(value, tensors)
    return float(value), [g.tolist() for g in grads]


def _pair_cases(torch, losses, miners):
    cases = []
    for batch_name, (embeddings, labels) in _pair_batches(torch).items():
        for name, cls, options in PAIR_LOSSES:
            value, grads = _grad_case(torch, getattr(losses, cls)(**options), embeddings, labels)
            cases.append({"batch": batch_name, "loss": name, "options": options, "value": value, "grad": grads[0],
                          "embeddings": embeddings.tolist(), "labels": labels.tolist()})
        miner, loss = miners.MultiSimilarityMiner(epsilon=0.1), losses.MultiSimilarityLoss()
        value, grads = _grad_case(torch, lambda e, y: loss(e, y, miner(e, y)), embeddings, labels)
        cases.append({"batch": batch_name, "loss": "multi_similarity", "options": {"epsilon": 0.1}, "value": value,
                      "grad": grads[0], "embeddings": embeddings.tolist(), "labels": labels.tolist()})
    return cases


def _class_cases(torch, losses):
    generator = torch.Generator().manual_seed(32)
    embeddings = torch.randn(16, 8, generator=generator)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 1, 2, 0, 1, 0, 3])  # every class, uneven
    cases = []
    for name, cls, options in CLASS_LOSSES:
        loss = getattr(losses, cls)(num_classes=5, embedding_size=8, **options)
        parameter = loss.proxies if hasattr(loss, "proxies") else loss.W
        with torch.no_grad():
            parameter.copy_(torch.randn(*parameter.shape, generator=generator))
        value, grads = _grad_case(torch, loss, embeddings, labels, parameter)
        weights, weight_grad = parameter.detach(), torch.tensor(grads[1])
        if not hasattr(loss, "proxies"):  # [D, C * K] -> [C, K, D] (K = 1: [C, D])
            sub_centers = options.get("sub_centers", 1)
            weights, weight_grad = (w.t().reshape(5, sub_centers, 8) if sub_centers > 1 else w.t()
                                    for w in (weights, weight_grad))
        ours = {key: value for key, value in options.items() if key != "sub_centers"}
        cases.append({"batch": "classes", "loss": "arcface" if name == "subcenter_arcface" else name,
                      "options": ours, "value": value, "grad": grads[0], "weights": weights.tolist(),
                      "weights_grad": weight_grad.tolist(), "embeddings": embeddings.tolist(),
                      "labels": labels.tolist()})
    return cases


def main():
    try:
        import pytorch_metric_learning
        import torch
        from pytorch_metric_learning import losses, miners
    except ImportError:
        sys.path.insert(0, str(HERE))
        import envs

        python = envs.venv_python("pml")
        if not python.exists():
            raise SystemExit("No PML environment: run `python benchmarks/envs.py pml` first.")
        return subprocess.call([str(python), __file__], env={**os.environ, "PYTHONPATH": ""})
    torch.manual_seed(0)
    cases = _pair_cases(torch, losses, miners) + _class_cases(torch, losses)
    meta = {"torch": torch.__version__, "pytorch_metric_learning": pytorch_metric_learning.__version__,
            "script": "benchmarks/make_pml_fixtures.py"}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"meta": meta, "cases": cases}, indent=None) + "\n")
    print(f"{len(cases)} cases -> {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
