"""The result store: one JSON record per job, written atomically; nothing else is a source of numbers."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


class ResultStore:
    """``<root>/records/<job_id>.json``, ``<root>/logs/<job_id>.log``, ``<root>/checkpoints/<job_id>/``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def records_dir(self) -> Path:
        return self.root / "records"

    def record_path(self, job_id: str) -> Path:
        return self.records_dir / f"{job_id}.json"

    def log_path(self, job_id: str) -> Path:
        return self.root / "logs" / f"{job_id}.log"

    def checkpoint_dir(self, job_id: str) -> Path:
        return self.root / "checkpoints" / job_id

    def load(self, job_id: str) -> dict | None:
        path = self.record_path(job_id)
        try:
            with open(path) as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:  # cannot happen with atomic writes, but never trust a file blindly
            return None

    def is_done(self, job_id: str, config_hash: str) -> bool:
        rec = self.load(job_id)
        return rec is not None and rec.get("status") == "done" and rec.get("config_hash") == config_hash

    def write(self, record: dict[str, Any]) -> Path:
        path = self.record_path(record["job_id"])
        atomic_write_text(path, json.dumps(_finite(record), indent=1, sort_keys=True) + "\n")
        return path

    def all_records(self) -> list[dict]:
        out = []
        for path in sorted(self.records_dir.glob("*.json")):
            rec = self.load(path.stem)
            if rec is not None:
                out.append(rec)
        return out


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file in the same folder, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _finite(obj: Any) -> Any:
    """JSON has no NaN/inf: store them as null rather than writing invalid JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
