"""Pretrain the CPU backbone ``vit_fmnist_p7_28`` on the pretraining half of Fashion-MNIST.

    python -m benchmarks.pretrain_fmnist            # writes benchmarks/weights/vit_fmnist_p7_28.fmnist_half.pth
    python -m benchmarks.pretrain_fmnist --tag vit_fmnist_p7_28.fmnist_half_even   # the five even labels only

Supervised, with labels, on the 30,000 training images that the continual stream never uses
(:func:`benchmarks.fmnist.halves`), deterministically (fixed seed, one process, deterministic kernels).
Prints the held-out test accuracy of the pretrained classifier and the sha256 of the file it writes.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.backbones import FMNIST_TAG, LOCAL_BACKBONES, local_weights, sha256_of
from benchmarks.fmnist import halves, load_fmnist, to_tensor


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tag", default=FMNIST_TAG, choices=sorted(LOCAL_BACKBONES),
                    help="which committed backbone to make: its classes and file (benchmarks.backbones.LOCAL_BACKBONES)")
    ap.add_argument("--out", default=None, help="weights file (default: the tag's committed file)")
    ap.add_argument("--classes", default=None,
                    help="comma-separated labels to pretrain on (default: the tag's; bench/mini_designs.py)")
    args = ap.parse_args(argv)
    args.out = args.out or str(local_weights(args.tag))

    import timm

    import benchmarks.backbones  # noqa: F401  (registers the architecture with timm)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    raw = load_fmnist()
    pre, _ = halves(len(raw["train_labels"]))
    classes = sorted({int(c) for c in args.classes.split(",")}) if args.classes else list(LOCAL_BACKBONES[args.tag])
    pre = pre[np.isin(raw["train_labels"][pre], classes)]
    x = to_tensor(raw["train_images"][pre])
    y = torch.from_numpy(raw["train_labels"][pre].astype(np.int64))
    seen = np.isin(raw["test_labels"], classes)  # held-out accuracy on the pretraining classes
    xt, yt = to_tensor(raw["test_images"][seen]), torch.from_numpy(raw["test_labels"][seen].astype(np.int64))

    model = timm.create_model("vit_fmnist_p7_28", pretrained=False, num_classes=10)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    steps = args.epochs * (len(y) // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(y), generator=gen)
        for i in range(len(y) // args.batch_size):
            idx = perm[i * args.batch_size : (i + 1) * args.batch_size]
            xb = x[idx]
            # light augmentation: random shifts of up to 2 px (deterministic through the generator)
            dx, dy = torch.randint(-2, 3, (2,), generator=gen).tolist()
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(model(xb), y[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch + 1}/{args.epochs} loss {loss.item():.3f} ({time.time() - t0:.0f}s)", flush=True)
    model.eval()
    with torch.no_grad():
        acc = sum((model(xt[i : i + 1000]).argmax(1) == yt[i : i + 1000]).sum().item() for i in range(0, len(yt), 1000))
    torch.save(model.state_dict(), args.out)
    result = {"test_acc": round(100 * acc / len(yt), 2), "seconds": round(time.time() - t0, 1),
              "out": args.out, "sha256": sha256_of(args.out)}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
