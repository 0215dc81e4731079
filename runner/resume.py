"""Resume inside a job: after each finished experience a job saves everything it needs to continue from there.

A job killed mid-experience (pre-emption, time limit, a dead worker) and started again with the same config
skips the experiences it had finished and continues with the next one. On CPU the final record equals that of an
uninterrupted run number for number, because the state saved at an experience boundary is complete:

* the method's state (:meth:`methods.base.CILStrategy.checkpoint`, restored into a freshly built strategy);
* the record fields so far (accuracy rows, timings, peak memory) and the Avalanche clock's counters;
* the RNG states of python, numpy, torch (and CUDA when present), taken *after* the experience's evaluation:
  the next experience's data-loader shuffling and head initialisation draw from the torch global RNG, so
  restoring it at the same point makes the continued run draw exactly what the uninterrupted one drew.

Files: ``<results>/checkpoints/<job_id>/resume.pt`` (written atomically; tensors and plain data only, loaded
with ``weights_only=True`` and anything else refused: :func:`runner.store.load_tensors`) and ``resume.json`` beside it (a small
summary that ``run_suite.py status`` reads without loading tensors). Both are removed when the job finishes
``done``; a failed job keeps them, so ``--retry-failed`` continues where it stopped. A resume state whose
config hash differs from the job's is ignored (and replaced by the next save), and so is one saved by other code
(its job's ``code_hash``, :mod:`runner.code`) or under another CPU kernel pin (``--cpu-isa``, core/cpu.py): its
experiences ran other code or kernels, and a record continued from it would name only those of its last ones. The
job starts over and its log says why. States saved before these were recorded are taken as they are.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from core.errors import UserError
from runner.record import differs_if_known
from runner.store import ResultStore, atomic_torch_save, atomic_write_text, load_tensors

if TYPE_CHECKING:
    from runner.jobs import Job

FORMAT = 1
CLOCK_FIELDS = ("train_iterations", "train_exp_counter", "train_exp_epochs", "train_exp_iterations",
                "train_epoch_iterations", "total_iterations")


def resume_path(store: ResultStore, job_id: str) -> Path:
    return store.checkpoint_dir(job_id) / "resume.pt"


def summary_path(store: ResultStore, job_id: str) -> Path:
    return store.checkpoint_dir(job_id) / "resume.json"


def capture_rng() -> dict[str, Any]:
    """RNG states as tensors and plain types only, so that the file loads with ``weights_only=True``."""
    np_state = np.random.get_state()
    state = {
        "python": _plain(random.getstate()),
        "numpy": {"key": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(obj: Any) -> Any:
    if isinstance(obj, tuple):
        return [_plain(v) for v in obj]
    return obj


def save(store: ResultStore, job_id: str, config_hash: str, finished: int, n_tasks: int, strategy,
         progress: dict[str, Any], pin: str | None = None, code_hash: str | None = None) -> None:
    """Save the state after experience ``finished`` (0-based) of ``n_tasks``.

    Args:
        store: the job's result store.
        job_id: the job.
        config_hash: the job's config hash; a later start with another hash ignores this state.
        finished: index of the experience just finished (trained and evaluated).
        n_tasks: number of experiences of the job.
        strategy: the method's strategy (its ``checkpoint()`` is saved).
        progress: record fields so far (JSON-serialisable: accuracy rows, timings, peak memory).
        pin: the CPU kernel pin the experiences ran under (``provenance.cpu_isa``), and
        code_hash: the job's code hash: a later start under another pin or code ignores this state.
    """
    clock = getattr(strategy, "clock", None)
    state = {
        "format": FORMAT, "config_hash": config_hash, "code_hash": code_hash, "cpu_isa": pin, "finished": finished,
        "n_tasks": n_tasks,
        # JSON keeps floats exact (repr round-trips) and the file loadable with weights_only=True
        "progress": json.dumps(progress), "strategy": strategy.checkpoint(), "rng": capture_rng(),
        "clock": {f: int(getattr(clock, f)) for f in CLOCK_FIELDS if hasattr(clock, f)},
    }
    atomic_torch_save(state, resume_path(store, job_id))
    summary = {"config_hash": config_hash, "code_hash": code_hash, "cpu_isa": pin, "finished_tasks": finished + 1,
               "n_tasks": n_tasks,
               "saved": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    atomic_write_text(summary_path(store, job_id), json.dumps(summary) + "\n")


def load(store: ResultStore, job_id: str, config_hash: str, log: logging.Logger,
         pin: str | None = None, code_hash: str | None = None) -> dict[str, Any] | None:
    """The saved state of ``job_id`` if there is one for this config, code and CPU kernel pin, else None (a
    mismatch is logged)."""
    path = resume_path(store, job_id)
    if not path.exists():
        return None
    try:
        state = load_tensors(path)  # weights_only=True, always: a results folder may come from someone else
    except (OSError, UserError) as err:  # damaged or refused: it cannot resume anything, start over
        log.warning("resume state unusable, starting from the first experience: %s", err)
        return None
    if not isinstance(state, dict):
        log.warning("resume state %s is not a resume state (a %s): starting from the first experience", path,
                    type(state).__name__)
        return None
    if state.get("format") != FORMAT or state.get("config_hash") != config_hash:
        log.info("resume state %s is for config %s, not %s: ignored", path, state.get("config_hash"), config_hash)
        return None
    elsewhere = made_elsewhere(state, pin, code_hash)
    if elsewhere:
        log.warning("resume state %s was saved %s: ignored, starting from the first experience", path, elsewhere)
        return None
    state["progress"] = json.loads(state["progress"])
    return state


def apply(state: dict[str, Any], strategy) -> None:
    """Restore the strategy, the Avalanche clock and the RNGs from a loaded state (RNGs last)."""
    strategy.restore(state["strategy"])
    clock = getattr(strategy, "clock", None)
    for name, value in state.get("clock", {}).items():
        setattr(clock, name, value)
    restore_rng(state["rng"])


def clear(store: ResultStore, job_id: str) -> None:
    """Remove the resume state of a finished job (the per-task checkpoints stay)."""
    for path in (resume_path(store, job_id), summary_path(store, job_id)):
        path.unlink(missing_ok=True)


def made_elsewhere(saved: dict[str, Any], pin: str | None = None, code_hash: str | None = None) -> str:
    """Why a resume state (or its summary) may not continue under ``pin`` and ``code_hash`` ("" where it may): it
    was saved by other code or under another CPU kernel pin. What a state does not record, or a caller does not ask
    about (None), is not judged."""
    if differs_if_known(saved.get("code_hash"), code_hash):
        return f"by other code (code {saved['code_hash']}, now {code_hash})"
    if differs_if_known(saved.get("cpu_isa"), pin):
        return f"under CPU kernel pin {saved['cpu_isa']}, not {pin}"
    return ""


def resumes(summary: dict[str, Any] | None, job: Job, pin: str | None) -> bool:
    """Whether ``job``, with this summary, continues after its finished tasks (same config, code and CPU kernel
    pin). The job's code hash, which parses its sources, is computed only where a summary for its config exists."""
    return (summary is not None and summary.get("config_hash") == job.config_hash()
            and not made_elsewhere(summary, pin, job.code_hash()))


def read_summary(store: ResultStore, job_id: str) -> dict[str, Any] | None:
    try:
        return json.loads(summary_path(store, job_id).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
