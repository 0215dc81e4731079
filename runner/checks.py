"""What a run needs, checked before any job starts: the device, the GPU slots, data, weights, a writable folder.

Each check returns the problems it finds as one-line messages (``--dry-run`` prints them all and says that a real
run would stop there; a real run stops on the first with exit 2, nothing written). Also here: the shape of a
suite file's top-level keys, so that a malformed suite is one line and never a traceback, and the one line a
results folder that cannot be written (disk full, read-only) turns into.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.folders import output_problem

DEVICE_HINT = "use auto, cpu, cuda or cuda:N"
# errors that mean "this folder cannot take the write", whichever file was being written
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


# ---------------------------------------------------------------------------------------------------- devices
def device_problems(device: str, execution: dict[str, Any]) -> list[str]:
    """``--device`` and ``--gpus`` against the GPUs a job will see (without initialising CUDA here).

    Args:
        device: the ``--device`` value (``auto``, ``cpu``, ``cuda``, ``cuda:N``).
        execution: :func:`runner.plan.plan_execution`'s result (``executor``, ``gpus``, ``slurm``).
    """
    import torch

    from runner.executors import visible_gpus

    gpus = execution.get("gpus")
    problems = []
    if gpus:
        visible = visible_gpus()
        bad = sorted({g for g in gpus if g not in visible}, key=str)
        if bad:
            seen = f"the GPUs visible here are: {', '.join(visible)}" if visible else "no GPU is visible here"
            problems.append(f"--gpus {','.join(gpus)}: no GPU {', '.join(bad)} ({seen}); give visible GPU ids, "
                            "or --jobs N on a CPU machine")
    if device == "auto":
        return problems
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        return [*problems, f"--device {device}: not a device; {DEVICE_HINT}"]
    if dev.type == "cpu":
        return problems
    if dev.type != "cuda":
        return [*problems, f"--device {device}: the runner trains on cpu or cuda; {DEVICE_HINT}"]
    if not torch.backends.cuda.is_built():
        return [*problems, f"--device {device}: this torch ({torch.__version__}) is built without CUDA; use cpu"]
    index = dev.index or 0
    if execution.get("executor") == "slurm":
        n, where = execution["slurm"].gpus, f"each SLURM job gets {execution['slurm'].gpus} GPU(s) (--slurm-gpus)"
    elif gpus:
        n, where = 1, "each --gpus worker sees only its own GPU, as cuda:0"
    else:
        visible = visible_gpus()
        n, where = len(visible), (f"{len(visible)} GPU(s) visible here" if visible else "no GPU is visible here")
    if index >= n:
        problems.append(f"--device {device}: no such GPU ({where}); {DEVICE_HINT} with N below {n}"
                        if n else f"--device {device}: {where}; use --device cpu or auto")
    return problems


def runs_on_cpu(device: str, execution: dict[str, Any]) -> bool:
    """Whether the jobs would train on this machine's CPU: ``--device cpu``, or ``auto`` run locally with no
    ``--gpus`` and no GPU visible (a SLURM job's device is the node's, unknown here)."""
    from runner.executors import visible_gpus

    if execution.get("executor") == "slurm":
        return False
    if device == "cpu":
        return True
    return device == "auto" and not execution.get("gpus") and not visible_gpus()


# ---------------------------------------------------------------------------------------------------- data, weights
def path_problems(jobs) -> list[str]:
    """Missing datasets and weights: one problem per distinct config that lacks its files."""
    seen, problems = set(), []
    for job in jobs:
        for cfg in (job.benchmark_cfg, job.backbone_cfg):
            key = (type(cfg).__name__, repr(cfg))
            validate = getattr(cfg, "validate_paths", None)
            if key in seen or validate is None:
                continue
            seen.add(key)
            try:
                validate()
            except UserError as err:
                if str(err) not in problems:
                    problems.append(str(err))
    return problems


# ---------------------------------------------------------------------------------------------------- results folder
def folder_problems(results_dir: Path) -> list[str]:
    """A results folder this process cannot write (judged without writing anything: for ``--dry-run``)."""
    problem = output_problem(results_dir, "--results-dir", probe=False, name=f"results folder {results_dir}")
    return [problem] if problem else []


def probe_writable(results_dir: Path) -> None:
    """Write and remove a file in the results folder the way a record is written, before any job starts."""
    from runner.store import atomic_write_text

    # named per process: two runners starting on one folder (locks.py) must not remove each other's probe
    probe = Path(results_dir) / f".write_probe.{socket.gethostname()}.{os.getpid()}"
    try:
        atomic_write_text(probe, "probe\n")
        probe.unlink(missing_ok=True)
    except OSError as err:
        raise storage_error(results_dir, err) from None


def storage_error(results_dir: Path, err: OSError) -> UserError | None:
    """The one line for a write the results folder refused (disk full, read-only, no permission), else None."""
    if err.errno not in STORAGE_ERRNOS and not _under(err.filename, results_dir):
        return None
    cause = err.strerror or str(err)
    where = f" (writing {err.filename})" if err.filename else ""
    fix = "free space or give a writable --results-dir" if err.errno in (errno.ENOSPC, errno.EDQUOT) else \
        "give a writable --results-dir"
    return UserError(f"results folder {results_dir} cannot be written: {cause}{where}; {fix} (finished records are "
                     "intact: each is replaced atomically)")


def _under(filename: Any, folder: Path) -> bool:
    if not isinstance(filename, (str, os.PathLike)):
        return False
    return Path(os.path.abspath(filename)).is_relative_to(Path(folder).absolute())


# ---------------------------------------------------------------------------------------------------- suite shape
MAPPINGS = ("backbones", "benchmarks", "methods", "defaults", "slurm")
STRINGS = ("name", "description", "extends", "executor")
SELECTORS = {"experiments": ("methods", "benchmarks"), "overrides": ("methods", "benchmarks", "set", "seeds",
                                                                        "set_benchmark")}


def suite_shape_problems(data: dict, where: str) -> list[str]:
    """Types of a suite file's top-level keys (what each label holds is checked by the config classes)."""
    problems = []
    for key in STRINGS:
        if key in data and not isinstance(data[key], str):
            problems.append(f"{where}: '{key}' must be a string, got {_short(data[key])}")
    for key in MAPPINGS:
        if data.get(key) is not None and not isinstance(data[key], dict):
            problems.append(f"{where}: '{key}' must be a mapping, got {_short(data[key])}")
        elif key in ("defaults", "slurm") and not all(isinstance(k, str) for k in data.get(key) or {}):
            problems.append(f"{where}: the keys of '{key}' must be field names, got {_short(list(data[key]))}")
    if isinstance(data.get("slurm"), dict):
        problems += slurm_problems(data["slurm"], where)
    for key, name_key in (("methods", "method"), ("benchmarks", "benchmark")):
        for label, body in (data.get(key) or {}).items() if isinstance(data.get(key), dict) else ():
            if isinstance(body, dict) and name_key in body and not isinstance(body[name_key], str):
                problems.append(f"{where}: {key}.{label}.{name_key} must be a registry name, got "
                                f"{_short(body[name_key])}")
    for key, allowed in SELECTORS.items():
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            problems.append(f"{where}: '{key}' must be a list of mappings with keys {', '.join(allowed)}")
            continue
        for item in value:
            unknown = sorted(str(k) for k in item if k not in allowed)
            if unknown:
                problems.append(f"{where}: {key} entry has unknown key(s) {', '.join(unknown)}; valid keys are: "
                                f"{', '.join(allowed)}")
            for sel in ("methods", "benchmarks"):
                if sel in item and not (isinstance(item[sel], list) and all(isinstance(v, str) for v in item[sel])):
                    problems.append(f"{where}: {key} entry '{sel}' must be a list of labels, got {_short(item[sel])}")
            for sel in ("set", "set_benchmark"):
                if sel in item and not isinstance(item[sel], dict):
                    problems.append(f"{where}: {key} entry '{sel}' must be a mapping of fields, got {_short(item[sel])}")
            seeds = item.get("seeds")
            if "seeds" in item and not (isinstance(seeds, list) and seeds and all(
                    isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
                problems.append(f"{where}: {key} entry 'seeds' must be a non-empty list of integers, got {_short(seeds)}")
    return problems


def slurm_problems(mapping: dict, where: str) -> list[str]:
    """Values of the suite's ``slurm:`` mapping against :class:`runner.slurm.SlurmSettings`' field types."""
    import typing

    from runner.slurm import SlurmSettings

    hints = typing.get_type_hints(SlurmSettings)
    return [f"{where}: slurm {key} must be {_type_name(hints[key])}, got {_short(value)}"
            for key, value in mapping.items()
            if key in hints and not _fits(value, hints[key]) and not (key == "setup" and value is None)]


def _fits(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a simple field type (str, int, float, dict, tuple[str, ...], unions of them)."""
    import types
    import typing

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if origin is tuple:
        inner = typing.get_args(hint)[0]
        return isinstance(value, list) and all(_fits(v, inner) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typing.get_origin(hint) or hint)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) if isinstance(hint, type) else str(hint).replace("NoneType", "null")


def check_suite_shape(data: dict, where: str) -> None:
    problems = suite_shape_problems(data, where)
    if problems:
        raise UserError(problems[0])


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
