"""Backbone weights: every pretrained timm tag a suite names, into the Hugging Face cache that timm reads offline.

``huggingface_hub.hf_hub_download`` puts the file where :func:`benchmarks.backbones.build_backbone` finds it with
``HF_HUB_OFFLINE=1``. ``HF_ENDPOINT`` (read at call time here) points it at another Hub-compatible server. A
backbone with ``weights`` set (``--weights``) is a local file: it is hashed, never downloaded.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.backbones import BackboneConfig, sha256_of
from benchmarks.prepare.fetch import Offline
from benchmarks.prepare.table import is_sha256, unique
from core.errors import UserError

# What timm loads from a timm/<arch>.<tag> repo, in the order benchmarks.backbones looks for it.
HUB_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class WeightItem:
    """The weights of one backbone tag: a local file (``--weights``) or a Hugging Face repo."""

    tag: str
    repo_id: str | None = None
    local: Path | None = None

    def describe(self) -> str:
        if self.local is not None:
            return f"{self.tag}: local file {self.local} (--weights)"
        return f"{self.tag}: {HUB_FILES[0]} of https://huggingface.co/{self.repo_id} -> Hugging Face cache"


def hub_repo(tag: str) -> str:
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(tag)
    except RuntimeError as err:  # timm: "Invalid pretrained tag (...)"
        raise UserError(f"backbone {tag!r}: {str(err).rstrip('.')}; give a full timm tag (timm.list_pretrained())") from None
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        raise UserError(f"backbone {tag!r} has no Hugging Face repo in timm; pass --weights LABEL=PATH for it")
    return repo


def weight_items(backbones: Iterable[BackboneConfig]) -> list[WeightItem]:
    """One item per pretrained backbone config (random-init ones need nothing)."""
    items = []
    for cfg in unique([b for b in backbones if b.pretrained]):
        local = cfg.resolved_weights()  # --weights, or a file committed with the repository
        items.append(WeightItem(cfg.tag, local=local) if local is not None else WeightItem(cfg.tag, hub_repo(cfg.tag)))
    return unique(items)


def cached(item: WeightItem, cache_dir: str | None = None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    for name in HUB_FILES:
        found = try_to_load_from_cache(item.repo_id, name, cache_dir=cache_dir)
        if isinstance(found, str):
            return Path(found)
    return None


@contextlib.contextmanager
def hub_online() -> Iterator[None]:
    """Let huggingface_hub reach the Hub for this block although the runner sets ``HF_HUB_OFFLINE=1``.

    huggingface_hub reads the variable once, at import, into ``constants.HF_HUB_OFFLINE``; the runner keeps it
    set so that training never waits on the network, so only this explicit fetch step lifts it.
    """
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = False
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def fetch_weights(item: WeightItem, cache_dir: str | None = None) -> Path:
    """Download the first of :data:`HUB_FILES` the repo has; a connection failure raises :class:`Offline`."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RemoteEntryNotFoundError

    endpoint = os.environ.get("HF_ENDPOINT") or None
    with hub_online():
        for name in HUB_FILES:
            try:
                return Path(hf_hub_download(item.repo_id, name, cache_dir=cache_dir, endpoint=endpoint))
            except RemoteEntryNotFoundError:
                continue
            except LocalEntryNotFoundError:
                # hf_hub_download reports an unreachable Hub as "not in the local cache"
                raise Offline([offline_line(item)]) from None
    raise UserError(
        f"{item.tag}: the Hugging Face repo {item.repo_id} has none of {', '.join(HUB_FILES)}; "
        "pass --weights LABEL=PATH"
    )


def offline_line(item: WeightItem) -> str:
    return (
        f"{item.tag}: put {HUB_FILES[0]} of https://huggingface.co/{item.repo_id} in the Hugging Face cache "
        f"(`hf download {item.repo_id} {HUB_FILES[0]}` on a machine with network, then copy its cache folder "
        f"models--{item.repo_id.replace('/', '--')}), or pass --weights LABEL=PATH"
    )


def prepare_weights(
    items: Iterable[WeightItem], *, offline: bool = False, cache_dir: str | None = None, log=print
) -> dict[str, dict]:
    """Make every item's weights available and return ``{tag: {source, path, sha256}}``.

    The Hub stores large files by their sha256 (the blob name in the cache, also its ETag), so a fetched file
    whose content disagrees with that name is rejected.
    """
    report: dict[str, dict] = {}
    missing: list[str] = []
    for item in items:
        if item.local is not None:
            report[item.tag] = {"source": "local file", "path": str(item.local), "sha256": sha256_of(str(item.local))}
            continue
        path = cached(item, cache_dir)
        if path is None and offline:
            missing.append(offline_line(item))
            continue
        if path is None:
            log(f"{item.tag}: downloading from {item.repo_id}")
            try:
                path = fetch_weights(item, cache_dir)
            except Offline as err:
                missing += err.lines
                continue
        digest = sha256_of(str(path))
        blob = Path(os.path.realpath(path)).name
        if is_sha256(blob) and blob != digest:
            raise UserError(
                f"{item.tag}: {path} has sha256 {digest} but the Hub names it {blob}; delete "
                f"{Path(os.path.realpath(path))} and run again"
            )
        report[item.tag] = {"source": f"hf://{item.repo_id}", "path": str(path), "sha256": digest}
        log(f"{item.tag}: ok (sha256 {digest[:12]}...)")
    if missing:
        raise Offline(missing)
    return report
