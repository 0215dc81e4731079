"""Fetch, verify and lay out the paper's datasets and backbone weights (``python -m benchmarks.prepare``).

    items = plan([("imagenet_r", cfg)], data_root)    # what is needed: source, size, target path
    report = prepare(items)                            # download, check digests, extract, check with the reader
    prepare_jobs(benchmarks, backbones, results_dir)   # the runner's --prepare: datasets + weights, recorded

Sources, published digests and layouts are data (``sources.yaml``); docs/datasets.md is the user's guide.
A dataset that its reader already accepts is left alone, so a second call verifies and does nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.prepare.fetch import (
    LOCK_FILE,
    Offline,
    check_disk,
    check_online,
    download,
    extract,
    is_present,
    read_lock,
)
from benchmarks.prepare.table import Item, Table, dataset_key, describe_source, human_size, load_table, plan
from benchmarks.prepare.weights import WeightItem, prepare_weights, weight_items
from core.errors import UserError

__all__ = ["Item", "Offline", "Table", "WeightItem", "listing", "load_table", "plan", "prepare", "prepare_jobs"]

RECORD_FILE = "prepared.json"  # next to a suite's results: what was prepared, with sha256s


def read(benchmark: str, cfg: Any):
    """Read the data with the very loader the benchmark uses (benchmarks/paper_datasets.py)."""
    from benchmarks import paper_datasets as pd

    loaders: dict[str, Callable] = {
        "cifar100": pd.load_cifar100,
        "imagenet_r": pd.load_imagenet_r,
        "imagenet_a": lambda c: pd.load_pilot_folders(pd.IMAGENET_A, c.data_root),
        "cub200": lambda c: pd.load_pilot_folders(pd.CUB, c.data_root),
        "domainnet": pd.load_domainnet,
    }
    return loaders[benchmark](cfg)


def _groups(items: Sequence[Item]) -> dict[tuple[str, Path], list[Item]]:
    groups: dict[tuple[str, Path], list[Item]] = {}
    for item in items:
        groups.setdefault((dataset_key(item.benchmark, item.cfg), item.root.resolve()), []).append(item)
    return groups


def prepare(
    items: Sequence[Item],
    *,
    offline: bool = False,
    keep_archives: bool = False,
    quiet: bool = False,
    retries: int = 3,
    log: Callable[[str], None] = print,
) -> dict[str, dict]:
    """Make every planned dataset readable; return ``{dataset: {root, n_train, n_test, n_classes, items}}``.

    Args:
        items: from :func:`plan`.
        offline: never use the network; archives already in ``<root>/.downloads`` are still used.
        keep_archives: keep each archive in ``<root>/.downloads`` after extracting it.
        quiet: no progress bars.
        retries: per-download retries after a broken connection (each resumes where the last one stopped).
        log: where progress lines go.

    Raises:
        UserError: a source failed, a digest did not match, an archive was corrupt, or the reader rejected the
            result; :class:`Offline` (one line per item) when the network is needed and not there.
    """
    groups = _groups(items)
    todo: list[Item] = []
    for (name, root), group in groups.items():
        try:
            read(group[0].benchmark, group[0].cfg)
            log(f"{name}: already readable under {root}, nothing to do")
        except UserError:
            todo += [item for item in group if not is_present(item)]
    if todo:
        for root in {item.root for item in todo}:
            root.mkdir(parents=True, exist_ok=True)
        check_online(todo, offline)
        check_disk(todo)
        for item in todo:
            path, _ = download(item, quiet=quiet, retries=retries, log=log)
            log(f"{item.key}: verified, extracting to {item.target_text()}")
            extract(item, path, keep_archive=keep_archives)
    report = {}
    for (name, root), group in groups.items():
        try:
            data = read(group[0].benchmark, group[0].cfg)
        except UserError as err:
            raise UserError(f"{name}: prepared under {root}, but its reader rejects it: {err}") from None
        lock = read_lock(root)
        report[name] = {
            "root": str(root),
            "n_classes": data.n_classes,
            "n_train": len(data.train_targets),
            "n_test": len(data.test_targets),
            "items": {item.key: lock.get(item.key, {"note": "laid out by hand"}) for item in group},
        }
        log(f"{name}: ok, {data.n_classes} classes, {len(data.train_targets)} train / {len(data.test_targets)} test")
    return report


def _on_disk(item: Item) -> bool:
    """For a listing: is the item's dataset already accepted (paths only, no full scan) or the item extracted?"""
    try:
        item.cfg.validate_paths()
        return True
    except UserError:
        return is_present(item)


def listing(items: Sequence[Item], weights: Sequence[WeightItem] = ()) -> list[str]:
    """What :func:`prepare` would fetch, one line each (source, size where known, target), fetching nothing."""
    lines = []
    for item in items:
        state = "on disk" if _on_disk(item) else "to fetch"
        source = describe_source(item.spec.sources[0])
        more = f" (+{len(item.spec.sources) - 1} mirror)" if len(item.spec.sources) > 1 else ""
        lines.append(
            f"{item.key:24s} {state:8s} {human_size(item.spec.size):>12s}  {source}{more} -> {item.target_text()}"
        )
    for w in weights:
        lines.append(f"{'weights':24s} {'':8s} {'':>12s}  {w.describe()}")
    todo = [item for item in items if not _on_disk(item)]
    known = [item.spec.size for item in todo if item.spec.size is not None]
    if todo:
        unknown = len(todo) - len(known)
        sized = f"{human_size(sum(known))} in the {len(known)} of published size" if known else "none of published size"
        lines.append(f"{len(todo)} file(s) to fetch: " + (f"{sized}, {unknown} of unpublished size" if unknown and known
                                                          else sized))
    return lines


def prepare_jobs(
    benchmarks: Iterable[tuple[str, Any]],
    backbones: Iterable[Any],
    results_dir: str | Path | None,
    *,
    dry_run: bool = False,
    offline: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """The runner's ``--prepare``: every dataset and backbone the jobs name, recorded in ``results_dir``.

    Args:
        benchmarks: ``(registry name, config)`` of each job (repeats are fine).
        backbones: each job's backbone config (``--weights`` already applied).
        results_dir: where ``prepared.json`` (sha256 of every archive and weights file) is written.
        dry_run: only list what would be fetched.
        offline: never use the network.
        log: where progress lines go.
    """
    items = plan(benchmarks)
    weights = weight_items(backbones)
    if dry_run:
        log(f"--prepare: {len(items)} dataset files and {len(weights)} backbone weights")
        for line in listing(items, weights):
            log("  " + line)
        return {}
    lines: list[str] = []
    record: dict[str, Any] = {}
    try:
        record["datasets"] = prepare(items, offline=offline, log=log)
    except Offline as err:  # still look at the weights, so that one message lists everything to copy
        lines += err.lines
    try:
        record["weights"] = prepare_weights(weights, offline=offline, log=log)
    except Offline as err:
        lines += err.lines
    if lines:
        raise Offline(lines)
    if results_dir is not None:
        out = Path(results_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / RECORD_FILE).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        log(f"prepared: {out / RECORD_FILE} (sha256 of every download; data-root lock files: {LOCK_FILE})")
    return record
