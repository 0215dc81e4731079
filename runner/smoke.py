"""``--smoke``: every job of a suite on tiny stand-ins, to prove the wiring of a GPU suite on a CPU.

Each job keeps its method, benchmark and seed, but runs on:

* data: what the benchmark's ``BenchmarkInfo.smoke`` gives: for the paper's datasets tiny generated files in
  their real on-disk format (:mod:`benchmarks.fixtures`), with the real
  class counts so that class orders and task splits are the paper's, at 16 px;
* backbone: ``vit_test_tiny`` (random weights, 16 px); the record's ``config.runtime.smoke_of`` names the
  backbone it stands for (the reference table compares a paper cell only with runs on the paper's backbone);
* training: one optimisation step per task (every ``*epochs`` field set to 1, batches large enough to hold a
  task's fixture images).

Everything after that (records, LaTeX tables, reference table) is the real code path.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from benchmarks import BENCHMARKS
from benchmarks.backbones import BackboneConfig
from core.errors import UserError
from runner.jobs import Job

SMOKE_IMG = 16
SMOKE_BATCH = 4096


def smoke_method_config(cfg):
    changes = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name.endswith("epochs") and isinstance(value, int) and value > 0:
            changes[f.name] = 1
        elif f.name in ("batch_size", "eval_batch_size"):
            changes[f.name] = SMOKE_BATCH
        elif f.name == "num_workers":
            changes[f.name] = 0  # worker processes cost more than tiny images
        elif f.name in ("init_milestones", "milestones"):
            changes[f.name] = () if value is not None else None
    return dataclasses.replace(cfg, **changes)


def smoke_jobs(jobs: list[Job], data_root: Path) -> list[Job]:
    """The suite's jobs rewritten onto stand-ins (each benchmark's ``BenchmarkInfo.smoke``), data under ``data_root``."""
    out = []
    for job in jobs:
        smoke = BENCHMARKS.get(job.benchmark_name).info.smoke
        if smoke is None:
            raise UserError(f"benchmark {job.benchmark_name} has no --smoke stand-in; give its registration "
                            "info=BenchmarkInfo(smoke=...) (docs/adding_a_benchmark.md)")
        bcfg, channels, img = smoke(job.benchmark_cfg, data_root, SMOKE_IMG)
        backbone = BackboneConfig(tag="vit_test_tiny", pretrained=False, img_size=img, in_chans=channels)
        # runtime (not hashed) keeps the tag the stand-in replaces: the reference table matches on it
        out.append(dataclasses.replace(job, benchmark_cfg=bcfg, backbone_cfg=backbone,
                                       method_cfg=smoke_method_config(job.method_cfg),
                                       runtime={**job.runtime, "smoke_of": job.backbone_cfg.tag}))
    return out
