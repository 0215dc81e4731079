"""The sources table (``sources.yaml``) and the plan: which files a set of benchmark configs needs, and where.

The table is data: one entry per downloaded file (an "item") with its sources in order of preference, its
published size and digests (and who published them), its archive format and where its contents go under the
data root. ``datasets`` maps a benchmark (``imagenet_r:pilot``, ``domainnet``...) to the items it reads.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.errors import UserError

TABLE_PATH = Path(__file__).resolve().parent / "sources.yaml"
FORMATS = ("zip", "tar", "tar.gz", "tgz", "file")
HASH_KINDS = ("sha256", "md5", "git_blob")
DOWNLOADS = ".downloads"  # under the data root: finished downloads and gdown's resumable .part files
DRIVE_URL_ENV = "SDLB_DRIVE_URL"  # template with {id}; tests point it at a local server
DRIVE_URL = "https://drive.google.com/uc?id={id}"
MIRROR_ENV = "SDLB_MIRROR"  # http(s) sources are fetched from $SDLB_MIRROR/<host>/<path> when set


@dataclass(frozen=True)
class ItemSpec:
    """One row of the sources table (see the header of ``sources.yaml`` for each field)."""

    key: str
    title: str
    sources: tuple[str, ...]
    file: str
    format: str
    dest: str
    members: tuple[str, ...]
    size: int | None = None
    hashes: dict[str, str] = field(default_factory=dict, hash=False)
    hash_source: str = ""

    def __post_init__(self) -> None:
        where = f"sources table, item {self.key}"
        if not self.sources or self.format not in FORMATS or not self.members or not self.file:
            raise UserError(f"{where}: needs sources, file, members and a format in {', '.join(FORMATS)}")
        unknown = sorted(set(self.hashes) - set(HASH_KINDS))
        if unknown:
            raise UserError(f"{where}: unknown hash kind(s) {', '.join(unknown)}; use {', '.join(HASH_KINDS)}")
        if self.format == "file" and (len(self.members) != 1 or self.members[0] != self.file):
            raise UserError(f"{where}: a plain file has one member, its own name {self.file!r}")


@dataclass(frozen=True)
class Table:
    items: dict[str, ItemSpec]
    datasets: dict[str, tuple[str, ...]]


def load_table(path: Path | None = None) -> Table:
    """Read ``sources.yaml`` (or ``path``) into item specs and the benchmark -> items map."""
    with open(path or TABLE_PATH, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    items = {}
    for key, row in doc["items"].items():
        row = dict(row)
        row["sources"] = tuple(row["sources"])
        row["members"] = tuple(row["members"])
        row["hashes"] = {k: str(v).lower() for k, v in (row.get("hashes") or {}).items()}
        items[key] = ItemSpec(key=key, **row)
    datasets = {name: tuple(keys) for name, keys in doc["datasets"].items()}
    for name, keys in datasets.items():
        missing = [k for k in keys if k not in items]
        if missing:
            raise UserError(f"sources table: dataset {name} names unknown item(s) {', '.join(missing)}")
    return Table(items, datasets)


def source_url(source: str) -> str:
    """The URL a source is fetched from: Drive ids through ``$SDLB_DRIVE_URL``, URLs through ``$SDLB_MIRROR``."""
    if source.startswith("drive:"):
        return os.environ.get(DRIVE_URL_ENV, DRIVE_URL).format(id=source[len("drive:") :])
    mirror = os.environ.get(MIRROR_ENV)
    if not mirror:
        return source
    parts = urllib.parse.urlsplit(source)
    rest = parts.path + (f"?{parts.query}" if parts.query else "")
    return f"{mirror.rstrip('/')}/{parts.netloc}{rest}"


def describe_source(source: str) -> str:
    """How a person finds a source by hand."""
    if source.startswith("drive:"):
        return f"https://drive.google.com/file/d/{source[len('drive:') :]} (Google Drive)"
    return source


@dataclass(frozen=True)
class Item:
    """A table row placed under one data root, for one benchmark config that needs it."""

    spec: ItemSpec
    root: Path
    benchmark: str  # registry name (cifar100, imagenet_r, ...)
    cfg: Any = field(compare=False, hash=False)  # the benchmark config whose reader checks the result

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def download_path(self) -> Path:
        return self.root / DOWNLOADS / self.spec.file

    @property
    def targets(self) -> list[Path]:
        return [self.root / self.spec.dest / m for m in self.spec.members]

    def target_text(self) -> str:
        base = self.root / self.spec.dest
        members = self.spec.members
        return str(base / members[0]) if len(members) == 1 else f"{base}/{{{','.join(members)}}}"


def dataset_key(benchmark: str, cfg: Any) -> str:
    """The table's key for a benchmark config: ``imagenet_r`` depends on its ``split``."""
    split = getattr(cfg, "split", None)
    return f"{benchmark}:{split}" if split else benchmark


def plan(
    names_and_cfgs: Iterable[tuple[str, Any]], data_root: str | Path | None = None, table: Table | None = None
) -> list[Item]:
    """The items that the given ``(benchmark name, config)`` pairs need, each once per data root.

    Args:
        names_and_cfgs: benchmark registry names with their configs (a suite's jobs repeat them: deduplicated).
        data_root: overrides each config's own data root (``cfg.data_root``) when given.
        table: the sources table (default: ``sources.yaml``).

    Returns:
        Items in table order; benchmarks that read no downloaded data (synthetic, fmnist...) contribute none.
    """
    table = table or load_table()
    items: dict[tuple[Path, str], Item] = {}
    for name, cfg in names_and_cfgs:
        key = dataset_key(name, cfg)
        if key not in table.datasets:
            continue
        root = Path(data_root).expanduser() if data_root else Path(cfg.data_root)
        for item_key in table.datasets[key]:
            items.setdefault((root.resolve(), item_key), Item(table.items[item_key], root, name, cfg))
    return list(items.values())


def preparable(table: Table | None = None) -> list[str]:
    """Benchmark names (with a split where it matters) that ``python -m benchmarks.prepare`` accepts."""
    return sorted((table or load_table()).datasets)


def human_size(n: int | None) -> str:
    if n is None:
        return "size unknown"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def is_sha256(text: str) -> bool:
    return re.fullmatch(r"[0-9a-f]{64}", text) is not None


def unique(values: Sequence) -> list:
    seen: list = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen
