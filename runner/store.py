"""The result store: one JSON record per job, written atomically; nothing else is a source of numbers."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from runner.record import Record
from runner.record import load as load_record


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

    def load(self, job_id: str) -> Record | None:
        """The job's record; None when there is none or it cannot be read (never trust a file blindly)."""
        try:
            return load_record(self.record_path(job_id))
        except (FileNotFoundError, ValueError):
            return None

    def is_done(self, job_id: str, config_hash: str) -> bool:
        rec = self.load(job_id)
        return rec is not None and rec.status == "done" and rec.config_hash == config_hash

    def write(self, record: Record) -> Path:
        path = self.record_path(record.job_id)
        atomic_write_text(path, record.to_json())
        return path

    def all_records(self) -> list[Record]:
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
