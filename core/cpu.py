"""Which vector instructions the CPU kernels may use (``run_suite.py --cpu-isa``), so that one job and seed give one
record on every x86-64 CPU, not one per kind of CPU.

Torch picks its CPU kernels by the processor: its own (ATen) by the highest vector level it finds, and the matrix
products of MKL and the convolutions of oneDNN by theirs. Kernels of different levels sum in different orders, and
in a run that forgets, a rounding difference in the first steps grows into points of accuracy (README,
Determinism). Each library reads one environment variable once, at its first kernel, so the level is set here, in
the environment, before any kernel runs; worker processes (loky, SLURM tasks) inherit it.

* ``avx2`` (the default): every library at AVX2, the highest level that x86-64 CPUs since 2013 share. An AVX512
  machine then makes the records an AVX2 machine makes (docs/results/mini/DESIGN.md section 13).
* ``baseline``: ATen's unvectorised kernels, MKL at SSE4.2, oneDNN at SSE4.1: for CPUs without AVX2; slower.
* ``native``: the machine's own best; records then hold on that kind of CPU only.

A variable already set by the caller is kept (it wins over the level): ``ATEN_CPU_CAPABILITY=avx512`` for one run,
say. On a CPU that lacks the level the libraries fall back to what it has; each record names the level ATen used
(``provenance.cpu``) and the pin in force (``provenance.cpu_isa``). Torch-free: imported before torch is.
"""

from __future__ import annotations

import os
import platform

VARIABLES = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "DNNL_MAX_CPU_ISA")  # ATen, MKL, oneDNN
LEVELS: dict[str, dict[str, str]] = {
    "avx2": dict(zip(VARIABLES, ("avx2", "AVX2", "AVX2"))),
    "baseline": dict(zip(VARIABLES, ("default", "SSE4_2", "SSE41"))),
    "native": {},
}
DEFAULT = "avx2"


def pin_kernels(level: str) -> None:
    """Set ``level``'s variables in this process's environment (those the caller set are kept). Effective for
    this process only before its first kernel, and for every process it starts afterwards. Not on non-x86 CPUs,
    whose libraries have other levels."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return
    for var, value in LEVELS[level].items():
        os.environ.setdefault(var, value)


def level_in_force() -> str:
    """The pin this process's environment holds: a level's name, ``native`` with none of the variables set, or the
    variables as set (``ATEN_CPU_CAPABILITY=avx512,...``) when they match no level."""
    held = {var: os.environ[var] for var in VARIABLES if var in os.environ}
    for name, values in LEVELS.items():
        if held == values:
            return name
    return ",".join(f"{var}={value}" for var, value in held.items())


def unpinned(env: dict[str, str]) -> dict[str, str]:
    """``env`` without the pin's variables: the environment of a process that is to choose its own level."""
    return {k: v for k, v in env.items() if k not in VARIABLES}
