"""Output folders checked before any work: the one line for a folder that cannot be made or written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def output_problem(folder: str | Path, flag: str, *, probe: bool = True, name: str | None = None) -> str | None:
    """The one line for ``folder`` (the value of option ``flag``; the line calls it ``name``, default
    ``"<flag> <folder>"``) when it cannot be made or written, else None.

    Judged at its nearest existing parent: that must be a writable folder. With ``probe`` a temporary folder is
    made and removed there, so nothing is left behind; that also catches what permissions do not show (a
    pseudo-filesystem, where even root cannot make a folder). Without it nothing is written (for
    ``--dry-run``).
    """
    name = name or f"{flag} {folder}"
    existing = Path(folder).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{name}: {existing} is not a folder; give another {flag}"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{name}: {existing} is not writable; give a writable {flag}"
    if probe:
        try:
            Path(tempfile.mkdtemp(prefix=".write_probe.", dir=existing)).rmdir()
        except OSError as err:
            return f"{name}: {existing} cannot be written ({err.strerror or err}); give a writable {flag}"
    return None
