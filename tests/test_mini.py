"""analysis.mini: issue 17's requirements measured from a suite's records, and the rank agreement with the paper."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scipy.stats import kendalltau

from analysis import mini
from analysis.records import done, load_records

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "docs" / "results" / "quick"


def test_requirements_are_the_seed_means_of_the_records():
    df = done(load_records(QUICK))
    acc = df.groupby("method")["acc"].mean()
    til = df.groupby("method")["til_acc"].mean()
    rows = {r["requirement"]: r for r in mini.requirements(df, probe=80.0)}
    assert rows["joint Acc - SimpleCIL Acc"]["value"] == pytest.approx(acc["joint"] - acc["simple_cil"], abs=0.005)
    assert rows["joint Acc - SimpleCIL Acc"]["holds"] is False  # the quick suite: prototypes equal joint training
    assert rows["joint Acc - linear probe of the frozen backbone"]["value"] == pytest.approx(acc["joint"] - 80, abs=0.005)
    low = min(til[m] for m in mini.ADAPTERS)
    key = "lowest adapter task-incr. Acc - full_ft task-incr. Acc"
    assert rows[key]["value"] == pytest.approx(low - til["full_ft"], abs=0.005)
    ranked = df[df["method"] != "joint"].groupby("method")["acc"]
    se = ranked.std(ddof=1) / ranked.count() ** 0.5
    spread = (ranked.mean().max() - ranked.mean().min()) / se.max()
    assert rows["spread of method means / largest standard error (joint left out)"]["value"] == pytest.approx(
        spread, abs=0.005)


def test_rank_agreement_is_kendall_tau_over_the_shared_paper_rows():
    paper = mini.paper_acc()
    assert set(paper) == {"full_ft", "l2p", "dualprompt", "coda_prompt", "hide_prompt", "inflora", "sd_lora",
                          "sd_lora_rr", "sd_lora_kd"}  # the paper's Table 2 rows
    ours = {m: float(i) for i, m in enumerate(sorted(paper))}
    tau, _p, common = mini.rank_agreement({**ours, "joint": 99.0, "ewc": 1.0})
    assert common == sorted(paper)  # joint and EWC are no rows of the paper's table
    assert tau == pytest.approx(kendalltau([ours[m] for m in common], [paper[m] for m in common])[0])


def test_cli_prints_the_table_and_refuses_a_bad_probe(tmp_path, capsys):
    probe = tmp_path / "designs.json"
    probe.write_text(json.dumps({"designs": {"quick": {"linear_probe": 84.0}}}))
    assert mini.main(["--results-dir", str(QUICK), "--probe", str(probe), "--design", "quick"]) == 0
    out = capsys.readouterr().out
    assert "| joint Acc - SimpleCIL Acc |" in out and "Kendall tau" in out
    assert mini.main(["--results-dir", str(QUICK), "--probe", str(probe), "--design", "nope"]) == 2
    assert "no linear probe for design 'nope'" in capsys.readouterr().err


MINI_FOLDERS = ("mini_before_rule", "mini_lr_rule", "mini")  # the candidate under each recipe (DESIGN.md 2-4)


@pytest.mark.parametrize("folder", MINI_FOLDERS)
def test_design_page_requirements_are_what_the_committed_records_give(tmp_path, folder):
    page = ROOT / "docs" / "results" / "mini" / "DESIGN.md"
    copy = tmp_path / "DESIGN.md"
    copy.write_text(page.read_text())
    mini_dir = ROOT / "docs" / "results" / "mini"
    probes = [mini_dir / "designs.json", mini_dir / "designs_inverted_1994.json", mini_dir / "designs_inverted_1995.json"]
    argv = ["--results-dir", str(ROOT / "docs" / "results" / folder), "--design", "inverted", "--readme", str(copy)]
    for probe in probes:
        argv += ["--probe", str(probe)]
    assert mini.main(argv) == 0
    assert copy.read_text() == page.read_text(), "regenerate with the python -m analysis.mini line of the page"
    assert f"<!-- requirements:{folder}:start -->\n| requirement |" in page.read_text()
    for probe in probes:
        assert json.loads(probe.read_text())["git_dirty"] is False


def test_design_page_tables_are_generated_from_the_committed_records(tmp_path):
    from analysis.readme import main as readme_main

    page = ROOT / "docs" / "results" / "mini" / "DESIGN.md"
    copy = tmp_path / "DESIGN.md"
    copy.write_text(page.read_text())
    for folder in (*MINI_FOLDERS, "mini_epochs"):
        readme_main(["--results-dir", str(ROOT / "docs" / "results" / folder), "--readme", str(copy), "--name", folder])
    assert copy.read_text() == page.read_text(), "regenerate with python -m analysis.readme (see the page)"


def test_committed_mini_records_are_clean_and_the_rule_recorded_its_time():
    for folder in MINI_FOLDERS:
        for path in (ROOT / "docs" / "results" / folder / "records").glob("*.json"):
            assert json.loads(path.read_text())["provenance"]["git_dirty"] is False, path
    doc = json.loads((ROOT / "docs" / "results" / "mini" / "recipe.json").read_text())
    assert doc["git_dirty"] is False and doc["elapsed_s"] > 0 and doc["runs"] == 56


def test_wall_clock_adds_the_recipe_selection(tmp_path):
    df = done(load_records(ROOT / "docs" / "results" / "mini"))
    jobs_only = mini.wall_minutes(df)
    selection = json.loads((ROOT / "docs" / "results" / "mini" / "recipe.json").read_text())["elapsed_s"]
    assert mini.wall_minutes(df, ROOT / "docs" / "results" / "mini") == pytest.approx(jobs_only + selection / 60)
    assert mini.wall_minutes(df, tmp_path) == jobs_only  # a suite without a recipe rule


def test_readme_mini_blocks_are_generated_from_the_committed_records(tmp_path):
    from analysis.readme import main as readme_main

    copy = tmp_path / "README.md"
    copy.write_text((ROOT / "README.md").read_text())
    mini_dir = ROOT / "docs" / "results" / "mini"
    readme_main(["--results-dir", str(mini_dir), "--readme", str(copy), "--name", "mini"])
    argv = ["--results-dir", str(mini_dir), "--design", "inverted", "--readme", str(copy)]
    for probe in ("designs.json", "designs_inverted_1994.json", "designs_inverted_1995.json"):
        argv += ["--probe", str(mini_dir / probe)]
    assert mini.main(argv) == 0
    assert copy.read_text() == (ROOT / "README.md").read_text(), "regenerate README's mini blocks (see README)"


def test_design_page_choice_table_is_the_stored_recipe():
    page = (ROOT / "docs" / "results" / "mini" / "DESIGN.md").read_text()
    choices = json.loads((ROOT / "docs" / "results" / "mini" / "recipe.json").read_text())["choices"]
    table = page.split("| family | lr | epochs | validation accuracy |\n|---|---:|---:|---:|\n")[1].split("\n\n")[0]
    rows = table.splitlines()
    assert len(rows) == len(choices) == 7
    for line in rows:
        family, lr, epochs, acc = [c.strip() for c in line.strip("|").split("|")]
        stored = choices[f"split_fmnist_inverted/{family.split(' ')[0]}"]
        assert (float(lr), int(epochs), float(acc)) == (stored["lr"], stored["epochs"], stored["val_acc"])
