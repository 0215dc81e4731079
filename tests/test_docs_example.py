"""docs/adding_a_method.md stays true: its example is examples/last_blocks.py verbatim, the suite it shows runs
with ``--import`` exactly as written, and the example method passes the method contract."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import test_method_contract as contract

import run_suite
from runner.suite import expand_jobs, load_suite

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "adding_a_method.md"
EXAMPLE = "examples/last_blocks.py"


def example_block(marker: str, doc: Path = DOC) -> str:
    """The fenced code block that follows ``<!-- example: marker -->`` in ``doc``."""
    match = re.search(rf"<!-- example: {re.escape(marker)} -->\n```\w+\n(.*?)\n```", doc.read_text(), re.DOTALL)
    assert match, f"no example block {marker!r} in {doc.name}"
    return match.group(1) + "\n"


def test_doc_shows_the_example_file_verbatim():
    assert example_block(EXAMPLE) == (REPO / EXAMPLE).read_text()


def test_doc_suite_runs_the_example_and_it_passes_the_contract(tmp_path, monkeypatch):
    from methods import METHODS

    if "last_blocks" in METHODS:
        pytest.skip("the example is already imported in this process (SDLB_IMPORT); run this test on its own")
    suite = tmp_path / "my_smoke.yaml"
    suite.write_text(example_block("smoke suite"))
    monkeypatch.chdir(REPO)  # the doc's commands run from the repository root
    out = tmp_path / "res"
    code = run_suite.main(["--suite", str(suite), "--import", EXAMPLE, "--results-dir", str(out), "--no-report"])
    assert code == 0
    record = json.loads((out / "records" / "last_blocks__synthetic__s0.json").read_text())
    assert record["status"] == "done" and len(record["acc_matrix"]) == 3
    assert len(record["mechanism"]["drift"]) == 3 and record["mechanism"]["drift"][-1] > 0
    # the method the suite loaded, through the contract's checks
    contract.test_losses_and_outputs_are_finite("last_blocks")
    contract.test_only_declared_trainable_parameters_change("last_blocks")
    contract.test_evaluation_covers_exactly_the_seen_classes("last_blocks")
    contract.test_same_seed_same_results("last_blocks")
    contract.test_config_round_trips_through_yaml("last_blocks")
    contract.test_checkpoint_restore_gives_same_predictions("last_blocks")
    contract.test_a_resumed_job_ends_exactly_as_an_uninterrupted_one("last_blocks", tmp_path / "resume")
    # the comparison suite runs the example under exactly the settings of the committed quick-suite records
    comparison = tmp_path / "my_quick.yaml"
    comparison.write_text(example_block("quick comparison suite"))
    jobs = expand_jobs(load_suite(str(comparison)), methods=["last_blocks"])
    shipped = json.loads((REPO / "docs/results/quick/records/full_ft__split_fmnist__s1993.json").read_text())
    assert sorted(job.seed for job in jobs) == [1993, 1994, 1995]
    for job in jobs:
        assert {k: job.config()[k] for k in ("benchmark_name", "benchmark", "backbone")} == \
            {k: shipped["config"][k] for k in ("benchmark_name", "benchmark", "backbone")}


def test_doc_comparison_table_is_the_one_the_committed_records_give(tmp_path):
    """The table in section 4 is generated from docs/results/quick + docs/results/last_blocks, never typed."""
    from analysis.readme import main as readme_main

    copy = tmp_path / DOC.name
    copy.write_text(DOC.read_text())
    readme_main(["--results-dir", str(REPO / "docs/results/quick"), "--results-dir",
                 str(REPO / "docs/results/last_blocks"), "--readme", str(copy), "--name", "quick_and_last_blocks"])
    assert copy.read_text() == DOC.read_text(), "regenerate it with the command the doc gives"
    assert "| last_blocks | split_fmnist | 3 |" in DOC.read_text()


def test_doc_comparison_command_puts_the_new_method_beside_the_shipped_records(tmp_path):
    """The doc's `python -m analysis` line, run on the committed records of exactly that run."""
    from analysis.__main__ import main as analysis_main

    line = next(ln for ln in DOC.read_text().splitlines() if ln.startswith("python -m analysis --results-dir"))
    argv = line.split()[3:]
    argv[argv.index("results/my_quick")] = str(REPO / "docs/results/last_blocks")
    argv[argv.index("docs/results/quick")] = str(REPO / "docs/results/quick")
    argv[argv.index("--out") + 1] = str(tmp_path / "out")
    assert analysis_main(argv) == 0
    table = (tmp_path / "out" / "tables" / "main.tex").read_text()
    for label in ("last\\_blocks &", "SD-LoRA &", "Full fine-tuning &", "Joint training (upper bound) &"):
        assert label in table, label
