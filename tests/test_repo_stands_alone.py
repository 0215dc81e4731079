"""The repository stands alone: what it cites is in it or is a primary source, and no machine path is committed.

Three checks over the files git tracks:

* every ``*.md`` cited exists in the repository, and a cited ``docs/x.md section N`` or ``docs/x.md#anchor`` exists
  in that page (citations of another repository's file, ``owner/repo:README.md``, and URLs are primary sources);
* no file cites the project's former planning notes, which never were in the repository;
* no tracked text file holds an absolute path, except the few in ``ALLOWED_ABSOLUTE`` (each with its reason).

The committed example records are checked apart (``test_example_records_hold_no_machine_path``).
"""

from __future__ import annotations

import fnmatch
import functools
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
THIS = Path(__file__).resolve().relative_to(REPO).as_posix()
RECORDS = "docs/results/*/records/*.json"

# The notes the project was planned from, outside the repository. Written in pieces so that this file, which
# must pass its own check, does not contain them.
NOTES_NEEDLES = ("SPEC" + ".md", ".." + "/shared")
NOTES_NAMES = re.compile(r"\b[A-Z]+_SPEC\b|\bANCHORS\.md\b|\bAVALANCHE" + r"_NOTES\b|\bCPU" + r"_REGIME\b|\bSTYLE\.md\b")

# Absolute paths that tracked files may hold: (files, path pattern, why). Everything else is a path of the machine
# a file was written on, or should be relative.
ALLOWED_ABSOLUTE: list[tuple[str, str, str]] = [
    ("*", r"/usr/bin/env", "the interpreter in a shebang line"),
    ("benchmarks/fmnist.py", r"/usr/share/datasets/fashion-mnist",
     ("where Debian's dataset-fashion-mnist package installs the IDX files (.ci/run installs it); the quick "
     "benchmark's default data root, outside any clone")),
    (".ci/*", r"/(etc|run|var/lib|var/log|var/spool|usr/sbin)/[\w./-]*|/run/|/dev/urandom",
     "system locations of the munge and SLURM daemons that .ci/slurm_up.sh starts on the CI machine"),
    ("bench/gpu_check.sh", r"/tmp/(site|gpu_methods|gpu_memory)",
     "scratch folders the GPU check script creates on the device machine"),
    ("docs/gpu/*.log", r"/tmp/(site|gpu_methods|gpu_memory)[\w./-]*",
     "the committed output of bench/gpu_check.sh, which echoes its scratch folders"),
    ("docs/gpu/*.log", r"/pytorch/torch/csrc/[\w./-]*", "a torch warning names a source file of torch's own build"),
    ("README.md", r"/data|/weights/[\w./-]+", "placeholders for a user's data root and weights file in an example"),
    ("suites/*.yaml", r"/data|/weights/[\w./-]+", "placeholders for a user's data root and weights file in an example"),
    ("docs/datasets.md", r"/datasets/cil|/data", "placeholders for a user's data root in examples"),
    ("benchmarks/prepare/*.py", r"/data", "placeholder for a user's data root in the usage lines"),
    ("tests/test_prepare.py", r"/uc|/timm/[\w./{}-]*", "URL paths the test's local HTTP server answers (Drive, HF Hub)"),
    ("benchmarks/backbones.py", r"/path/model\.safetensors", "placeholder weights file in a usage example"),
    ("runner/run_job.py", r"/proc/cpuinfo", "the kernel's CPU description on Linux, read for provenance.cpu"),
    ("benchmarks/glyphs.py", r"/usr/share/fonts/(opentype|truetype)/[\w-]+",
     "where Debian's fonts-urw-base35, fonts-liberation and fonts-dejavu-core install the typefaces it prints"),
    ("tests/*", r"/nonexistent/[\w./-]*|/x", "paths a test needs absolute and never opens"),
]

# An absolute path: a slash that starts a token (not inside a word, a relative path, a URL or a fraction).
ABSOLUTE = re.compile(r"(?<![\w.~$})\]<>|*+\\:/-])/[A-Za-z_][\w.-]*(?:/[\w.*{}-]*)*")
URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+")
# A cited markdown file; one right after ``:`` is another repository's file (``owner/repo:README.md``).
MD_CITATION = re.compile(r"(?<![\w./:-])(?P<path>(?:\.{1,2}/)?\w[\w./-]*\.md)(?![\w/])(?P<anchor>#[\w-]+)?"
                         r"(?:[`'\")\]]*,?\s+sections?\s+(?P<section>\d+(?:\.\d+)*))?")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)


@functools.cache
def tracked_files() -> tuple[str, ...]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return tuple(p for p in out.splitlines() if (REPO / p).is_file())


def text_of(rel: str) -> str | None:
    data = (REPO / rel).read_bytes()
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def text_files(*, records: bool = False) -> list[tuple[str, str]]:
    out = []
    for rel in tracked_files():
        if rel == THIS or fnmatch.fnmatch(rel, RECORDS) != records:
            continue
        text = text_of(rel)
        if text is not None:
            out.append((rel, text))
    return out


def line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(page: Path) -> tuple[set[str], set[str]]:
    """(anchors, section numbers) of a markdown page; a section number is a heading's leading ``N.`` or ``N.M``."""
    found = HEADING.findall(page.read_text(encoding="utf-8"))
    numbers = {m.group(1) for h in found if (m := re.match(r"(\d+(?:\.\d+)*)\.?\s", h))}
    return {github_slug(h) for h in found}, numbers


def resolve(rel: str, cited: str) -> Path | None:
    if "/" not in cited:  # a bare file name (``"docs" / "x.md"`` in code) names the tracked file of that name
        same_name = [p for p in tracked_files() if Path(p).name == cited]
        if same_name:
            return REPO / same_name[0]
    for base in (REPO, (REPO / rel).parent):
        path = (base / cited).resolve()
        if path.is_file() and REPO in path.parents:
            return path
    return None


def bad_md_citations(files: list[tuple[str, str]]) -> list[str]:
    bad = []
    for rel, text in files:
        if Path(rel).name == ".gitignore":  # patterns of files, not citations
            continue
        scan = URL.sub(lambda m: " " * len(m.group(0)), text)
        for m in MD_CITATION.finditer(scan):
            where = f"{rel}:{line_of(text, m.start())}: {m.group(0)!r}"
            target = resolve(rel, m.group("path"))
            if target is None:
                bad.append(f"{where} names a file that is not in the repository")
                continue
            anchors, numbers = headings(target)
            if m.group("anchor") and m.group("anchor")[1:] not in anchors:
                bad.append(f"{where}: no heading with that anchor")
            if m.group("section") and m.group("section") not in numbers:
                bad.append(f"{where}: no section with that number")
    return bad


def allowed(rel: str, path: str) -> bool:
    return any(fnmatch.fnmatch(rel, files) and re.fullmatch(pattern, path)
               for files, pattern, _ in ALLOWED_ABSOLUTE)


def absolute_paths(files: list[tuple[str, str]]) -> list[str]:
    hits = []
    for rel, text in files:
        scan = URL.sub(lambda m: " " * len(m.group(0)), text)
        for m in ABSOLUTE.finditer(scan):
            path = m.group(0).rstrip(".,;:")
            if not allowed(rel, path):
                hits.append(f"{rel}:{line_of(text, m.start())}: {path}")
    return hits


def test_every_cited_markdown_file_and_section_exists():
    assert bad_md_citations(text_files()) == []


def test_nothing_cites_the_notes_outside_the_repository():
    # The acceptance grep of issue 19, over the tracked *.py, *.md and *.yaml files (needles as in NOTES_NEEDLES).
    hits = [f"{rel}:{i}: {line.strip()}" for rel, text in text_files() if rel.endswith((".py", ".md", ".yaml"))
            for i, line in enumerate(text.splitlines(), 1) if any(n in line for n in NOTES_NEEDLES)]
    assert hits == []
    names = [f"{rel}:{line_of(text, m.start())}: {m.group(0)}" for rel, text in text_files()
             for m in NOTES_NAMES.finditer(text)]
    assert names == []


def test_no_tracked_text_file_holds_a_machine_path():
    assert absolute_paths(text_files()) == []


def test_example_records_hold_no_machine_path():
    records = text_files(records=True)
    assert records, "no committed example records found"
    assert absolute_paths(records) == []


def test_the_checks_catch_what_they_are_for(tmp_path):
    """Each check fails on a planted example (so a silent regex cannot pass them all)."""
    notes = "SDLORA_" + NOTES_NEEDLES[0]
    planted = [
        ("docs/x.md", f"see `{notes}` and `docs/missing.md`, `docs/sdlora.md` section 99, `docs/sdlora.md#nope`"),
        ("methods/x.py", '"""Weights in ' + "/" + "work/main/benchmarks/w.pth" + '."""'),
    ]
    bad = bad_md_citations(planted)
    assert [b.split(": ", 1)[1] for b in bad] == [
        f"'{notes}' names a file that is not in the repository",
        "'docs/missing.md' names a file that is not in the repository",
        "'docs/sdlora.md` section 99': no section with that number",
        "'docs/sdlora.md#nope': no heading with that anchor",
    ]
    assert absolute_paths(planted) == ["methods/x.py:1: /" + "work/main/benchmarks/w.pth"]
    # primary sources and allowed paths pass
    fine = [("docs/y.md", ("`SD-Lora-CL:README.md`, https://x.org/a/README.md, `docs/sdlora.md` section 12, "
                          "[page](docs/baselines.md#0-what-the-prompt-methods-share), docs/baselines.md section 7.1")),
            ("benchmarks/fmnist.py", 'ROOT = "/usr/share/datasets/fashion-mnist"'),
            ("methods/z.py", "lr * 24 / 256, x/|x|, ./data, results/smoke")]
    assert bad_md_citations(fine) == []
    assert absolute_paths(fine) == []
