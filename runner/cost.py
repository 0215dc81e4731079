"""A per-image cost model for ``--dry-run``: how many GPU-hours a suite needs, before running it.

Calibration: the SD-LoRA logs show about 8-11 minutes per ImageNet-R task on one A100 (docs/sdlora.md section 6:
2,400 training images x 20 epochs per task), i.e. about 12 ms per training image for ViT-B/16 at 224 px with a
frozen backbone; inference is taken as a third of that. Methods that run two ViT passes at inference (the prompt
methods, docs/baselines.md section 0) and methods that back-propagate into every weight cost more, by the
factors each method declares (``MethodInfo.train_cost``, ``eval_cost``). Costs scale with the number of
tokens, i.e. (img_size / 224)^2. An estimate, not a promise.
"""

from __future__ import annotations

from benchmarks import BENCHMARKS
from methods import METHODS
from runner.jobs import Job

SEC_PER_TRAIN_IMAGE = 0.012
SEC_PER_EVAL_IMAGE = 0.004
# A method's (train, eval) multipliers are its MethodInfo's train_cost and eval_cost; a benchmark's image counts
# are its BenchmarkInfo's train_size and test_size.


def job_gpu_seconds(job: Job) -> float | None:
    bench = BENCHMARKS.get(job.benchmark_name).info
    if bench.train_size is None or bench.test_size is None:
        return None
    n_train, n_test = bench.train_size, bench.test_size
    method = METHODS.get(job.method_name).info
    m, b = job.method_cfg, job.benchmark_cfg
    img = getattr(b, "img_size", 224) or 224
    scale = (img / 224) ** 2
    train_f, eval_f = method.train_cost, method.eval_cost
    n = job.n_tasks()
    total = 0.0
    for t in range(n):
        epochs = m.for_task(t)[1]
        images = n_train * ((t + 1) / n if method.trains_on_all_seen else 1 / n)
        total += epochs * images * train_f * SEC_PER_TRAIN_IMAGE * scale
        total += n_test * (t + 1) / n * eval_f * SEC_PER_EVAL_IMAGE * scale
    return total


def suite_gpu_hours(jobs: list[Job]) -> tuple[float, int]:
    """(estimated A100-hours of the jobs the model knows, number of jobs it does not know)."""
    known = [job_gpu_seconds(j) for j in jobs]
    return sum(s for s in known if s is not None) / 3600, sum(s is None for s in known)
