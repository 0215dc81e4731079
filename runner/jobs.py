"""A job = one method x one benchmark x one backbone x one seed; its identity and cache key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.config import Config, stable_hash
from runner.code import job_code_hash


@dataclass(frozen=True)
class Job:
    suite: str
    method: str  # label in the suite (table row)
    method_name: str  # registry name
    method_cfg: Config
    benchmark: str
    benchmark_name: str
    benchmark_cfg: Config
    backbone: str
    backbone_cfg: Config
    seed: int
    multi_backbone: bool = False
    runtime: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def job_id(self) -> str:
        jid = f"{self.method}__{self.benchmark}__s{self.seed}"
        return f"{jid}__{self.backbone}" if self.multi_backbone else jid

    def config(self) -> dict[str, Any]:
        """Everything that determines the result (the cache key is its hash; ``runtime`` is left out)."""
        return {
            "method_name": self.method_name,
            "method": self.method_cfg.to_dict(),
            "benchmark_name": self.benchmark_name,
            "benchmark": self.benchmark_cfg.to_dict(),
            "backbone": self.backbone_cfg.to_dict(),
            "seed": self.seed,
        }

    def config_hash(self) -> str:
        return stable_hash(self.config())

    def code_hash(self) -> str:
        """Hash of the source that defines this job (:mod:`runner.code`); not part of :meth:`config_hash`."""
        return job_code_hash(self.method_name, self.benchmark_name)

    def n_tasks(self) -> int:
        return int(self.benchmark_cfg.n_tasks)
