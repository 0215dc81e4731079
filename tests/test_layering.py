"""The house is one-way: core <- methods, benchmarks <- runner <- analysis <- run_suite.py (README "Layout").

Read from the source text (every ``import`` and ``from ... import`` line, at any indentation), so an import hidden
inside a function counts as much as one at the top.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "methods", "benchmarks", "runner", "analysis")
IMPORT = re.compile(r"^[ \t]*(?:from\s+([\w.]+)\s+import|import\s+([\w.]+))", re.MULTILINE)
# what each layer may import of the project
ALLOWED = {
    "core": {"core"},
    "methods": {"core", "methods", "benchmarks"},
    "benchmarks": {"core", "benchmarks"},
    "runner": {"core", "methods", "benchmarks", "runner"},
    "analysis": {"core", "methods", "benchmarks", "runner", "analysis"},
}


def project_imports(path: Path) -> set[str]:
    """Top-level project packages that the file imports."""
    found = {(a or b).split(".")[0] for a, b in IMPORT.findall(path.read_text())}
    return found & set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_runs_up_the_house(package):
    bad = {str(p.relative_to(REPO)): sorted(project_imports(p) - ALLOWED[package])
           for p in sorted((REPO / package).rglob("*.py"))}
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_check_sees_an_upward_import(tmp_path):
    sneaky = tmp_path / "m.py"
    sneaky.write_text("def f():\n    from runner.run_job import run_job\n    import analysis.records\n")
    assert project_imports(sneaky) == {"runner", "analysis"}


def test_run_suite_is_a_thin_cli():
    text = (REPO / "run_suite.py").read_text()
    defs = re.findall(r"^def (\w+)", text, re.MULTILINE)
    assert set(defs) <= {"parse_args", "print_listing", "print_jobs", "run", "parse_status_args", "status", "main"}
    # imports inside its functions are the layers below, loaded on use (--help needs none of them)
    inner = {m.split(".")[0] for m in re.findall(r"^[ \t]+(?:from|import) ([\w.]+)", text, re.MULTILINE)}
    assert inner <= {"analysis", "runner", "methods", "benchmarks"}


@pytest.mark.parametrize("cli", ["run_suite", "analysis.__main__"])
def test_a_cli_answers_help_without_the_heavy_libraries(cli):
    """torch, timm and Avalanche take about 10 s to import on 2 cores: --help and argument errors must not wait."""
    probe = (f"import sys, {cli}\n"
             "heavy = sorted(m for m in ('torch', 'timm', 'avalanche', 'seaborn') if m in sys.modules)\n"
             "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    helped = subprocess.run([sys.executable, *(["run_suite.py"] if cli == "run_suite" else ["-m", "analysis"]),
                             "--help"], check=False, cwd=REPO, capture_output=True, text=True)
    assert helped.returncode == 0 and "--results-dir" in helped.stdout
