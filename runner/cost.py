"""A per-image cost model for ``--dry-run``: how many GPU-hours a suite needs, before running it.

Calibration: the SD-LoRA logs show about 8-11 minutes per ImageNet-R task on one A100 (docs/sdlora.md section 6:
2,400 training images x 20 epochs per task), i.e. about 12 ms per training image for ViT-B/16 at 224 px with a
frozen backbone; inference is taken as a third of that. Methods that run two ViT passes at inference (the prompt
methods, docs/baselines.md section 0) and methods that back-propagate into every weight cost more, by the
factors below. Costs scale with the number of tokens, i.e. (img_size / 224)^2. An estimate, not a promise.
"""

from __future__ import annotations

from runner.jobs import Job

SEC_PER_TRAIN_IMAGE = 0.012
SEC_PER_EVAL_IMAGE = 0.004
# (train, eval) multipliers
FACTORS = {
    "full_ft": (1.5, 1.0), "joint": (1.5, 1.0), "l2p": (1.4, 2.0), "dualprompt": (1.4, 2.0),
    "coda_prompt": (1.4, 2.0), "hide_prompt": (2.5, 2.0), "simple_cil": (0.33, 1.0),
}
# (training images, test images); sources: docs/datasets.md (counts reported by the split's authors);
# DomainNet: the CODA-Prompt lists' size is unverified, the official 5-domain lists without quickdraw give these.
DATASET_SIZES = {
    "imagenet_r": (24000, 6000), "imagenet_a": (5981, 1519), "cifar100": (50000, 10000),
    "cub200": (9430, 2358), "domainnet": (288000, 72000),
}


def job_gpu_seconds(job: Job) -> float | None:
    sizes = DATASET_SIZES.get(job.benchmark_name)
    if sizes is None:
        return None
    n_train, n_test = sizes
    m, b = job.method_cfg, job.benchmark_cfg
    img = getattr(b, "img_size", 224) or 224
    scale = (img / 224) ** 2
    train_f, eval_f = FACTORS.get(job.method_name, (1.0, 1.0))
    n = job.n_tasks()
    total = 0.0
    for t in range(n):
        epochs = m.for_task(t)[1]
        images = n_train * ((t + 1) / n if job.method_name == "joint" else 1 / n)
        total += epochs * images * train_f * SEC_PER_TRAIN_IMAGE * scale
        total += n_test * (t + 1) / n * eval_f * SEC_PER_EVAL_IMAGE * scale
    return total


def suite_gpu_hours(jobs: list[Job]) -> tuple[float, int]:
    """(estimated A100-hours of the jobs the model knows, number of jobs it does not know)."""
    known = [job_gpu_seconds(j) for j in jobs]
    return sum(s for s in known if s is not None) / 3600, sum(s is None for s in known)
