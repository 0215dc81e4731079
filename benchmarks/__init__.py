"""Benchmarks: datasets on disk -> Avalanche class-incremental scenarios; backbones (timm + local weights).

Importing this package registers every built-in benchmark with ``BENCHMARKS``.
"""

from benchmarks.base import BENCHMARKS, BenchmarkConfig, CILBenchmark  # noqa: F401
from benchmarks import fmnist, synthetic  # noqa: F401,E402
