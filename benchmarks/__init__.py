"""Benchmarks: datasets on disk -> Avalanche class-incremental scenarios; backbones (timm + local weights).

Importing this package imports every module in it, so each benchmark file registers itself with ``BENCHMARKS``.
"""

import importlib
import pkgutil

from benchmarks.base import BENCHMARKS, BenchmarkConfig, CILBenchmark  # noqa: F401

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _info.name.startswith("_") and _info.name not in ("pretrain_fmnist",):
        importlib.import_module(f"{__name__}.{_info.name}")
