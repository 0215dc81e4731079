"""docs/adding_a_benchmark.md stays true: its example is examples/digits_folder.py verbatim, no file of the house
knows the benchmark, and the doc's suite, run as shown in fresh processes that get the benchmark from ``--import``
alone, reaches a LaTeX table on the real files and with ``--smoke`` on the stand-ins."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from functools import partial
from pathlib import Path

from test_docs_example import example_block

from analysis.records import load_records
from analysis.report import write_tables

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "adding_a_benchmark.md"
EXAMPLE = "examples/digits_folder.py"
block = partial(example_block, doc=DOC)


def test_doc_shows_the_example_file_verbatim():
    assert block(EXAMPLE) == (REPO / EXAMPLE).read_text()


def test_no_file_of_the_house_knows_the_example_benchmark():
    """Adding the benchmark touched only its own file: nothing in the packages, the CLI or the suites names it."""
    mention = re.compile(r"digits_folder|[\"']digits[\"']|^\s*digits:", re.MULTILINE)
    files = [REPO / "run_suite.py"] + [p for d in ("core", "methods", "benchmarks", "runner", "analysis", "suites")
                                       for p in sorted((REPO / d).rglob("*")) if p.suffix in (".py", ".yaml")]
    assert [str(p.relative_to(REPO)) for p in files if mention.search(p.read_text())] == []
    assert mention.search((REPO / EXAMPLE).read_text())  # the check sees a mention where there is one


def shell(*args: str) -> subprocess.CompletedProcess:
    """One of the doc's commands, from the repository root, in a fresh process (no data root from outside)."""
    env = {k: v for k, v in os.environ.items() if k != "SDLB_DATA_ROOT"}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def test_doc_suite_runs_with_import_and_smoke_to_a_latex_table(tmp_path):
    suite = tmp_path / "my_digits.yaml"
    suite.write_text(block("digits suite"))
    run = ("run_suite.py", "--suite", str(suite), "--import", EXAMPLE, "--no-report", "--seeds", "1993")
    data, real, smoke = tmp_path / "data", tmp_path / "my_digits", tmp_path / "my_digits_smoke"

    # the data: written once by the example itself, in the layout its validate_paths() names
    shell(EXAMPLE, str(data))
    assert len(list((data / "digits" / "train").glob("*/*.png"))) == 1400
    assert sorted(p.name for p in (data / "digits" / "test").iterdir()) == [str(d) for d in range(10)]

    # the real path on tiny settings: the training-free method, one seed, the pretrained backbone, every PNG
    shell(*run, "--methods", "simple_cil", "--data-root", str(data), "--results-dir", str(real))
    record = json.loads((real / "records" / "simple_cil__digits__s1993.json").read_text())
    assert record["status"] == "done" and record["classes_per_task"] == [2] * 5
    assert record["benchmark_info"]["n_train"] == 1400 and record["benchmark_info"]["n_test"] == 340
    assert record["metrics"]["acc"] > 20  # %; chance over the 10 digits after the last task is 10

    # --smoke: every method of the suite on the fixture the example registers, no data root
    shell(*run, "--smoke", "--results-dir", str(smoke))
    smoke_records = sorted(p.name for p in (smoke / "records").glob("*.json"))
    assert smoke_records == [f"{m}__digits__s1993.json" for m in ("full_ft", "sd_lora", "simple_cil")]
    assert sorted(p.name for p in (smoke / "smoke_data" / "digits" / "test").iterdir()) == [str(d) for d in range(10)]

    # the tables, from the records alone (python -m analysis writes these and the figures)
    for folder, labels in ((real, ["SimpleCIL"]), (smoke, ["Full fine-tuning", "SD-LoRA", "SimpleCIL"])):
        write_tables(load_records(folder), folder / "tables")
        table = (folder / "tables" / "main.tex").read_text()
        assert "digits" in table and all(label in table for label in labels), table
    assert f"{record['metrics']['acc']:.2f}" in (real / "tables" / "main.tex").read_text()
