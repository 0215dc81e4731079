"""The code that defines a job, as a hash: records made by other code are *stale* (``run_suite.py status``).

A job's code is the source of every module in the method's strategy class hierarchy and of the benchmark's
builder and of the backbone builder, plus the modules of ``methods/``, ``benchmarks/`` (and plugin files) that those import, transitively.
Library code (Avalanche, timm, torch) is left out: its versions are in each record's provenance. The hash is not
part of the config hash, so a changed method never makes its done records "not done": it makes them stale, and
``--rerun-stale`` reruns them (docs/record_schema.md).
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

from benchmarks import BENCHMARKS
from benchmarks.backbones import build_backbone
from methods import METHODS

PROJECT_PACKAGES = ("methods", "benchmarks")
# stdlib and installed libraries: never "the job's code" (the project itself is installed editable, outside these)
LIBRARY_DIRS = tuple(Path(p).resolve() for p in {sysconfig.get_paths()[k] for k in ("stdlib", "purelib", "platlib")})


def job_code_hash(method_name: str, benchmark_name: str) -> str:
    """16 hex digits over the sources of the job's modules (sorted by module name)."""
    h = hashlib.sha256()
    for name in job_code_files(method_name, benchmark_name):
        h.update(name.encode() + b"\0" + Path(sys.modules[name].__file__).read_bytes() + b"\0")
    return h.hexdigest()[:16]


def job_code_files(method_name: str, benchmark_name: str) -> list[str]:
    """The modules :func:`job_code_hash` covers (for a reader who asks why a record is stale)."""
    strategy = METHODS.get(method_name).obj
    builder = BENCHMARKS.get(benchmark_name).obj
    roots = [cls.__module__ for cls in inspect.getmro(strategy)] + [builder.__module__, build_backbone.__module__]
    return sorted(_closure(roots))


def _is_project(module: ModuleType | None) -> bool:
    file = getattr(module, "__file__", None)
    if module is None or file is None:
        return False
    if module.__name__.partition(".")[0] in PROJECT_PACKAGES:
        return True
    path = Path(file).resolve()
    return not any(path.is_relative_to(d) for d in LIBRARY_DIRS)  # a plugin file (--import)


def _closure(roots: list[str]) -> set[str]:
    """Project modules among ``roots`` and everything of methods/, benchmarks/ or plugin files they import."""
    seen: set[str] = set()
    todo = [r for r in roots if _is_project(sys.modules.get(r))]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += [m for m in _imports(name) if m not in seen]
    return seen


def _imports(name: str) -> list[str]:
    """Modules of methods/ and benchmarks/ that module ``name`` imports (read from its source)."""
    return [target for target in _import_targets(Path(sys.modules[name].__file__))
            if (target.partition(".")[0] in PROJECT_PACKAGES and target in sys.modules
                and getattr(sys.modules[target], "__file__", None))]


# A file's absolute import targets, by (path, mtime, size): parsing is most of a code hash's cost (about 35 ms a job
# on 2 cores, 19 s for paper_tables' 544 jobs, which a rerun's select_todo hashes), and a suite's jobs share their
# files. An edited file has another mtime and is parsed again; the hash itself always reads the sources.
_TARGETS: dict[tuple[str, int, int], list[str]] = {}


def _import_targets(path: Path) -> list[str]:
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _TARGETS:
        targets = []
        for node in ast.walk(ast.parse(path.read_bytes())):
            if isinstance(node, ast.Import):
                targets += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        _TARGETS[key] = targets
    return _TARGETS[key]
