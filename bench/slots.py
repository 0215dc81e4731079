"""Total training throughput with 1, 2, 4, 8 jobs at once on one device (issue 15, item 4).

    python bench/slots.py --device cuda --out slots.json                       # ViT-B/16 at 224 px, batch 64
    python bench/slots.py --device cuda --merge-into results/reference/rates/FILE.json   # store it beside the rates

Each job is a separate process (as ``--gpus 0,0`` makes them) running the adapter methods' training floor of
``bench/throughput.py`` (a frozen ViT whose input requires grad: forward and activation backward, the bulk of a
LoRA or prompt job's step) on its own synthetic batch. All processes build their model and warm up, meet at a
barrier, then step for ``--seconds``; the figure for N jobs is the images all N processed per second, and its ratio
to one job's is what ``run_suite.py --gpus all`` and ``--dry-run``'s wall-clock read (``slots`` in the rates file:
runner/cost.py). Peak memory per job is reported beside it (CUDA: ``max_memory_allocated``).

On CPU the same code runs with one torch thread per process (to test it; a 2-core machine shows saturation only).
Last line JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def worker(args: argparse.Namespace, barrier, out_q) -> None:
    from throughput import frozen_step, make_backbone, sync  # bench/ is sys.path[0] in the spawned process too

    if args.device == "cpu":
        torch.set_num_threads(1)
    torch.manual_seed(0)
    model = make_backbone(args.model, args.img_size, args.device).requires_grad_(False)
    head = torch.nn.Linear(model.num_features, 10).to(args.device).requires_grad_(False)
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, device=args.device)
    y = torch.randint(0, 10, (args.batch,), device=args.device)

    def step() -> None:
        frozen_step(model, head, x, y)

    for _ in range(args.warmup):
        step()
    sync(args.device)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    barrier.wait()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        step()
        steps += 1
    sync(args.device)
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else None
    out_q.put({"images": steps * args.batch, "seconds": elapsed, "peak_mem_mb": peak})


def measure(args: argparse.Namespace, n: int) -> dict:
    ctx = mp.get_context("spawn")
    barrier, out_q = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(args, barrier, out_q)) for _ in range(n)]
    for p in procs:
        p.start()
    results = [out_q.get() for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(f"a job process exited with {p.exitcode}")
    ips = sum(r["images"] / r["seconds"] for r in results)
    peaks = [r["peak_mem_mb"] for r in results if r["peak_mem_mb"] is not None]
    return {"jobs": n, "images_per_s": round(ips, 1), "peak_mem_mb_per_job": round(max(peaks), 1) if peaks else None}


def parse(argv):
    ap = argparse.ArgumentParser(description="total training images/s with several jobs on one device")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default=None, help="default vit_base_patch16_224 on CUDA, vit_tiny_patch16_224 on CPU")
    ap.add_argument("--img-size", type=int, default=None, help="default 224 on CUDA, 64 on CPU")
    ap.add_argument("--batch", type=int, default=None, help="default 64 on CUDA, 16 on CPU")
    ap.add_argument("--counts", default="1,2,4,8", help="numbers of jobs at once")
    ap.add_argument("--seconds", type=float, default=20.0, help="timed seconds per count")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", help="also write the JSON to this file")
    ap.add_argument("--merge-into", help="a bench/throughput.py --out file: store the ratios there as 'slots'")
    args = ap.parse_args(argv)
    gpu = args.device.startswith("cuda")
    args.model = args.model or ("vit_base_patch16_224" if gpu else "vit_tiny_patch16_224")
    args.img_size = args.img_size or (224 if gpu else 64)
    args.batch = args.batch or (64 if gpu else 16)
    return args


def main(argv=None) -> dict:
    from core.errors import UserError

    args = parse(argv)
    try:
        counts = sorted({int(c) for c in args.counts.split(",") if c.strip()})
    except ValueError:
        raise UserError(f"--counts {args.counts!r}: give job counts separated by commas, e.g. 1,2,4,8") from None
    if not counts or counts[0] < 1 or 1 not in counts:
        raise UserError(f"--counts {args.counts!r}: include 1 (the ratios are against one job) and only counts >= 1")
    if args.merge_into and not Path(args.merge_into).is_file():
        raise UserError(f"--merge-into {args.merge_into}: no such file; write it with bench/throughput.py --out")
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"# {args.model} at {args.img_size}px, batch {args.batch}, device {args.device} ({name}), "
          f"{args.seconds} s per count", flush=True)
    rows = []
    for n in counts:
        rows.append(measure(args, n))
        print(f"{n} job(s): {rows[-1]['images_per_s']} images/s in all, peak {rows[-1]['peak_mem_mb_per_job']} MB "
              "per job", flush=True)
    one = rows[0]["images_per_s"]
    slots = {str(r["jobs"]): round(r["images_per_s"] / one, 3) for r in rows}
    from runner.run_job import git_state

    commit, dirty = git_state()
    out = {"date": dt.date.today().isoformat(), "git_commit": commit, "git_dirty": dirty, "device": args.device, "device_name": name, "model": args.model,
           "img_size": args.img_size, "batch": args.batch, "seconds": args.seconds, "rows": rows, "slots": slots}
    line = json.dumps(out)
    if args.out:
        Path(args.out).write_text(line + "\n")
    if args.merge_into:
        path = Path(args.merge_into)
        rates = json.loads(path.read_text())
        rates["slots"], rates["slots_measured"] = slots, {k: out[k] for k in ("date", "device_name", "rows")}
        path.write_text(json.dumps(rates) + "\n")
    print(line)
    return out


if __name__ == "__main__":
    from _cli import run  # bench/ is sys.path[0] when run as a script

    run(main)
