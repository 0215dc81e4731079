"""Download, verify and extract one item of the sources table.

* Downloads go through ``gdown`` for every source (it speaks Google Drive and plain HTTP alike): progress bar,
  resumable ``.part`` file with a ``Range`` request, retries. A finished download lies in ``<root>/.downloads``.
* Digests: the table's published ones (sha256, md5, git blob SHA-1) are checked; every download's sha256 is
  also written to ``<root>/prepare-lock.json`` on first download, and later downloads must match it. A mismatch
  deletes the download and extracts nothing.
* Extraction goes into a temporary folder under the data root, then each member is renamed into place (same
  file system, so each rename is atomic); a corrupt archive leaves nothing behind.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import time
import urllib.parse
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.prepare.table import Item, describe_source, human_size, source_url
from core.errors import UserError

LOCK_FILE = "prepare-lock.json"
PROBE_TIMEOUT_S = 5.0


class Offline(UserError):
    """Items need the network and none of their sources answers: one line per item says what to copy where."""

    def __init__(self, lines: Sequence[str]):
        self.lines = list(lines)
        super().__init__("no network for the sources of what is missing; copy these by hand:\n" + "\n".join(lines))


# ----------------------------------------------------------------------------------------------------------------
# Lock file


def read_lock(root: Path) -> dict:
    path = root / LOCK_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err}); fix or delete it (it only records hashes)") from None


def write_lock(root: Path, key: str, **fields) -> None:
    """Merge ``fields`` into the lock entry of ``key`` (written to a temporary file, then renamed)."""
    lock = read_lock(root)
    lock.setdefault(key, {}).update(fields)
    tmp = root / f".{LOCK_FILE}.tmp"
    tmp.write_text(json.dumps(lock, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, root / LOCK_FILE)


def is_present(item: Item) -> bool:
    """Extracted by an earlier call (the lock says so) and every member still in place."""
    entry = read_lock(item.root).get(item.key, {})
    return bool(entry.get("extracted")) and all(t.exists() for t in item.targets)


# ----------------------------------------------------------------------------------------------------------------
# Digests


def digests(path: Path) -> dict[str, str]:
    """sha256, md5 and git blob SHA-1 of a file, in one pass."""
    size = path.stat().st_size
    sha256, md5, blob = hashlib.sha256(), hashlib.md5(), hashlib.sha1()
    blob.update(b"blob %d\0" % size)  # git hashes a blob with its header (git hash-object)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha256.update(chunk)
            md5.update(chunk)
            blob.update(chunk)
    return {"sha256": sha256.hexdigest(), "md5": md5.hexdigest(), "git_blob": blob.hexdigest()}


def verify(item: Item, path: Path, source: str) -> dict[str, str]:
    """Check the published digests and the lock file; on a mismatch delete the download and raise one line."""
    got = digests(path)
    expected = [(kind, value, item.spec.hash_source) for kind, value in item.spec.hashes.items()]
    locked = read_lock(item.root).get(item.key, {}).get("sha256")
    if locked:
        expected.append(("sha256", locked, f"{LOCK_FILE}, first download"))
    for kind, value, origin in expected:
        if got[kind] != value:
            path.unlink()
            raise UserError(
                f"{item.key}: {kind} of {item.spec.file} from {source} is {got[kind]}, expected {value} ({origin}); "
                "the download was deleted and nothing was extracted: run again to download it again"
            )
    write_lock(
        item.root,
        item.key,
        file=item.spec.file,
        sha256=got["sha256"],
        size=path.stat().st_size,
        source=source,
        checked=sorted(item.spec.hashes) or ["lock file only"],
    )
    return got


# ----------------------------------------------------------------------------------------------------------------
# Network


def reachable(url: str) -> bool:
    """Whether the host of ``url`` answers at all (any HTTP status counts): the offline test, a few seconds."""
    import requests

    parts = urllib.parse.urlsplit(url)
    try:
        requests.head(f"{parts.scheme}://{parts.netloc}/", timeout=PROBE_TIMEOUT_S, allow_redirects=False)
    except (requests.ConnectionError, requests.Timeout):
        return False
    return True


def copy_by_hand(item: Item) -> str:
    """The line that tells a person without network what to copy where."""
    sources = " or ".join(describe_source(s) for s in item.spec.sources)
    return (
        f"{item.key}: copy {item.spec.file} ({sources}) to {item.download_path}, then run again; "
        f"or lay out {item.target_text()} yourself"
    )


def check_online(items: Sequence[Item], offline: bool) -> None:
    """Raise :class:`Offline` naming every item to download when no source of one of them answers."""
    needs = [item for item in items if not item.download_path.is_file()]
    if not needs:
        return
    cache: dict[str, bool] = {}

    def answers(source: str) -> bool:
        url = source_url(source)
        host = urllib.parse.urlsplit(url).netloc
        if host not in cache:
            cache[host] = reachable(url)
        return cache[host]

    if offline or not all(any(answers(s) for s in item.spec.sources) for item in needs):
        raise Offline([copy_by_hand(item) for item in needs])


def check_disk(items: Sequence[Item]) -> None:
    """Archives are deleted once extracted: the peak is every extracted item plus the largest archive."""
    sizes = [item.spec.size for item in items if item.spec.size is not None and not item.download_path.is_file()]
    if not sizes:
        return
    need = sum(sizes) + max(sizes)
    root = items[0].root
    free = shutil.disk_usage(root).free
    if free < need:
        raise UserError(
            f"not enough disk space under {root}: the downloads need about {human_size(need)} (archives and what "
            f"they extract to), {human_size(free)} is free; free some space or pass another --data-root"
        )


RANGE_REFUSED = "did not honor the requested byte range"  # gdown's DownloadError when a resume is refused


def partial_files(path: Path) -> list[Path]:
    """gdown's ``.part`` files of ``path`` (its name, 8 random characters, ``.part``), which a later run resumes."""
    return [p for p in path.parent.glob(f"{glob.escape(path.name)}*.part") if len(p.name) == len(path.name) + 13]


def download(
    item: Item, *, quiet: bool = False, retries: int = 3, log: Callable[[str], None] = print
) -> tuple[Path, str]:
    """The verified download of ``item`` (already there, or fetched from its first source that works)."""
    import gdown
    import requests

    path = item.download_path
    if path.is_file():  # a finished download, or an archive copied by hand
        verify(item, path, f"{path} (already there)")
        return path, str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for source in item.spec.sources:
        url = source_url(source)
        log(f"{item.key}: {item.spec.file} ({human_size(item.spec.size)}) from {describe_source(source)}")
        try:
            # resume=True continues the .part file a broken run left next to the output (a Range request)
            try:
                gdown.download(url, str(path), quiet=quiet, resume=True, timeout=(10, 120), retries=retries)
            except gdown.exceptions.DownloadError as err:
                if RANGE_REFUSED not in str(err):
                    raise
                # a server that ignores Range (e.g. a plain static mirror) cannot continue the .part: start over
                for part in partial_files(path):
                    part.unlink()
                log(f"{item.key}: {describe_source(source)} cannot resume a partial download; fetching it whole")
                gdown.download(url, str(path), quiet=quiet, resume=True, timeout=(10, 120), retries=retries)
        except (
            gdown.exceptions.DownloadError,
            gdown.exceptions.FileURLRetrievalError,
            requests.RequestException,
            OSError,
        ) as err:
            failures.append(f"{describe_source(source)}: {' '.join(str(err).split())[:300]}")
            continue
        try:
            verify(item, path, url)
        except UserError as err:
            failures.append(str(err))
            continue
        return path, url
    raise UserError(
        f"{item.key}: no source gave a valid {item.spec.file} ({'; '.join(failures)}); run again to resume, or "
        f"copy the file to {path}"
    )


# ----------------------------------------------------------------------------------------------------------------
# Extraction


def _unpack(path: Path, fmt: str, into: Path) -> None:
    if fmt == "zip":
        with zipfile.ZipFile(path) as zf:
            zf.extractall(into)  # zipfile drops absolute and ".." parts of member names
    else:
        mode = "r:" if fmt == "tar" else "r:gz"
        with tarfile.open(path, mode) as tf:
            tf.extractall(into, filter="data")  # refuses links and paths that leave the folder


def _locate(tree: Path, members: Sequence[str]) -> Path:
    """The shallowest folder of ``tree`` that holds every member (archives differ in their top level)."""
    for depth in range(4):
        level = [tree] if depth == 0 else tree.glob("/".join(["*"] * depth))
        for folder in sorted(p for p in level if p.is_dir()):
            if all((folder / m).exists() for m in members):
                return folder
    raise FileNotFoundError(f"no folder in the archive holds {', '.join(members)}")


def _place(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``; a folder that exists already receives ``src``'s entries one by one."""
    if dst.is_dir() and src.is_dir():
        for child in sorted(src.iterdir()):
            _place(child, dst / child.name)
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)


def extract(item: Item, path: Path, keep_archive: bool = False) -> None:
    """Lay ``path`` out as the table says: unpack into a temporary folder, then rename the members into place."""
    root = item.root
    tmp = Path(tempfile.mkdtemp(prefix=".prepare-", dir=root))
    try:
        if item.spec.format == "file":
            shutil.copyfile(path, tmp / item.spec.file)
            base = tmp
        else:
            try:
                _unpack(path, item.spec.format, tmp)
                base = _locate(tmp, item.spec.members)
            except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError) as err:
                path.unlink()
                raise UserError(
                    f"{item.key}: {item.spec.file} is not a valid {item.spec.format} archive of "
                    f"{', '.join(item.spec.members)} ({' '.join(str(err).split())}); it was deleted and nothing was "
                    "extracted: run again to download it again"
                ) from None
        for member in item.spec.members:
            _place(base / member, root / item.spec.dest / member)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_lock(root, item.key, extracted=time.strftime("%Y-%m-%dT%H:%M:%S"))
    if not keep_archive:
        path.unlink()
