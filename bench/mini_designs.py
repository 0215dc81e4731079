"""Candidate designs for the ``mini`` CPU suite (issue 17): does adaptation matter in them?

    python bench/mini_designs.py --out docs/results/mini/designs.json

A design is a pretraining set (which classes of Fashion-MNIST's pretraining half) and a style of the continual
stream's images (the other half, 1,000 per class, and the full test set, in that style). For each design the
script takes the committed backbone pretrained on that set (``benchmarks.backbones.LOCAL_BACKBONES``: all 10 classes,
the quick suite's; the five even labels, the mini suite's), or pretrains the same 0.31 M ViT with
``benchmarks.pretrain_fmnist``'s recipe when none is committed, and measures, on the stream's classes (10; 30 and 20 for ``held_out_glyphs`` and ``held_out_digits``):

* **SimpleCIL**: cosine similarity to the class means of the frozen backbone's features (``methods/simple_cil.py``;
  its final accuracy does not depend on the class order);
* **linear probe**: a linear head trained on the frozen features of all continual training images (SGD, momentum
  0.9, lr 0.01, batch 64, 20 epochs over cached features);
* **joint**: backbone and a new head fine-tuned on all continual training images with the quick suite's recipe
  (SGD, momentum 0.9, lr 0.01, batch 64, 2 epochs), i.e. the last task of its ``joint`` row.

These are probes in plain loops, not suite records: they decide which design is worth building as a suite (the
first requirement of the issue: joint beats SimpleCIL and the linear probe by at least 10 points each). The
requirements on separation and forgetting need the methods themselves, i.e. the suite. Last line JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ALL = tuple(range(10))
# Fashion-MNIST labels: 0 T-shirt, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat, 5 Sandal, 6 Shirt, 7 Sneaker, 8 Bag,
# 9 Ankle boot. Even labels hold the three hardest upper-body classes, odd ones the footwear: both halves are mixed.
DESIGNS = {
    "quick": {"pretrain_classes": ALL, "style": "clean",
              "what": "the quick suite: pretraining on all 10 classes, the stream in the same style"},
    "held_out_classes": {"pretrain_classes": (0, 2, 4, 6, 8), "style": "clean",
                         "what": "pretraining on 5 of the 10 classes (even labels); the stream has all 10"},
    "inverted": {"pretrain_classes": ALL, "style": "inverted",
                 "what": "pretraining as quick; the stream's images with inverted intensities (1 - x)"},
    "rot90": {"pretrain_classes": ALL, "style": "rot90",
              "what": "pretraining as quick; the stream's images rotated by 90 degrees"},
    "flip_v": {"pretrain_classes": ALL, "style": "flip_v",
               "what": "pretraining as quick; the stream's images upside down"},
    "patch_shuffle": {"pretrain_classes": ALL, "style": "patch_shuffle",
                      "what": "pretraining as quick; the stream's 7 x 7 tiles (the backbone's patches) in a fixed "
                              "shuffled arrangement: every patch's content unchanged, its position not"},
    "held_out_flip_v": {"pretrain_classes": (0, 2, 4, 6, 8), "style": "flip_v",
                        "what": "held_out_classes' pretraining; the stream upside down"},
    "held_out_patch_shuffle": {"pretrain_classes": (0, 2, 4, 6, 8), "style": "patch_shuffle",
                               "what": "held_out_classes' pretraining; the stream's patches shuffled"},
    "mixed": {"pretrain_classes": ALL, "style": "mixed",
              "what": "pretraining as quick; each stream image rotated, flipped or patch-shuffled (one, fixed)"},
    "held_out_mixed": {"pretrain_classes": (0, 2, 4, 6, 8), "style": "mixed",
                       "what": "held_out_classes' pretraining; the mixed stream"},
    "blur": {"pretrain_classes": ALL, "style": "blur",
             "what": "pretraining as quick; the stream's images blurred (Gaussian, sigma 1.5 pixels)"},
    "held_out_glyphs": {"pretrain_classes": (0, 2, 4, 6, 8), "style": "mixed", "glyphs": {},
                        "what": "held_out_classes' pretraining; 30 classes: the mixed stream's garments and printed "
                                "digits and letters A-J (benchmarks/glyphs.py), 300 per class"},
    "held_out_digits": {"pretrain_classes": (0, 2, 4, 6, 8), "style": "mixed",
                        "glyphs": {"glyph_classes": 10, "train_per_class": 500, "test_per_class": 500},
                        "what": "held_out_classes' pretraining; 20 classes: the mixed stream's garments and printed "
                                "digits (benchmarks/glyphs.py), 500 per class"},
}


def stream(style: str, glyphs: dict | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train images, labels, test images, labels) of the continual half, 1,000 per class, in ``style``; with
    ``glyphs`` (``GlyphsConfig`` fields), ``split_fmnist_glyphs``' garments and printed characters instead."""
    from benchmarks.fmnist import halves, load_fmnist, per_class_subset, to_tensor
    from benchmarks.fmnist_styles import styled

    if glyphs is not None:
        from benchmarks.glyphs import GlyphsConfig, arrays

        parts = arrays(GlyphsConfig(style=style, **glyphs))
        (x, y), (xt, yt) = parts["train"], parts["test"]
        return x, torch.from_numpy(y), xt, torch.from_numpy(yt)
    raw = load_fmnist()
    _, cont = halves(len(raw["train_labels"]))
    keep = per_class_subset(raw["train_labels"], cont, 1000)
    x = styled(to_tensor(raw["train_images"][keep]), style)
    y = torch.from_numpy(raw["train_labels"][keep].astype(np.int64))
    xt = styled(to_tensor(raw["test_images"]), style)
    yt = torch.from_numpy(raw["test_labels"].astype(np.int64))
    return x, y, xt, yt


def backbone(weights: Path) -> torch.nn.Module:
    from benchmarks.backbones import BackboneConfig, build_backbone

    model, _ = build_backbone(BackboneConfig(tag="vit_fmnist_p7_28.fmnist_half", weights=str(weights)))
    return model


@torch.no_grad()
def features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + 1000]) for i in range(0, len(x), 1000)])


def simple_cil(f: torch.Tensor, y: torch.Tensor, ft: torch.Tensor, yt: torch.Tensor) -> float:
    means = torch.stack([f[y == c].mean(0) for c in range(int(y.max()) + 1)])
    pred = (F.normalize(ft, dim=-1) @ F.normalize(means, dim=-1).T).argmax(1)
    return 100 * (pred == yt).float().mean().item()


def linear_probe(f: torch.Tensor, y: torch.Tensor, ft: torch.Tensor, yt: torch.Tensor, seed: int) -> float:
    torch.manual_seed(seed)
    head = torch.nn.Linear(f.shape[1], int(y.max()) + 1)
    opt = torch.optim.SGD(head.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(20):
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), 64):
            idx = perm[i : i + 64]
            loss = F.cross_entropy(head(f[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        return 100 * (head(ft).argmax(1) == yt).float().mean().item()


def joint(weights: Path, x, y, xt, yt, seed: int, epochs: int = 2) -> float:
    torch.manual_seed(seed)
    model = backbone(weights)
    head = torch.nn.Linear(model.num_features, int(y.max()) + 1)
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), 64):
            idx = perm[i : i + 64]
            loss = F.cross_entropy(head(model(x[idx])), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        return 100 * (head(features(model, xt)).argmax(1) == yt).float().mean().item()


def measure(name: str, design: dict, seed: int, workdir: Path) -> dict:
    from benchmarks import pretrain_fmnist
    from benchmarks.backbones import LOCAL_BACKBONES, local_weights, sha256_of

    t0 = time.time()
    row = {"what": design["what"], "pretrain_classes": list(design["pretrain_classes"]), "style": design["style"]}
    committed = [tag for tag, classes in LOCAL_BACKBONES.items() if classes == tuple(design["pretrain_classes"])]
    if committed:
        weights = local_weights(committed[0])
        row["backbone"] = {"tag": committed[0], "sha256": sha256_of(str(weights))}
    else:
        weights = workdir / f"{name}.pth"
        pre = pretrain_fmnist.main(["--classes", ",".join(map(str, design["pretrain_classes"])), "--out", str(weights)])
        row["pretrain"] = {k: pre[k] for k in ("test_acc", "seconds", "sha256")}
    x, y, xt, yt = stream(design["style"], design.get("glyphs"))
    frozen = backbone(weights)
    f, ft = features(frozen, x), features(frozen, xt)
    row["simple_cil"] = round(simple_cil(f, y, ft, yt), 2)
    row["linear_probe"] = round(linear_probe(f, y, ft, yt, seed), 2)
    row["joint"] = round(joint(weights, x, y, xt, yt, seed), 2)
    row["joint_minus_simple_cil"] = round(row["joint"] - row["simple_cil"], 2)
    row["joint_minus_linear_probe"] = round(row["joint"] - row["linear_probe"], 2)
    row["adaptation_matters"] = row["joint_minus_simple_cil"] >= 10 and row["joint_minus_linear_probe"] >= 10
    row["seconds"] = round(time.time() - t0, 1)
    return row


def main(argv=None) -> dict:
    from core.errors import UserError
    from runner.run_job import git_state

    ap = argparse.ArgumentParser(description="does adaptation matter in each candidate mini-suite design?")
    ap.add_argument("--designs", default=",".join(DESIGNS))
    ap.add_argument("--seed", type=int, default=1993)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="also write the JSON to this file")
    args = ap.parse_args(argv)
    names = [d for d in args.designs.split(",") if d]
    unknown = [d for d in names if d not in DESIGNS]
    if unknown:
        raise UserError(f"--designs: unknown {', '.join(unknown)}; choose from {', '.join(DESIGNS)}")
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    commit, dirty = git_state()
    out = {"date": dt.date.today().isoformat(), "git_commit": commit, "git_dirty": dirty, "seed": args.seed,
           "threads": args.threads, "designs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            out["designs"][name] = row = measure(name, DESIGNS[name], args.seed, Path(tmp))
            print(f"{name:18s} SimpleCIL {row['simple_cil']:6.2f}  linear probe {row['linear_probe']:6.2f}  "
                  f"joint {row['joint']:6.2f}  ({row['seconds']} s)", flush=True)
    line = json.dumps(out)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(line + "\n")
    print(line)
    return out


if __name__ == "__main__":
    from _cli import run  # bench/ is sys.path[0] when run as a script

    run(main)
