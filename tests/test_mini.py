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
    probe.write_text(json.dumps({"seed": 1993, "designs": {"quick": {"linear_probe": 84.0}}}))
    assert mini.main(["--results-dir", str(QUICK), "--probe", str(probe), "--design", "quick"]) == 0
    out = capsys.readouterr().out
    assert "| joint Acc - SimpleCIL Acc |" in out and "Kendall tau" in out
    assert mini.main(["--results-dir", str(QUICK), "--probe", str(probe), "--design", "nope"]) == 2
    assert "no seed or linear probe for design 'nope'" in capsys.readouterr().err
    assert mini.main(["--results-dir", str(QUICK), "--probe", str(probe), "--probe", str(probe), "--design",
                      "quick"]) == 2
    assert "a second probe for seed 1993" in capsys.readouterr().err


RESULTS = ROOT / "docs" / "results"
PAGE = RESULTS / "mini" / "DESIGN.md"
MANIFEST = RESULTS / "mini" / "candidates.json"
# The candidate suites' folders (DESIGN.md sections 2-11, from docs/results/mini/candidates.json): the design each
# ran and the probe files of its seeds.
MINI_FOLDERS = {run["folder"]: (run["design"], tuple(run["probes"]))
                for run in json.loads(MANIFEST.read_text())["runs"]}


# DESIGN.md section 9: the folder of each candidate's seven more seeds (1996-2002), and its probe at seed S.
MORE_SEEDS = {"mini": "mini_seeds", "mini_mixed": "mini_mixed_seeds", "mini_avx2": "mini_avx2_seeds",  # + section 10
              "mini_baseline": "mini_baseline_seeds"}  # + section 14
NEW_SEEDS = tuple(range(1996, 2003))


def draws_argv(folder: str, page: Path, draws: str = "3") -> list[str]:
    """DESIGN.md section 9's command: ``--draws 3`` at the suite's seeds, or a range of seed counts."""
    design, probes = MINI_FOLDERS[folder]
    argv = ["--results-dir", str(RESULTS / folder), "--results-dir", str(RESULTS / MORE_SEEDS[folder]), "--draws",
            draws, "--design", design, "--readme", str(page), "--name", folder]
    if "-" not in draws:
        argv += ["--suite-seeds", "1993,1994,1995"]
    for probe in (*probes, *(f"designs_{design}_{seed}.json" for seed in NEW_SEEDS)):
        argv += ["--probe", str(RESULTS / "mini" / probe)]
    return argv


def requirements_argv(folder: str, page: Path) -> list[str]:
    design, probes = MINI_FOLDERS[folder]
    argv = ["--results-dir", str(RESULTS / folder), "--design", design, "--readme", str(page), "--name", folder]
    for probe in probes:
        argv += ["--probe", str(RESULTS / "mini" / probe)]
    return argv


def assert_page_regenerates(tmp_path: Path, argv) -> None:
    """``python -m analysis.mini argv(page)`` on a copy of DESIGN.md leaves it as committed."""
    copy = tmp_path / "DESIGN.md"
    copy.write_text(PAGE.read_text())
    assert mini.main(argv(copy)) == 0
    assert copy.read_text() == PAGE.read_text(), "regenerate with the python -m analysis.mini lines of the page"


@pytest.mark.parametrize("folder", MINI_FOLDERS)
def test_design_page_requirements_are_what_the_committed_records_give(tmp_path, folder):
    assert_page_regenerates(tmp_path, lambda page: requirements_argv(folder, page))
    assert f"<!-- requirements:{folder}:start -->\n| requirement |" in PAGE.read_text()
    for probe in MINI_FOLDERS[folder][1]:
        assert json.loads((RESULTS / "mini" / probe).read_text())["git_dirty"] is False


def page_table(header: str, which: int = 0) -> list[list[str]]:
    """The cells of the ``which``-th Markdown table of DESIGN.md whose header line is ``header``."""
    table = PAGE.read_text().split(header + "\n")[which + 1].split("\n\n")[0].splitlines()[1:]
    return [[c.strip() for c in line.strip("|").split("|")] for line in table]


def test_design_page_summary_is_what_the_manifest_records_and_probes_give(tmp_path, capsys):
    """DESIGN.md's page-top summary: every run of candidates.json against the requirements, as each run's own
    requirements table says (the same values and verdicts), and every probed design once."""
    assert_page_regenerates(tmp_path, lambda page: ["--summary", str(MANIFEST), "--readme", str(page)])
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines if line.startswith("| mini")}
    assert list(rows) == list(MINI_FOLDERS)
    for folder, line in rows.items():
        block = PAGE.read_text().split(f"<!-- requirements:{folder}:start -->\n")[1].split("\n\n")[0]
        values = [row.split(" | ")[1:3] for row in block.splitlines()[2:]]  # measured, bound
        cells = line.strip("| ").split(" | ")[4:-1]
        assert [c.removesuffix(" (no)") for c in cells] == [v for v, _ in values], folder
        held = sum(not c.endswith("(no)") for c in cells)
        assert line.endswith(f" {held} of 5 |") and held == sum(row.endswith("| yes |") for row in block.splitlines()[2:])
    table = lines[next(i for i, line in enumerate(lines) if line.startswith("| design |")) + 2:]
    probed = [line.split(" | ")[0].lstrip("| ") for line in table[:table.index("")]]
    assert len(probed) == len(set(probed)) == 14 and probed[-1] == "held_out_mixed_digits"


def test_summary_refuses_other_views_and_a_bad_manifest(tmp_path, capsys):
    assert mini.main(["--summary", str(MANIFEST), "--results-dir", str(QUICK)]) == 2
    assert "pass it alone" in capsys.readouterr().err
    bad = tmp_path / "candidates.json"
    bad.write_text("{}")
    assert mini.main(["--summary", str(bad)]) == 2
    assert "not a candidates manifest" in capsys.readouterr().err
    assert mini.main([]) == 2 and "--summary MANIFEST" in capsys.readouterr().err


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
    for folder, more in MORE_SEEDS.items():  # section 9: the suite's three seeds pooled with seven more
        readme_main(["--results-dir", str(RESULTS / folder), "--results-dir", str(RESULTS / more), "--readme",
                     str(copy), "--name", f"{folder}_10_seeds"])
    assert copy.read_text() == PAGE.read_text(), "regenerate with python -m analysis.readme (see the page)"


def test_committed_mini_records_are_clean_and_the_rule_recorded_its_time():
    for folder in MINI_FOLDERS:
        for path in (RESULTS / folder / "records").glob("*.json"):
            assert json.loads(path.read_text())["provenance"]["git_dirty"] is False, path
    for folder, runs in (("mini_inverted", 56), ("mini_mixed", 56), ("mini", 56), ("mini_two_task", 104),
                         ("mini_avx2", 56), ("mini_glyphs", 56), ("mini_digits", 56)):
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
    # README shows the records the command makes under the default CPU kernel pin (DESIGN.md section 13)
    readme_main(["--results-dir", str(RESULTS / "mini_pinned"), "--readme", str(copy), "--name", "mini_pinned"])
    assert mini.main(requirements_argv("mini_pinned", copy)) == 0
    assert mini.main(["--summary", str(MANIFEST), "--readme", str(copy)]) == 0
    assert copy.read_text() == (ROOT / "README.md").read_text(), "regenerate README's mini blocks (see README)"
    assert "<!-- requirements:mini_pinned:start -->\n| requirement |" in copy.read_text()


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
    committed = json.loads((RESULTS / "mini" / MINI_FOLDERS["mini"][1][0]).read_text())
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


def made_up_task_confusion(df):
    """The mini records with a task_confusion made up so that every column of ``--tasks`` is known by hand: task j
    < 4 keeps 60 + j percent of its images and gives the rest to the last task; the last task keeps 10 + (seed -
    1993) percent and gives the rest to the first; task-id Acc is Acc + 1."""
    records = []
    for record in df["record"]:
        rows = [[60.0 + j if k == j else 40.0 - j if k == 4 else 0.0 for k in range(5)] for j in range(4)]
        own = 10.0 + record["seed"] - 1993
        metrics = {**record["metrics"], "task_id_acc": record["metrics"]["acc"] + 1.0}
        records.append({**record, "metrics": metrics, "task_confusion": [*rows, [100.0 - own, 0.0, 0.0, 0.0, own]]})
    return df.assign(record=records)



def test_diverged_rows_are_named_only_when_a_record_says_so():
    df = done(load_records(RESULTS / "mini"))
    assert mini.diverged(df) == []  # records older than nonfinite_loss, and none diverged: no line at all
    records = [{**r, "nonfinite_loss": [6 - (r["seed"] - 1993), 1]} if r["method"] == "ewc" and r["seed"] != 1994
               else r for r in df["record"]]
    assert mini.diverged(df.assign(record=records)) == [
        "training loss not finite (diverged): ewc 2 of 3 seed(s) (from task 6, 4)"]

def test_task_table_says_where_each_rows_errors_go(tmp_path, capsys):
    df = made_up_task_confusion(done(load_records(RESULTS / "mini")))
    lines = mini.task_lines(df)
    assert lines[0].startswith("| method | Acc | task-incr. Acc | task-id Acc |")
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in lines[2:] if line.startswith("| ")}
    acc = df.groupby("method")["acc"].mean().sort_values(ascending=False)
    assert list(rows) == list(acc.index)  # by Acc, best first
    se = df.groupby("method")["acc"].std(ddof=1) / 3 ** 0.5
    for method, cells in rows.items():
        assert cells[0] == f"{acc[method]:.2f} ({se[method]:.2f})"
        assert cells[2] == f"{acc[method] + 1:.2f} ({se[method]:.2f})"
        assert cells[3] == "38.50 (0.00)"  # the mean of 40, 39, 38 and 37 at every seed
        assert cells[4].rstrip(" |") == "89.00 (0.58)"  # 90, 89 and 88 percent at seeds 1993-1995
    line = mini.largest_se_seeds(df)
    assert "predicted into tasks 1-5 (%): 90.0/0.0/0.0/0.0/10.0" in line  # seed 1993's last task
    # records written before task_confusion was recorded: one line, exit 2, nothing written
    page = tmp_path / "page.txt"
    page.write_text("<!-- tasks:mini:start -->\nold\n<!-- tasks:mini:end -->\n")
    argv = ["--results-dir", str(RESULTS / "mini"), "--tasks", "--readme", str(page), "--name", "mini"]
    assert mini.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no task_confusion" in err and "rerun them" in err
    assert mini.main([*argv, "--draws", "3"]) == 2 and "two views" in capsys.readouterr().err
    assert page.read_text().count("old") == 1
    assert "predicted into" not in mini.largest_se_seeds(done(load_records(RESULTS / "mini")))


@pytest.mark.parametrize("folder", ["mini_glyphs", "mini_digits"])
def test_design_page_task_tables_of_the_glyph_streams_regenerate(tmp_path, folder):
    """DESIGN.md section 11: each glyph stream's task table is what its records give, and its records are the
    stream the suite names (30 classes in 10 tasks, 20 in 5)."""
    assert_page_regenerates(tmp_path, lambda page: ["--results-dir", str(RESULTS / folder), "--tasks", "--readme",
                                                    str(page), "--name", folder])
    tasks, classes = {"mini_glyphs": (10, 30), "mini_digits": (5, 20)}[folder]
    for path in (RESULTS / folder / "records").glob("*.json"):
        record = json.loads(path.read_text())
        assert len(record["task_confusion"]) == tasks and sorted(record["class_order"]) == list(range(classes))


def test_design_page_task_table_is_what_the_committed_avx2_records_give(tmp_path):
    """DESIGN.md section 10: the task table regenerates, and the AVX2 run is section 6's suite on another CPU: the
    same code, the rule's same choices, every record naming its CPU."""
    assert_page_regenerates(tmp_path, lambda page: ["--results-dir", str(RESULTS / "mini_avx2"), "--tasks",
                                                    "--readme", str(page), "--name", "mini_avx2"])
    ours, theirs = (json.loads((RESULTS / f / "recipe.json").read_text())["choices"] for f in ("mini_avx2", "mini"))
    assert {k: (v["lr"], v["epochs"], v["key"]) for k, v in ours.items()} == {
        k: (v["lr"], v["epochs"], v["key"]) for k, v in theirs.items()}
    for path in (RESULTS / "mini_avx2" / "records").glob("*.json"):
        record, before = json.loads(path.read_text()), json.loads((RESULTS / "mini" / "records" / path.name).read_text())
        assert record["code_hash"] == before["code_hash"] and record["config_hash"] == before["config_hash"]
        assert record["provenance"]["cpu"].endswith("(AVX2)") and len(record["task_confusion"]) == 5


def test_seed_draws_recompute_the_requirements_on_each_choice_of_seeds():
    df = done(load_records(QUICK))
    probes = {1993: 80.0, 1994: 82.0, 1995: 84.0}
    draws = mini.seed_draws(df, 2, probes)
    assert list(draws["seeds"]) == [(1993, 1994), (1993, 1995), (1994, 1995)]
    for row in draws.to_dict("records"):
        sub = df[df["seed"].isin(row["seeds"])]
        acc = sub.groupby("method")["acc"].mean()
        assert row["joint_minus_simple_cil"] == pytest.approx(acc["joint"] - acc["simple_cil"])
        probe = (probes[row["seeds"][0]] + probes[row["seeds"][1]]) / 2
        assert row["joint_minus_probe"] == pytest.approx(acc["joint"] - probe)
        ranked = sub[sub["method"] != "joint"].groupby("method")["acc"]
        se = ranked.std(ddof=1) / ranked.count() ** 0.5
        assert row["spread_over_se"] == pytest.approx((ranked.mean().max() - ranked.mean().min()) / se.max())
        assert row["largest_se_row"] == se.idxmax()
        assert row["holds_all"] is (row["joint_minus_simple_cil"] >= 10 and row["joint_minus_probe"] >= 10
                                    and row["spread_over_se"] >= 5 and row["adapter_til_minus_full_ft"] >= 5)
    (whole,) = mini.seed_draws(df, 3).to_dict("records")  # all seeds: the requirements table's values
    table = {r["requirement"]: r["value"] for r in mini.requirements(df, probe=None)}
    for key in ("joint_minus_simple_cil", "spread_over_se", "adapter_til_minus_full_ft"):
        assert round(whole[key], 2) == table[mini.NAMES[key]]


def test_seed_draws_pool_every_draw_in_one_aggregate_with_each_draws_own_values():
    """seed_draws aggregates all draws at once; every value is exactly what measures() gives that draw alone."""
    df = done(load_records(QUICK))
    probes = {1993: 80.0, 1994: 82.0, 1995: 84.0}
    for row in mini.seed_draws(df, 2, probes).to_dict("records"):
        sub = df[df["seed"].isin(row["seeds"])]
        assert {k: row[k] for k in mini.BOUNDS if k in row} == mini.measures(sub, mini.mean_probe(probes, row["seeds"]))
        assert row["largest_se_row"] == mini.largest_se_row(mini.ranked_rows(sub))


def test_counts_table_has_one_column_per_number_of_seeds(capsys):
    df = done(load_records(QUICK))
    lines = mini.counts_lines(df, (2, 3))
    assert lines[0] == "| requirement | bound | 2 seeds (3 draws) | 3 seeds (1 draw) |"
    draws = {k: mini.seed_draws(df, k) for k in (2, 3)}
    for key in ("joint_minus_simple_cil", "spread_over_se", "adapter_til_minus_full_ft"):
        (line,) = [x for x in lines if x.startswith(f"| {mini.NAMES[key]} | {mini.OPS[key]} {mini.BOUNDS[key]:g} |")]
        cells = [c.strip() for c in line.strip("|").split("|")[2:]]
        for cell, d in zip(cells, draws.values(), strict=True):
            met = sum(mini.holds(key, v) for v in d[key])
            assert cell == f"{met} ({d[key].median():.2f})"
    assert "joint Acc - linear probe" not in "\n".join(lines)  # no probe given: not a row
    assert lines[5] == "| all of these | | 0 (0%) | 0 (0%) |"  # quick: prototypes equal joint training
    assert mini.main(["--results-dir", str(QUICK), "--draws", "2-3"]) == 0
    assert capsys.readouterr().out.splitlines() == lines
    for bad, message in (("x", "pass a number of seeds K or a range K-L"), ("3-2", "the range is empty"),
                         ("2-4", "choose between 2 and the 3 seeds")):
        assert mini.main(["--results-dir", str(QUICK), "--draws", bad]) == 2
        assert message in capsys.readouterr().err
    assert mini.main(["--results-dir", str(QUICK), "--draws", "2-3", "--suite-seeds", "1993,1994"]) == 2
    assert "not a range" in capsys.readouterr().err


def test_seed_draws_refuse_what_they_cannot_compare(tmp_path, capsys):
    df = done(load_records(QUICK))
    with pytest.raises(mini.UserError, match="choose between 2 and the 3 seeds"):
        mini.seed_draws(df, 4)
    with pytest.raises(mini.UserError, match="no probe for seed"):
        mini.seed_draws(df, 2, probes={1993: 80.0})
    short = df[~((df["method"] == "lwf") & (df["seed"] == 1995))]
    with pytest.raises(mini.UserError, match=r"lwf has no record at seed\(s\) \[1995\]"):
        mini.seed_draws(short, 2)
    assert mini.main(["--results-dir", str(QUICK), "--results-dir", str(QUICK)]) == 2
    assert "pass one --results-dir" in capsys.readouterr().err
    assert mini.main(["--results-dir", str(tmp_path / "none"), "--draws", "2"]) == 2
    assert "no records folder at" in capsys.readouterr().err
    assert mini.main(["--results-dir", str(QUICK), "--suite-seeds", "1993"]) == 2
    assert "--suite-seeds goes with --draws" in capsys.readouterr().err
    assert mini.main(["--results-dir", str(QUICK), "--draws", "2", "--suite-seeds", "1993,x"]) == 2
    assert "pass comma-separated integers" in capsys.readouterr().err
    assert mini.main(["--results-dir", str(QUICK), "--draws", "2", "--suite-seeds", "1993,1999"]) == 2
    assert "not 2 of the records' seeds" in capsys.readouterr().err
    page = tmp_path / "blocks"
    page.write_text("<!-- draws:quick:start -->\n<!-- draws:quick:end -->\n")
    assert mini.main(["--results-dir", str(QUICK), "--draws", "2", "--suite-seeds", "1994,1993", "--readme",
                      str(page)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| requirement (2 of 3 seeds: 3 draws) | draws meeting it | least | median | largest | "
                          "at seeds 1993, 1994 | bound |")
    assert "all of these requirements met: 0 of 3 draws" in out  # quick: prototypes equal joint training
    assert page.read_text() == f"<!-- draws:quick:start -->\n{out.rstrip()}\n<!-- draws:quick:end -->\n"


@pytest.mark.parametrize("folder", MORE_SEEDS)
def test_design_page_seed_counts_are_what_the_committed_records_of_ten_seeds_give(tmp_path, folder):
    assert_page_regenerates(tmp_path, lambda page: draws_argv(folder, page, "2-10"))
    assert f"<!-- counts:{folder}:start -->\n| requirement | bound | 2 seeds (45 draws) |" in PAGE.read_text()


@pytest.mark.parametrize("folder", MORE_SEEDS)
def test_design_page_draws_are_what_the_committed_records_of_ten_seeds_give(tmp_path, folder):
    assert_page_regenerates(tmp_path, lambda page: draws_argv(folder, page))
    assert f"<!-- draws:{folder}:start -->\n| requirement (3 of 10 seeds: 120 draws) |" in PAGE.read_text()
    more = done(load_records(RESULTS / MORE_SEEDS[folder]))
    assert sorted(more["seed"].unique()) == list(NEW_SEEDS) and len(more) == 14 * len(NEW_SEEDS)
    assert all(r["provenance"]["git_dirty"] is False for r in more["record"])
    for seed in NEW_SEEDS:
        probe = json.loads((RESULTS / "mini" / f"designs_{MINI_FOLDERS[folder][0]}_{seed}.json").read_text())
        assert probe["seed"] == seed and probe["git_dirty"] is False
    # the rule chose at its own seed: the more-seeds run made the committed choices (cache keys aside)
    ours, theirs = (json.loads((RESULTS / f / "recipe.json").read_text())["choices"] for f in (folder, MORE_SEEDS[folder]))
    assert {k: {f: v for f, v in c.items() if f != "key"} for k, c in ours.items()} == {
        k: {f: v for f, v in c.items() if f != "key"} for k, c in theirs.items()}


def test_mini_seeds_are_the_same_code_as_the_mini_records():
    """Section 9 pools mini's three committed seeds with seven more: every record of a method carries one code
    hash, so the ten seeds are one code's records (and section 10's, the same code on an AVX2 CPU; section 14's
    runs under the baseline pin came later, after a docstring edit of CODA-Prompt's file (c43feff), and are one code's among
    themselves)."""
    for group in (("mini", "mini_seeds", "mini_avx2", "mini_avx2_seeds"), ("mini_baseline", "mini_baseline_seeds")):
        hashes = {}
        for folder in group:
            for record in done(load_records(RESULTS / folder))["record"]:
                hashes.setdefault(record["method"], set()).add(record["code_hash"])
        assert len(hashes) == 14 and all(len(h) == 1 for h in hashes.values()), group
