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


RESULTS = ROOT / "docs" / "results"
PAGE = RESULTS / "mini" / "DESIGN.md"
INVERTED = ("designs.json", "designs_inverted_1994.json", "designs_inverted_1995.json")
MIXED = ("designs_more.json", "designs_mixed_1994.json", "designs_mixed_1995.json")
HELD_OUT_MIXED = tuple(f"designs_held_out_mixed_{seed}.json" for seed in (1993, 1994, 1995))
# The candidate suites' folders (DESIGN.md sections 2-6 and 8): the design each ran and the probe files of its seeds.
MINI_FOLDERS = {"mini_before_rule": ("inverted", INVERTED), "mini_lr_rule": ("inverted", INVERTED),
                "mini_inverted": ("inverted", INVERTED), "mini_mixed": ("mixed", MIXED),
                "mini": ("held_out_mixed", HELD_OUT_MIXED), "mini_two_task": ("held_out_mixed", HELD_OUT_MIXED)}


def requirements_argv(folder: str, page: Path) -> list[str]:
    design, probes = MINI_FOLDERS[folder]
    argv = ["--results-dir", str(RESULTS / folder), "--design", design, "--readme", str(page), "--name", folder]
    for probe in probes:
        argv += ["--probe", str(RESULTS / "mini" / probe)]
    return argv


@pytest.mark.parametrize("folder", MINI_FOLDERS)
def test_design_page_requirements_are_what_the_committed_records_give(tmp_path, folder):
    copy = tmp_path / "DESIGN.md"
    copy.write_text(PAGE.read_text())
    assert mini.main(requirements_argv(folder, copy)) == 0
    assert copy.read_text() == PAGE.read_text(), "regenerate with the python -m analysis.mini line of the page"
    assert f"<!-- requirements:{folder}:start -->\n| requirement |" in PAGE.read_text()
    for probe in MINI_FOLDERS[folder][1]:
        assert json.loads((RESULTS / "mini" / probe).read_text())["git_dirty"] is False


def page_table(header: str, which: int = 0) -> list[list[str]]:
    """The cells of the ``which``-th Markdown table of DESIGN.md whose header line is ``header``."""
    table = PAGE.read_text().split(header + "\n")[which + 1].split("\n\n")[0].splitlines()[1:]
    return [[c.strip() for c in line.strip("|").split("|")] for line in table]


def test_design_page_probe_tables_are_the_committed_probes():
    header = ("| design | pretraining classes | stream style | SimpleCIL | linear probe | joint | joint - SimpleCIL | "
              "joint - probe | adaptation matters |")
    for which, name in enumerate(("designs.json", "designs_more.json")):
        doc = json.loads((RESULTS / "mini" / name).read_text())
        assert doc["git_dirty"] is False
        rows = page_table(header, which)
        assert [r[0] for r in rows] == list(doc["designs"])
        for design, classes, style, *numbers, matters in rows:
            d = doc["designs"][design]
            assert style == d["style"] and classes == ("all 10" if len(d["pretrain_classes"]) == 10 else
                                                       ", ".join(map(str, d["pretrain_classes"])))
            assert [float(x) for x in numbers] == [d[k] for k in ("simple_cil", "linear_probe", "joint",
                                                               "joint_minus_simple_cil", "joint_minus_linear_probe")]
            assert matters == ("yes" if d["adaptation_matters"] else "no")


def test_design_page_task_incremental_table_is_the_committed_records():
    from benchmarks.backbones import LOCAL_BACKBONES

    rows = page_table("| run | pretraining classes | stream | LoRA lr | epochs | full_ft | seq_lora | sd_lora | sd_lora_rr | "
                      "sd_lora_kd | inflora |")
    assert [r[0] for r in rows] == ["quick", *list(MINI_FOLDERS)[:3], "mini_epochs", "mini_mixed", "mini"]
    for run, classes, stream, lr, epochs, *til in rows:
        df = done(load_records(RESULTS / run))
        seq = df[df["method"] == "seq_lora"]["record"].iloc[0]["config"]
        assert stream == seq["benchmark"].get("style", "clean")
        assert int(classes) == len(LOCAL_BACKBONES[seq["backbone"]["tag"]])
        assert (float(lr), int(epochs)) == (seq["method"]["lr"], seq["method"]["epochs"])
        means = df.groupby("method")["til_acc"].mean()
        for method, cell in zip(("full_ft", "seq_lora", "sd_lora", "sd_lora_rr", "sd_lora_kd", "inflora"), til,
                                strict=True):
            assert cell == (f"{means[method]:.2f}" if method in means else "-"), (run, method)


def test_design_page_tables_are_generated_from_the_committed_records(tmp_path):
    from analysis.readme import main as readme_main

    copy = tmp_path / "DESIGN.md"
    copy.write_text(PAGE.read_text())
    for folder in (*MINI_FOLDERS, "mini_epochs"):
        readme_main(["--results-dir", str(RESULTS / folder), "--readme", str(copy), "--name", folder])
    assert copy.read_text() == PAGE.read_text(), "regenerate with python -m analysis.readme (see the page)"


def test_committed_mini_records_are_clean_and_the_rule_recorded_its_time():
    for folder in MINI_FOLDERS:
        for path in (RESULTS / folder / "records").glob("*.json"):
            assert json.loads(path.read_text())["provenance"]["git_dirty"] is False, path
    for folder, runs in (("mini_inverted", 56), ("mini_mixed", 56), ("mini", 56), ("mini_two_task", 104)):
        doc = json.loads((RESULTS / folder / "recipe.json").read_text())
        assert doc["git_dirty"] is False and doc["elapsed_s"] > 0 and doc["runs"] == runs


def test_wall_clock_adds_the_recipe_selection(tmp_path):
    df = done(load_records(RESULTS / "mini"))
    jobs_only = mini.wall_minutes(df)
    selection = json.loads((RESULTS / "mini" / "recipe.json").read_text())["elapsed_s"]
    assert mini.wall_minutes(df, RESULTS / "mini") == pytest.approx(jobs_only + selection / 60)
    assert mini.wall_minutes(df, tmp_path) == jobs_only  # a suite without a recipe rule


def test_readme_mini_blocks_are_generated_from_the_committed_records(tmp_path):
    from analysis.readme import main as readme_main

    copy = tmp_path / "README.md"
    copy.write_text((ROOT / "README.md").read_text())
    readme_main(["--results-dir", str(RESULTS / "mini"), "--readme", str(copy), "--name", "mini"])
    assert mini.main(requirements_argv("mini", copy)) == 0
    assert copy.read_text() == (ROOT / "README.md").read_text(), "regenerate README's mini blocks (see README)"
    assert "<!-- requirements:mini:start -->\n| requirement |" in copy.read_text()


@pytest.mark.parametrize("folder,which,families", [("mini_inverted", 0, 7), ("mini_mixed", 1, 7), ("mini", 2, 7),
                                                   ("mini_two_task", 3, 13)])
def test_design_page_choice_table_is_the_stored_recipe(folder, which, families):
    doc = json.loads((RESULTS / folder / "recipe.json").read_text())
    (benchmark,) = {key.split("/")[0] for key in doc["choices"]}
    rows = page_table("| family | lr | epochs | validation accuracy |", which)
    assert len(rows) == len(doc["choices"]) == families
    for family, lr, epochs, acc in rows:
        stored = doc["choices"][f"{benchmark}/{family.split(' ')[0]}"]
        assert (float(lr), int(epochs), float(acc)) == (stored["lr"], stored["epochs"], stored["val_acc"])


def test_the_committed_mini_backbone_probes_as_the_scratch_pretraining_did():
    """designs_more.json pretrained the held-out backbone in a scratch folder; the committed one (same script, seed
    and classes) gives the same probe at the same seed, so both name one backbone (DESIGN.md sections 1 and 6)."""
    from benchmarks.backbones import FMNIST_EVEN_TAG, local_weights, sha256_of

    scratch = json.loads((RESULTS / "mini" / "designs_more.json").read_text())["designs"]["held_out_mixed"]
    committed = json.loads((RESULTS / "mini" / HELD_OUT_MIXED[0]).read_text())
    row = committed["designs"]["held_out_mixed"]
    assert committed["seed"] == 1993 and committed["git_dirty"] is False
    assert row["backbone"] == {"tag": FMNIST_EVEN_TAG, "sha256": sha256_of(str(local_weights(FMNIST_EVEN_TAG)))}
    assert [row[k] for k in ("simple_cil", "linear_probe", "joint")] == [scratch[k] for k in ("simple_cil", "linear_probe", "joint")]


def test_near_chance_flags_exactly_the_seeds_whose_task_incremental_accuracy_fell_to_guessing():
    df = done(load_records(RESULTS / "mini"))
    line = mini.near_chance(df)
    assert line.startswith("final task-incr. Acc within 5 points of chance (50.0): ")
    for method, group in df.groupby("method"):
        low = [r["metrics"]["til_acc"] for r in group["record"] if r["metrics"]["til_acc"] <= 55.0]
        assert (f"{method} {len(low)} of {len(group)} seed(s)" in line) == bool(low), method
    assert "lwf 2 of 3" in line and "sd_lora" not in line
    assert mini.chance_til({"classes_per_task": [2, 5]}) == pytest.approx(35.0)  # the mean of 1/2 and 1/5
    assert mini.near_chance(df, margin=-100.0).endswith(": no row")


def test_largest_se_line_names_the_row_that_bounds_the_separation_and_its_last_task_per_seed():
    df = done(load_records(RESULTS / "mini"))
    line = mini.largest_se_seeds(df)
    ranked = mini.ranked_rows(df)
    worst = max(ranked, key=lambda m: ranked[m][1])
    assert worst == "full_ft" and line.startswith(f"largest standard error: full_ft {ranked[worst][1]:.2f} (")
    for record in df[df["method"] == worst]["record"]:
        classes = ",".join(map(str, record["class_order"][-2:]))
        assert (f"seed {record['seed']}: Acc {record['metrics']['acc']:.2f}, last task (classes {classes}) "
                f"{record['acc_matrix'][-1][-1]:.1f} class-incr., {record['til_matrix'][-1][-1]:.1f} task-incr.") in line
