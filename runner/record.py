"""The result record: one typed :class:`Record` per job, built here, written and read only through this module.

A record is the only source of every number in tables and figures (``docs/record_schema.md`` is generated from
these dataclasses and tested against them). Schema version 2 added ``code_hash`` (:mod:`runner.code`) and
portable paths; :func:`from_dict` still reads version-1 files (their ``code_hash`` is None: unknown code).

Paths: inside the results folder they are relative to it (``log_path``, ``checkpoint``); a backbone's weights
file inside the repository is relative to the repository; only files that live elsewhere (a user's data root
or weights file) keep their absolute path.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Metrics:
    """Summary metrics (:func:`runner.metrics.summary`), in percent; computed once, when the job finishes."""

    acc: float | None = None  # pooled accuracy after the last task
    aaa: float | None = None  # mean over tasks of the pooled accuracy on the classes seen so far
    task_mean_acc: float | None = None  # mean of the last acc_matrix row
    forgetting: float | None = None  # mean over old tasks of best-ever (final included, so >= 0) minus final accuracy
    til_acc: float | None = None  # task-incremental counterpart of acc
    til_aaa: float | None = None  # task-incremental counterpart of aaa
    task_id_acc: float | None = None  # final test samples predicted into their own task's classes; null: older


@dataclass
class Timings:
    """Wall-clock seconds: ``train_s`` and ``eval_s`` per task, ``total_s`` for the job."""

    train_s: list[float] = field(default_factory=list)  # per task
    eval_s: list[float] = field(default_factory=list)  # per task
    total_s: float | None = None  # the job


@dataclass
class Efficiency:
    """Learnable parameters (last task, head included or not; per task), inference GFLOPs per image (torch's
    flop counter, attention included on every device), floats stored besides parameters (e.g. prototypes; also as
    the SD-LoRA paper's Table 5 counts them) and peak CUDA memory per task (else null)."""

    learnable_params: int | None = None  # parameters trained in the last task (head included); 0: none trained
    learnable_params_excl_head: int | None = None  # the same without the head's
    learnable_params_per_task: list[int] | None = None  # parameters trained in each task, in order
    gflops: float | None = None  # GFLOPs to predict one image (eval mode, adapters merged where a method merges; runner/profile.py)
    stored_features: int | None = None  # floats kept besides parameters (prototypes, bases, statistics)
    stored_features_paper: int | None = None  # as Table 5 counts them (HiDe-Prompt: one mean per class); null: older
    peak_mem_mb: list[float | None] | None = None


@dataclass
class Provenance:
    """Where and with what a record was made (timestamps ISO 8601 UTC)."""

    versions: dict[str, str] | None = None  # python, torch, timm, avalanche, numpy
    git_commit: str | None = None
    git_dirty: bool | None = None
    hostname: str | None = None
    cpu: str | None = None  # CPU model and torch's CPU kernel level (e.g. AVX2, AVX512); null: older
    cpu_isa: str | None = None  # the CPU kernels' pin (--cpu-isa, core/cpu.py): avx2, baseline, native, or why not in force; null: older
    started: str | None = None
    finished: str | None = None
    cuda_visible_devices: str | None = None
    slurm_job_id: str | None = None
    device: str | None = None
    backbone_tag: str | None = None
    weights_path: str | None = None  # relative to the repository when inside it, else absolute
    weights_sha256: str | None = None
    backbone_params: int | None = None


@dataclass
class Record:
    """One job's result (``status`` done) or failure (``status`` failed, ``error`` holds the traceback)."""

    job_id: str  # <method>__<benchmark>__s<seed>[__<backbone>]; the file name
    suite: str  # the suite's name
    method: str  # the suite's label of the method: the table row
    method_name: str  # registry name
    benchmark: str  # the suite's label of the benchmark
    benchmark_name: str  # registry name
    n_tasks: int  # number of tasks N
    seed: int  # training seed (also the class order's unless config.benchmark.order_seed is set)
    backbone: str  # the suite's label of the backbone
    config: dict[str, Any]  # every resolved field: method, benchmark, backbone, seed, runtime
    config_hash: str  # hash of config minus runtime: a rerun skips a done record with the same hash
    status: str  # done or failed
    log_path: str  # the job's log, relative to the results folder
    schema: int = SCHEMA_VERSION  # the version the file was written with
    code_hash: str | None = None  # hash of the source defining the job (runner/code.py); None in schema 1
    checkpoint: str | None = None  # last saved checkpoint, relative to the results folder
    error: str | None = None  # the traceback of a failed job
    class_order: list[int] = field(default_factory=list)  # original label of remapped class i
    classes_per_task: list[int] = field(default_factory=list)  # classes of each task, in order
    benchmark_info: dict[str, Any] = field(default_factory=dict)  # what the benchmark reports of its data
    acc_matrix: list[list[float]] = field(default_factory=list)  # [t][j]: after task t, on task j (class-incr.)
    til_matrix: list[list[float]] = field(default_factory=list)  # same, task-incremental (a diagnostic)
    task_confusion: list[list[float]] = field(default_factory=list)  # [j][k] final: % of task j predicted as task k
    nonfinite_loss: list[int] | None = None  # [task, epoch], 1-based: first mean training loss NaN/inf; null: none
    pooled_acc: list[float] = field(default_factory=list)  # after task t, on all seen classes' test samples
    til_pooled_acc: list[float] = field(default_factory=list)  # same, task-incremental
    avalanche_stream_acc: list[float | None] = field(default_factory=list)  # Avalanche's Top1_Acc_Stream
    metrics: Metrics = field(default_factory=Metrics)  # summary metrics (below)
    timings: Timings = field(default_factory=Timings)  # wall-clock seconds (below)
    efficiency: Efficiency = field(default_factory=Efficiency)  # parameters, GFLOPs, memory (below)
    mechanism: dict[str, Any] = field(default_factory=dict)  # method-specific series (each method's docstring)
    provenance: Provenance = field(default_factory=Provenance)  # versions, host, weights (below)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(_finite(self.to_dict()), indent=1, sort_keys=True) + "\n"

    def last_error_line(self) -> str:
        lines = (self.error or "").strip().splitlines()
        return lines[-1] if lines else "no error text"


PARTS = (Metrics, Timings, Efficiency, Provenance)


def differs_if_known(saved: str | None, now: str | None) -> bool:
    """Whether what a result was made by (a code hash, a CPU kernel pin), as saved with it, differs from ``now``;
    where either is unknown (None: saved before it was recorded, or not asked about) it is not judged."""
    return saved is not None and now is not None and saved != now


def made_under_other_pin(record: Record, pin: str | None) -> bool:
    """Whether a record names a CPU kernel pin (core/cpu.py) other than ``pin``; None: no pin is judged."""
    return differs_if_known(record.provenance.cpu_isa, pin)


def kept_but_stale(record: Record, code_hash: str, pin: str | None) -> bool:
    """Whether a done record for its job's config was made by other code (its ``code_hash`` differs from the job's,
    or is unknown) or under another CPU kernel pin than ``pin``: it still counts as done, and is rerun only on
    request (``--rerun-stale``)."""
    return record.code_hash != code_hash or made_under_other_pin(record, pin)


def from_dict(data: dict[str, Any], where: str = "record") -> Record:
    """A :class:`Record` from a parsed JSON file of schema 1 or 2; anything else is a ValueError naming ``where``."""
    schema = data.get("schema")
    if schema not in READABLE_SCHEMAS:
        raise ValueError(f"{where}: record schema {schema!r} is not supported (readable: {READABLE_SCHEMAS})")
    return _build(Record, data, where)


def load(path: str | Path) -> Record:
    """Read one record file (ValueError when it is not valid JSON or not a record)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    return from_dict(data, str(path))


def portable_path(path: str | Path | None) -> str | None:
    """A path as records keep it: relative to the repository when inside it, else absolute."""
    if path is None:
        return None
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p)


def repo_path(path: str | None) -> Path | None:
    """The file a record's repository-relative (or absolute) path names."""
    return None if path is None else (REPO / path if not Path(path).is_absolute() else Path(path))


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    """``cls(**data)`` with nested parts built from their dicts; unknown keys are an error (the schema is closed)."""
    if not isinstance(data, dict):
        # ValueError, not TypeError: every malformed record is one ValueError for the loader's callers
        raise ValueError(f"{where}: expected a mapping for {cls.__name__}, got {type(data).__name__}")  # noqa: TRY004
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"{where}: unknown {cls.__name__} field(s) {', '.join(unknown)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        part = _part(hints[key])
        kwargs[key] = _build(part, value, f"{where}.{key}") if part is not None and value is not None else value
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field is missing
        raise ValueError(f"{where}: {err}") from None


def _part(hint: Any) -> type | None:
    """The nested dataclass a field holds (``Metrics`` for ``Metrics`` or ``Metrics | None``), else None."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next((a for a in typing.get_args(hint) if a is not type(None)), None)
    return hint if hint in PARTS else None


def _finite(obj: Any) -> Any:
    """JSON has no NaN/inf: store them as null rather than writing invalid JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def schema_table() -> str:
    """The Markdown field tables of ``docs/record_schema.md``, generated from the dataclasses and their comments."""
    out = []
    for cls in (Record, *PARTS):
        out += [f"### `{cls.__name__}`" + ("" if cls is Record else f" (field `{_field_of(cls)}`)"), "",
                "| field | type | meaning |", "|---|---|---|"]
        comments = _comments(cls)
        for f in dataclasses.fields(cls):
            kind = str(f.type).replace("|", "or")
            out.append(f"| `{f.name}` | {kind} | {comments.get(f.name, '')} |".replace("|  |", "| |"))
        out.append("")
    return "\n".join(out)


def _field_of(part: type) -> str:
    return next(f.name for f in dataclasses.fields(Record) if _part(typing.get_type_hints(Record)[f.name]) is part)


def _comments(cls: type) -> dict[str, str]:
    """Trailing ``# comment`` of each field line in the class source (the schema's meaning column)."""
    out = {}
    for line in inspect.getsource(cls).splitlines():
        name, sep, rest = line.strip().partition(":")
        if sep and name.isidentifier() and "#" in rest:
            out[name] = rest.split("#", 1)[1].strip()
    return out
