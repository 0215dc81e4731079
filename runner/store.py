"""The result store: one JSON record per job, written atomically; nothing else is a source of numbers.

Tensor files (per-task checkpoints, resume states) hold tensors and plain data only, so that they load with
``torch.load(weights_only=True)``: a results folder received from someone else can then never run code on the
reader's machine. :func:`atomic_torch_save` refuses to write anything else and :func:`load_tensors` refuses to
read anything else, each with one line.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from core.errors import UserError
from runner.record import Record
from runner.record import load as load_record

# what a tensor file may hold besides tensors: all of it loads with weights_only=True
PLAIN_TYPES = (str, int, float, bool, type(None), torch.Size, torch.dtype)


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
    """Write ``obj`` (tensors and plain data only: :func:`check_plain`) to ``path`` atomically."""
    check_plain(obj, path.name)
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


def check_plain(obj: Any, where: str) -> None:
    """Raise a TypeError naming the first value in ``obj`` that ``weights_only=True`` would refuse to load.

    Types are matched exactly: subclasses (``numpy.float64`` is a float, a namedtuple a tuple) pickle under their
    own names, which the safe loader refuses. Nothing is converted: a numpy float32 turned into a python float
    would continue a resumed run in double precision, so the method that stores it must convert it itself.
    """
    if isinstance(obj, torch.Tensor) or type(obj) in PLAIN_TYPES:  # Tensor: nn.Parameter loads too
        return
    if type(obj) in (dict, OrderedDict):  # a state_dict is an OrderedDict
        for key, value in obj.items():
            if type(key) not in (str, int, float, bool, type(None)):
                raise TypeError(f"{where}: key {key!r} is a {type(key).__qualname__}; {_PLAIN_HINT}")
            check_plain(value, f"{where}[{key!r}]")
        return
    if type(obj) in (list, tuple):
        for i, value in enumerate(obj):
            check_plain(value, f"{where}[{i}]")
        return
    raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}; {_PLAIN_HINT}")


_PLAIN_HINT = ("a checkpoint or resume state holds only tensors and plain data (dict, list, tuple, str, int, float, "
               "bool, None) so that it loads with weights_only=True; convert it in the method's extra_state()")


def load_tensors(path: Path, map_location: Any = "cpu") -> Any:
    """Load a tensor file with ``weights_only=True``; anything else is refused with one line, never unpickled.

    Raises:
        UserError: the file names a python object other than tensors and plain data (unpickling it could run
            code), or it is damaged / not a tensor file at all.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        named = re.search(r"GLOBAL (\S+)", str(err))
        if named:
            raise UserError(f"{path}: refused to load: it names {named.group(1)}, and a checkpoint holds only "
                            "tensors and plain data (unpickling anything else could run code); delete it, or "
                            "recreate it with this version") from None
        reason = re.search(r"WeightsUnpickler error: \s*(.+)", str(err))
        raise UserError(f"{path}: damaged or not a tensor file ({reason.group(1) if reason else _one_line(err)}); "
                        "delete it") from None
    except (RuntimeError, EOFError) as err:
        raise UserError(f"{path}: damaged or not a tensor file ({_one_line(err)}); delete it") from None


def _one_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[0] if lines else type(err).__name__
