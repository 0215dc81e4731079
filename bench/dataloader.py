"""Images/s of each paper benchmark's training pipeline, per DataLoader worker count, on fixture files.

    python bench/dataloader.py                                   # 224 px, workers 1,2,4,8, every paper benchmark
    python bench/dataloader.py --throughput tp.json              # beside it: the methods' training images/s

For each paper benchmark, :func:`benchmarks.fixtures.write_fixture` lays out a stand-in in the real on-disk format
(real class counts, so the readers see what they see on the real data), and every image file is then rewritten at
a size typical of that dataset (:data:`TYPICAL_SIZES`, same format and colour mode). The benchmark is built by its
registered reader (:mod:`benchmarks.paper_datasets`), so the pipeline timed is the job's own: Avalanche's training
experience dataset -> file read, PIL decode, ``convert('RGB')``, the SD-LoRA/PILOT train transform
(RandomResizedCrop(scale 0.05-1), flip, ToTensor) -> a ``torch.utils.data.DataLoader`` batch. Images are drawn with
replacement from the first experience; ``--images`` are timed once the batches prefetched during start-up are
consumed (steady state; the time to the first batch is reported apart). Worker counts beyond the machine's cores show saturation.

With ``--throughput`` (the JSON that ``bench/throughput.py --out`` writes) the consumption side is printed beside:
the fastest and slowest method's training images/s there, and how many workers at the measured per-worker rate
would keep each fed. The last line is JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Typical (width, height) of each dataset's stored images, cycled over the files. Assumptions of this bench, not
# measurements of the datasets: ImageNet-R renditions and ImageNet-A photos are web images of mixed sizes around
# VGA; CUB-200 photos are about 500 x 375; DomainNet images are mostly 300-600 px on the long side. CIFAR-100 is
# stored as 32 x 32 arrays (no file decode), kept to show the cost of the upsampling crop alone.
TYPICAL_SIZES = {
    "imagenet_r": ((500, 375), (400, 500), (640, 480), (500, 500)),
    "imagenet_a": ((500, 375), (640, 480), (800, 600), (375, 500)),
    "cub200": ((500, 375), (500, 333), (375, 500)),
    "domainnet": ((600, 450), (400, 400), (300, 450), (500, 375)),
    "cifar100": (),
}
JPEG_QUALITY = 90
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def resize_fixture_images(root: Path, sizes: tuple[tuple[int, int], ...]) -> int:
    """Rewrite every image under ``root`` at the cycled ``sizes``, keeping its format and colour mode.

    One encoded file per (size, mode, format) is made and its bytes copied: decoding cost depends on size, mode
    and format, not on content, and encoding a thousand VGA images would dominate the bench.
    """
    import io

    import numpy as np
    from PIL import Image

    if not sizes:
        return 0
    rng = np.random.RandomState(0)
    encoded: dict[tuple, bytes] = {}
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    for i, path in enumerate(files):
        w, h = sizes[i % len(sizes)]
        with Image.open(path) as old:
            key = (w, h, old.mode, path.suffix.lower() in (".jpg", ".jpeg"))
        if key not in encoded:
            # smooth colour fields plus noise: JPEG sizes closer to photos than flat colour or pure noise
            base = rng.randint(0, 256, size=(h // 16 + 1, w // 16 + 1, 3)).astype(np.uint8)
            img = Image.fromarray(base).resize((w, h), Image.BILINEAR)
            noisy = np.clip(np.asarray(img, dtype=np.int16) + rng.randint(-20, 21, size=(h, w, 3)), 0, 255)
            img = Image.fromarray(noisy.astype(np.uint8))
            if key[2] == "P":
                img = img.quantize(colors=64)
            elif key[2] == "L":
                img = img.convert("L")
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=JPEG_QUALITY) if key[3] else img.save(buf, format="PNG")
            encoded[key] = buf.getvalue()
        path.write_bytes(encoded[key])
    return len(files)


def build_fixture(name: str, root: Path, img_size: int, per_class: int):
    """The benchmark ``name`` built by its own reader on a resized fixture under ``root``."""
    from benchmarks import BENCHMARKS
    from benchmarks.fixtures import write_fixture

    write_fixture(name, root, per_class_train=per_class, per_class_test=1)
    n_files = resize_fixture_images(root, TYPICAL_SIZES[name])
    cfg = BENCHMARKS.make_config(name, {"root": str(root), "img_size": img_size, "n_tasks": 5})
    return BENCHMARKS.get(name).obj(cfg, 0), n_files


PREFETCH = 2  # DataLoader's default prefetch_factor


def loader_rate(dataset, workers: int, batch: int, images: int) -> tuple[float, float]:
    """(steady images/s, seconds to the first batch) for ``workers`` workers.

    The clock starts once the batches requested before the first one arrived (``workers * PREFETCH``, made
    while the loader started) are consumed, and runs over at least 8x the batches that can be in flight, so
    that prefetched work hardly counts as speed (at most 1/8 of the timed images were ready at the start).
    """
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    skip = 1 + workers * PREFETCH
    # at most workers * PREFETCH batches can be ready when the clock starts: time 8x that many, bias <= 12.5%
    images = max(images, 8 * workers * PREFETCH * batch)
    total = images + skip * batch
    sampler = RandomSampler(dataset, replacement=True, num_samples=total, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=workers, drop_last=True,
                        prefetch_factor=PREFETCH if workers else None)
    t0 = time.perf_counter()
    it = iter(loader)
    next(it)
    first = time.perf_counter() - t0
    for _ in range(skip - 1):
        next(it)
    start = time.perf_counter()
    n = sum(len(xb[0]) for xb in it)
    end = time.perf_counter()
    del it
    return n / (end - start), first


def consumption(path: str | None) -> dict | None:
    """The slowest and fastest method's fp32 training images/s (first task) in a ``bench/throughput.py`` JSON."""
    if not path:
        return None
    from core.errors import UserError

    try:
        data = json.loads(Path(path).read_text().strip().splitlines()[-1])
        rates = {m: r["images_per_s"]["train_first"]["method"] for m, r in data["methods"].items()
                 if "train_first" in r.get("images_per_s", {})}
    except (OSError, ValueError, KeyError, IndexError) as err:
        raise UserError(f"--throughput {path}: not a bench/throughput.py JSON ({err}); pass the file its --out "
                        "wrote") from None
    if not rates:
        raise UserError(f"--throughput {path}: no method with a training rate in it")
    slow, fast = min(rates, key=rates.get), max(rates, key=rates.get)
    return {"source": path, "device": data.get("device_name") or data.get("device"), "img_size": data.get("img_size"),
            "slowest": {"method": slow, "images_per_s": rates[slow]},
            "fastest": {"method": fast, "images_per_s": rates[fast]}}


def workers_needed(rate_needed: float, per_worker: float) -> int:
    """Workers at ``per_worker`` images/s each (one worker's measured rate) that supply ``rate_needed``."""
    return max(1, math.ceil(rate_needed / per_worker)) if per_worker > 0 else 0


def main(argv=None) -> dict:
    from core.errors import UserError

    ap = argparse.ArgumentParser(description="DataLoader images/s of each paper benchmark's training pipeline")
    ap.add_argument("--benchmarks", default="imagenet_r,imagenet_a,cub200,domainnet,cifar100")
    ap.add_argument("--workers", default="1,2,4,8")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--images", type=int, default=256, help="timed images per measurement (at least 8x in flight)")
    ap.add_argument("--per-class", type=int, default=2, help="fixture training images per class")
    ap.add_argument("--throughput", default=None, help="a bench/throughput.py JSON: the consumption side")
    ap.add_argument("--root", default=None, help="where to write the fixtures (default: a temporary folder)")
    ap.add_argument("--out", default=None, help="also write the JSON to this file")
    args = ap.parse_args(argv)
    names = [n for n in args.benchmarks.split(",") if n]
    unknown = [n for n in names if n not in TYPICAL_SIZES]
    if unknown:
        raise UserError(f"--benchmarks: no pipeline for {', '.join(unknown)}; choose from {', '.join(TYPICAL_SIZES)}")
    workers = [int(w) for w in args.workers.split(",")]
    consume = consumption(args.throughput)
    print(f"# {args.img_size} px, batch {args.batch}, {args.images} images per measurement, "
          f"{os.cpu_count()} CPUs", flush=True)
    if consume:
        print(f"# consumption ({consume['device']}, {consume['img_size']} px): slowest {consume['slowest']}, "
              f"fastest {consume['fastest']}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            root = Path(args.root or tmp) / name
            bench, n_files = build_fixture(name, root, args.img_size, args.per_class)
            dataset = bench.scenario.train_stream[0].dataset
            row = {"fixture_files": n_files, "sizes": [list(s) for s in TYPICAL_SIZES[name]], "workers": {}}
            for w in workers:
                rate, startup = loader_rate(dataset, w, args.batch, args.images)
                row["workers"][str(w)] = {"images_per_s": round(rate, 1), "first_batch_s": round(startup, 2)}
                print(f"{name:11s} workers {w}: {rate:8.1f} images/s (first batch after {startup:.2f} s)", flush=True)
            one = row["workers"].get("1", {}).get("images_per_s")
            if consume and one:
                row["workers_to_feed"] = {k: workers_needed(consume[k]["images_per_s"], one)
                                          for k in ("slowest", "fastest")}
                print(f"{name:11s} workers to feed the slowest / fastest method at 1 worker's rate: "
                      f"{row['workers_to_feed']['slowest']} / {row['workers_to_feed']['fastest']}", flush=True)
            results[name] = row
    from runner.run_job import git_state

    commit, dirty = git_state()
    out = {"date": dt.date.today().isoformat(), "git_commit": commit, "git_dirty": dirty,
           "cpus": os.cpu_count(), "img_size": args.img_size,
           "batch": args.batch, "images": args.images, "benchmarks": results, "consumption": consume}
    line = json.dumps(out)
    if args.out:
        Path(args.out).write_text(line + "\n")
    print(line)
    return out


if __name__ == "__main__":
    from _cli import run  # bench/ is sys.path[0] when run as a script

    run(main)
