"""The recipe rule (runner/recipe.py): choices made on a validation split of the first task, by code, then applied."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_bench
from test_runner import TINY_SUITE, run, write_suite
from test_runner import test_bad_suite_exits_2_with_one_line_and_writes_nothing as bad_suite_exits_2

from core.errors import UserError
from runner import recipe
from runner.recipe import RecipeRule
from runner.suite import expand_jobs

RULE = {"validation": 0.25, "seed": 0, "grid": {"lr": [0.01, 0.1], "epochs": [1]},
        "families": {"adapters": ["sd_lora"], "full": ["full_ft"]}}


def suite_with_rule(**rule_changes) -> dict:
    suite = json.loads(json.dumps(TINY_SUITE))
    suite["recipe"] = {**RULE, **rule_changes}
    return suite


def test_split_holds_out_each_class_fraction_of_training_images_only():
    bench = synthetic_bench(0, n_tasks=3, n_classes=6)
    train, held = recipe.split_tasks(bench, 0.25, seed=0)
    first = bench.scenario.train_stream[0].dataset
    assert len(train) + len(held) == len(first)
    kept_t, held_t = np.asarray(list(train.targets)), np.asarray(list(held.targets))
    for c in np.unique(np.asarray(list(first.targets))):
        n = int((np.asarray(list(first.targets)) == c).sum())
        assert int((held_t == c).sum()) == round(0.25 * n) and int((kept_t == c).sum()) == n - round(0.25 * n)
    # the same seed, the same split; another seed, another one
    again = recipe.split_tasks(bench, 0.25, seed=0)[1]
    other = recipe.split_tasks(bench, 0.25, seed=1)[1]
    x = [held[i][0] for i in range(len(held))]
    assert all(np.array_equal(a, again[i][0]) for i, a in enumerate(x))
    assert not all(np.array_equal(a, other[i][0]) for i, a in enumerate(x))


def test_run_makes_the_choices_on_validation_and_applies_them(tmp_path, capsys):
    out = tmp_path / "res"
    assert run(["--suite", str(write_suite(tmp_path, suite_with_rule())), "--results-dir", str(out),
                "--no-report"]) == 0
    doc = json.loads((out / "recipe.json").read_text())
    assert set(doc["choices"]) == {"synthetic/adapters", "synthetic/full"}
    for label, key in (("sd_lora", "synthetic/adapters"), ("full_ft", "synthetic/full")):
        choice = doc["choices"][key]
        grid = {p["lr"]: p["val_acc"] for p in choice["grid"]}
        assert set(grid) == {0.01, 0.1} and choice["val_acc"] == max(grid.values())
        best = min(lr for lr, acc in grid.items() if acc == choice["val_acc"])  # ties: the smaller lr
        assert choice["lr"] == best and choice["epochs"] == 1
        rec = json.loads((out / "records" / f"{label}__synthetic__s0.json").read_text())
        assert rec["config"]["method"]["lr"] == best
        assert rec["config"]["runtime"]["recipe"]["lr"] == best
    assert "recipe: 4 validation runs" in capsys.readouterr().out
    # a rerun reuses the stored choices: nothing selected again, every job already done
    assert run(["--suite", str(write_suite(tmp_path, suite_with_rule())), "--results-dir", str(out),
                "--no-report"]) == 0
    assert "validation runs" not in capsys.readouterr().out
    assert json.loads((out / "recipe.json").read_text())["choices"] == doc["choices"]
    # status before the rule has chosen for a changed rule: RULE, not a stale record (the config is not known yet)
    for rule, line in ((suite_with_rule(), "2 jobs: 2 done"), (suite_with_rule(validation=0.5), "2 jobs: 0 done")):
        assert run(["status", "--suite", str(write_suite(tmp_path, rule)), "--results-dir", str(out)]) == 0
        text = capsys.readouterr().out
        assert line in text and ("RULE" in text) == (rule["recipe"]["validation"] == 0.5) and "STALE" not in text
    assert "2 pending (2 with a record, awaiting the recipe rule)" in text and "awaits the recipe rule" in text


def test_validation_accuracy_is_deterministic_on_cpu():
    rule = RecipeRule.from_suite(suite_with_rule())
    jobs = expand_jobs(suite_with_rule())
    probe = recipe.probe_jobs(rule, jobs)[("synthetic", "adapters")]
    a = recipe.validation_accuracy(probe, {"lr": 0.1, "epochs": 1}, 0.25, threads=1)
    b = recipe.validation_accuracy(probe, {"lr": 0.1, "epochs": 1}, 0.25, threads=1)
    assert a == b and 0.0 <= a <= 100.0


def test_two_task_split_holds_out_each_tasks_classes_and_keeps_the_first_tasks_split():
    bench = synthetic_bench(0, n_tasks=3, n_classes=6)
    train, held = recipe.split_tasks(bench, 0.25, seed=0, tasks=2)
    first_two = [bench.scenario.train_stream[t].dataset for t in range(2)]
    assert len(train) + len(held) == sum(len(d) for d in first_two)
    assert set(np.asarray(list(held.targets)).tolist()) == set(range(4))  # both tasks' classes, not the third's
    one = recipe.split_tasks(bench, 0.25, seed=0)[1]
    assert all(np.array_equal(one[i][0], held[i][0]) for i in range(len(one)))
    with pytest.raises(UserError, match="lower recipe.tasks"):
        recipe.split_tasks(bench, 0.25, seed=0, tasks=4)


def test_two_task_validation_trains_both_tasks_and_scores_the_mean_over_them(monkeypatch):
    suite = suite_with_rule(tasks=2, families={"adapters": ["sd_lora"], "full": ["full_ft"]})
    rule, jobs = RecipeRule.from_suite(suite), expand_jobs(suite)
    assert rule.tasks == 2 and rule.describe()["tasks"] == 2
    assert "tasks" not in RecipeRule.from_suite(suite_with_rule()).describe()  # stored choices of tasks 1 stay valid
    probe = recipe.probe_jobs(rule, jobs)[("synthetic", "full")]
    from avalanche.training.templates import SupervisedTemplate

    from runner.metrics import AccuracyCollector
    trained, rows = [], []
    real_train, real_row = SupervisedTemplate.train, AccuracyCollector.row
    monkeypatch.setattr(SupervisedTemplate, "train", lambda self, exp, *a, **k: trained.append(
        sorted(exp.classes_in_this_experience)) or real_train(self, exp, *a, **k))
    monkeypatch.setattr(AccuracyCollector, "row", lambda self: rows.append(real_row(self)) or rows[-1])
    acc = recipe.validation_accuracy(probe, {"lr": 0.1, "epochs": 1}, 0.25, threads=1, tasks=2)
    assert trained == [[0, 1], [2, 3]]  # the two tasks in turn, each with its own classes
    cil = rows[-1][0]
    assert len(cil) == 2 and acc == pytest.approx(float(np.mean(cil)))
    assert acc == recipe.validation_accuracy(probe, {"lr": 0.1, "epochs": 1}, 0.25, threads=1, tasks=2)


def test_ties_go_to_fewer_epochs_then_the_smaller_lr(tmp_path, monkeypatch):
    suite = suite_with_rule(grid={"lr": [0.3, 0.03], "epochs": [3, 2]})
    rule, jobs = RecipeRule.from_suite(suite), expand_jobs(suite)
    monkeypatch.setattr(recipe, "validation_accuracy", lambda probe, point, fraction, threads, tasks=1: 50.0)
    recipe.select(rule, jobs, jobs, tmp_path, recipe.run_here(1), threads=1, log=lambda _: None)
    applied, pending = recipe.apply(rule, jobs, jobs, tmp_path)
    assert pending == 0
    assert {(j.method_cfg.lr, j.method_cfg.epochs) for j in applied} == {(0.03, 2)}


def test_a_changed_rule_or_probe_config_selects_again(tmp_path, monkeypatch):
    suite = suite_with_rule()
    rule, jobs = RecipeRule.from_suite(suite), expand_jobs(suite)
    monkeypatch.setattr(recipe, "validation_accuracy", lambda probe, point, fraction, threads, tasks=1: point["lr"])
    recipe.select(rule, jobs, jobs, tmp_path, recipe.run_here(1), threads=1, log=lambda _: None)
    assert recipe.apply(rule, jobs, jobs, tmp_path)[1] == 0
    wider = suite_with_rule(validation=0.5)
    assert recipe.apply(RecipeRule.from_suite(wider), jobs, jobs, tmp_path)[1] == 2
    changed = json.loads(json.dumps(suite))
    changed["methods"]["sd_lora"]["rank"] = 3
    jobs2 = expand_jobs(changed)
    assert recipe.apply(rule, jobs2, jobs2, tmp_path)[1] == 1  # the full family's probe is unchanged


def test_a_narrowed_run_still_uses_its_family_probe(tmp_path, monkeypatch):
    suite = suite_with_rule(families={"all": ["full_ft", "sd_lora"]})
    rule, every = RecipeRule.from_suite(suite), expand_jobs(suite)
    narrowed = expand_jobs(suite, methods=["sd_lora"])
    seen = []
    monkeypatch.setattr(recipe, "validation_accuracy",
                        lambda probe, point, fraction, threads, tasks=1: seen.append(probe.method) or point["lr"])
    recipe.select(rule, every, narrowed, tmp_path, recipe.run_here(1), threads=1, log=lambda _: None)
    assert set(seen) == {"full_ft"}
    (job,) = recipe.apply(rule, narrowed, every, tmp_path)[0]
    assert job.method == "sd_lora" and job.method_cfg.lr == 0.1 and job.runtime["recipe"]["probe"] == "full_ft"


def test_a_run_narrowed_to_one_family_makes_and_needs_only_that_familys_choice(tmp_path, monkeypatch):
    suite = suite_with_rule()  # two families: adapters (sd_lora) and full (full_ft)
    rule, every = RecipeRule.from_suite(suite), expand_jobs(suite)
    narrowed = expand_jobs(suite, methods=["full_ft"])
    seen = []
    monkeypatch.setattr(recipe, "validation_accuracy",
                        lambda probe, point, fraction, threads, tasks=1: seen.append(probe.method) or point["lr"])
    assert recipe.apply(rule, narrowed, every, tmp_path)[1] == 1  # what a dry run reports: one choice, not two
    recipe.select(rule, every, narrowed, tmp_path, recipe.run_here(1), threads=1, log=lambda _: None)
    assert set(seen) == {"full_ft"}
    jobs, pending = recipe.apply(rule, narrowed, every, tmp_path)
    assert pending == 0 and all(j.method_cfg.lr == 0.1 for j in jobs)
    assert recipe.apply(rule, every, every, tmp_path)[1] == 1  # the adapters' choice is still to make


@pytest.mark.parametrize("change,message", [
    ({"seed": "one"}, "recipe.seed must be an integer"),
    ({"validation": 1.5}, "recipe.validation must be a fraction"),
    ({"grid": {"lr": [0.1], "momentum": [0.9]}}, "recipe.grid must map some of lr, epochs"),
    ({"grid": {"lr": [-1]}}, "recipe.grid.lr must be a list of learning rates > 0"),
    ({"families": {"a": ["sd_lora"], "b": ["sd_lora"]}}, "sd_lora in more than one family"),
    ({"families": {"a": ["sd_lora_rr"]}}, "not among the suite's methods"),
    ({"tasks": 0}, "recipe.tasks must be an integer >= 1"),
    ({"tasks": 2, "families": {"all": ["full_ft", "sd_lora"]}}, "give each member of all its own family"),
    ({"tasks": 4}, "recipe.tasks is 4 but benchmark synthetic has 3 task(s); lower recipe.tasks"),
])
def test_bad_rule_exits_2_naming_the_fix_and_writes_nothing(tmp_path, capsys, change, message):
    bad_suite_exits_2(tmp_path, capsys, {"recipe": {**RULE, **change}}, message)


def test_missing_keys_and_probe_without_jobs_are_named():
    suite = suite_with_rule()
    del suite["recipe"]["seed"]
    with pytest.raises(UserError, match="the keys validation, seed, grid, families and optionally tasks"):
        RecipeRule.from_suite(suite)
    suite = suite_with_rule(families={"all": ["full_ft", "sd_lora"]})
    suite["experiments"] = [{"methods": ["sd_lora"]}]
    rule, jobs = RecipeRule.from_suite(suite), expand_jobs(suite)
    with pytest.raises(UserError, match="no job of its probe full_ft on benchmark synthetic"):
        recipe.probe_jobs(rule, jobs)


def test_dry_run_names_the_rule_and_the_choices_to_make(tmp_path, capsys):
    out = tmp_path / "r"
    assert run(["--suite", str(write_suite(tmp_path, suite_with_rule())), "--dry-run", "--results-dir", str(out)]) == 0
    text = capsys.readouterr().out
    assert "recipe rule: lr in [0.01, 0.1], epochs in [1]" in text and "2 choice(s) to make first (4 validation" in text
    assert not out.exists()


def test_dry_run_shows_stored_choices_and_costs_pending_ones_at_the_grids_most_epochs(tmp_path, capsys):
    wide = write_suite(tmp_path, suite_with_rule(grid={"lr": [0.01, 0.1], "epochs": [1, 2]}))
    assert run(["--suite", str(wide), "--dry-run", "--results-dir", str(tmp_path / "none")]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("sd_lora__", "full_ft__"))]
    assert lines and all("epochs=2 " in line and line.endswith("[rule: to choose]") for line in lines)

    out = tmp_path / "res"
    suite = write_suite(tmp_path, suite_with_rule())
    assert run(["--suite", str(suite), "--results-dir", str(out), "--no-report"]) == 0
    choices = json.loads((out / "recipe.json").read_text())["choices"]
    capsys.readouterr()
    assert run(["--suite", str(suite), "--dry-run", "--results-dir", str(out)]) == 0
    text = capsys.readouterr().out
    for label, key in (("sd_lora", "synthetic/adapters"), ("full_ft", "synthetic/full")):
        (line,) = [x for x in text.splitlines() if x.startswith(f"{label}__")]
        choice = choices[key]
        assert f"epochs={choice['epochs']} lr={choice['lr']:g} " in line
        assert line.endswith(f"[rule: chosen, validation {choice['val_acc']:.2f}]")
    assert "0 choice(s) to make first" in text and "costed at" not in text


def test_cpu_suites_share_one_rule_and_diagnostics_opt_out():
    from runner.suite import load_suite

    quick, mini, mixed = load_suite("quick"), load_suite("mini"), load_suite("mini_mixed")
    assert quick["recipe"] == mini["recipe"] == mixed["recipe"] and RecipeRule.from_suite(quick) is not None
    assert load_suite("mini_epochs").get("recipe") is None  # a fixed-settings measurement, said in its file
    rule = RecipeRule.from_suite(quick)
    trained = {label for label in quick["methods"] if label != "simple_cil"}
    assert {m for f in rule.families for m in f.members} == trained  # every trained method has a family


def test_committed_choices_match_the_records(tmp_path):
    """The committed CPU suites' recipe.json names the lr and epochs every record of a family member ran with."""
    repo = Path(__file__).resolve().parent.parent
    for folder in ("quick", "mini_inverted", "mini_mixed", "mini"):
        doc = json.loads((repo / "docs" / "results" / folder / "recipe.json").read_text())
        assert doc["git_dirty"] is False
        for rec_path in sorted((repo / "docs" / "results" / folder / "records").glob("*.json")):
            rec = json.loads(rec_path.read_text())
            chosen = rec["config"]["runtime"].get("recipe")
            if rec["method"] == "simple_cil":
                assert chosen is None
                continue
            choice = doc["choices"][f"{rec['benchmark']}/{chosen['family']}"]
            assert rec["config"]["method"]["lr"] == choice["lr"] == chosen["lr"]
            assert rec["config"]["method"]["epochs"] == choice["epochs"]
