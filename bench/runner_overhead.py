"""What the suite runner costs per job, measured with a method that trains nothing.

    python bench/runner_overhead.py                 # 20 jobs in this process
    python bench/runner_overhead.py --jobs 20 --workers 2   # also through a 2-worker joblib pool

Registers ``noop`` (a :class:`methods.base.CILStrategy` with ``epochs: 0``) and runs a suite of ``noop`` jobs on
the synthetic benchmark (3 tasks, tiny ViT) through ``run_suite.main``, then measures:

* ``per_job_s``: wall time of a suite run divided by its jobs: everything a job costs besides training, i.e.
  the runner's overhead (start, log, provenance, benchmark + backbone build, 3 evaluations of a few images,
  resume states, per-task checkpoints, record write) as an upper bound;
* ``parts_ms``: the runner's own pieces of it, each timed alone: provenance (git + versions), one resume-state
  save, one per-task checkpoint, one record write;
* ``skip_ms``: the rerun of the finished suite divided by its jobs (the check that a job's record is done with
  the same config hash), and the bare :meth:`runner.store.ResultStore.is_done` call.

Prints one line per figure, then a JSON line with all of them (the last line).

The ``noop`` method also serves the runner tests (tests/test_executors.py, loaded with ``--import``): its fields
``fail_if_exists`` / ``kill_if_exists`` make a job raise, or its worker process die, in task ``fail_task`` while that
file exists, ``alloc_gb`` allocates that much memory on the job's device in that task (a job that runs out of
memory), ``sleep_s`` makes each task take a while, and ``hold_until_exists`` holds task ``fail_task`` until that
file exists (at most ``hold_s`` seconds), so that a test decides when a running job may finish.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from methods.base import METHODS, CILStrategy, MethodConfig


@dataclass(frozen=True)
class NoopConfig(MethodConfig):
    """A method that trains nothing (see the module docstring for the test fields)."""

    epochs: int = 0
    fail_if_exists: str = ""
    kill_if_exists: str = ""
    fail_task: int = 0
    sleep_s: float = 0.0
    alloc_gb: float = 0.0
    hold_until_exists: str = ""
    hold_s: float = 120.0


class Noop(CILStrategy):
    """Trains nothing: a frozen tiny ViT and a growing head left at its initialisation."""

    def setup_task(self, t: int, experience) -> None:
        cfg = self.config
        if cfg.sleep_s:
            time.sleep(cfg.sleep_s)
        deadline = time.monotonic() + cfg.hold_s
        while t == cfg.fail_task and cfg.hold_until_exists and not Path(cfg.hold_until_exists).exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"noop: {cfg.hold_until_exists} did not appear within {cfg.hold_s:g} s")
            time.sleep(0.1)
        if t == cfg.fail_task and cfg.fail_if_exists and Path(cfg.fail_if_exists).exists():
            raise RuntimeError(f"noop: failing in task {t} because {cfg.fail_if_exists} exists")
        if t == cfg.fail_task and cfg.kill_if_exists and Path(cfg.kill_if_exists).exists():
            os.kill(os.getpid(), signal.SIGKILL)  # a worker killed by the OS (e.g. out of host memory)
        if t == cfg.fail_task and cfg.alloc_gb:  # on CUDA, more than the card holds: torch.cuda.OutOfMemoryError
            import torch

            torch.empty(int(cfg.alloc_gb * 2**30), dtype=torch.uint8, device=self.device)


# Registered once per process: this file runs as __main__ and is also imported by name through --import.
if "noop" not in METHODS:
    METHODS.register("noop", NoopConfig)(Noop)


def noop_suite(n_jobs: int, **method) -> dict:
    return {"name": "overhead", "seeds": list(range(n_jobs)),
            "backbones": {"tiny": {"tag": "vit_test_tiny", "pretrained": False}},
            "benchmarks": {"synthetic": {"n_tasks": 3, "n_classes": 6}},
            "methods": {"noop": {"batch_size": 8, "eval_batch_size": 16, **method}}}


def timed(fn, repeat: int = 1) -> float:
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def suite_figures(root: Path, n_jobs: int, workers: int) -> dict:
    import yaml

    import run_suite

    path = root / "suite.yaml"
    path.write_text(yaml.safe_dump(noop_suite(n_jobs)))
    out = root / f"res_w{workers}"
    args = ["--suite", str(path), "--results-dir", str(out), "--no-report", "--import", __file__,
            "--jobs", str(workers), "--threads", "1"]
    run_s = timed(lambda: run_suite.main(args))
    assert len(list((out / "records").glob("*.json"))) == n_jobs
    skip_s = timed(lambda: run_suite.main(args))
    return {"run_s": run_s, "per_job_s": run_s / n_jobs, "rerun_s": skip_s, "skip_ms": 1e3 * skip_s / n_jobs,
            "results": out}


def part_figures(out: Path) -> dict:
    """The runner's own pieces, each timed alone on the records and jobs of a finished run."""
    import torch

    from runner import resume
    from runner.run_job import git_state, versions
    from runner.store import ResultStore, atomic_torch_save

    store = ResultStore(out)
    record = store.all_records()[0]
    job_id, config_hash = record["job_id"], record["config_hash"]
    head = {"tensors": {"head.weight": torch.zeros(6, 32), "head.bias": torch.zeros(6)}, "extra": {"task_id": 2}}

    class Strategy:  # what resume.save reads of a strategy
        def checkpoint(self):
            return head

    progress = {k: record[k] for k in ("acc_matrix", "til_matrix", "pooled_acc", "til_pooled_acc", "timings")}
    scratch = ResultStore(out / "scratch")
    return {
        "provenance_ms": 1e3 * timed(lambda: (git_state(), versions()), 5),
        "resume_save_ms": 1e3 * timed(lambda: resume.save(scratch, job_id, config_hash, 1, 3, Strategy(), progress), 10),
        "task_checkpoint_ms": 1e3 * timed(lambda: atomic_torch_save(head, scratch.checkpoint_dir(job_id) / "t.pt"), 10),
        "record_write_ms": 1e3 * timed(lambda: scratch.write(record), 20),
        "is_done_ms": 1e3 * timed(lambda: store.is_done(job_id, config_hash), 200),
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=20, help="no-op jobs in the suite")
    ap.add_argument("--workers", type=int, default=1, help="also run through a joblib pool of this many workers")
    args = ap.parse_args(argv)
    figures: dict = {"jobs": args.jobs}
    with tempfile.TemporaryDirectory(prefix="sdlb-overhead-") as tmp:
        root = Path(tmp)
        local = suite_figures(root, args.jobs, 1)
        figures.update({k: v for k, v in local.items() if k != "results"})
        figures["parts_ms"] = part_figures(local["results"])
        if args.workers > 1:
            pool = suite_figures(root, args.jobs, args.workers)
            figures[f"workers_{args.workers}"] = {k: v for k, v in pool.items() if k != "results"}
    figures = json.loads(json.dumps(figures), parse_float=lambda x: round(float(x), 4))
    print(f"per job (in process, {args.jobs} jobs): {figures['per_job_s']:.3f} s; "
          f"skip of a finished job: {figures['skip_ms']:.2f} ms")
    for name, value in figures["parts_ms"].items():
        print(f"  {name}: {value:.2f}")
    if args.workers > 1:
        w = figures[f"workers_{args.workers}"]
        print(f"through {args.workers} workers: {w['run_s']:.1f} s for {args.jobs} jobs ({w['per_job_s']:.3f} s/job, "
              f"worker start-up included)")
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
