"""Rows "as released" (``MethodInfo.released_of``): the class order and seeds their registration pins reach the
jobs, and the job records hold them (docs/baselines.md section 15)."""

from __future__ import annotations

import json

import pytest
import yaml

import run_suite
from core.errors import UserError
from methods import METHODS
from runner.suite import expand_jobs, load_suite

SUITE = {
    "name": "released",
    "seeds": [1993, 1994],
    "backbones": {"tiny": {"tag": "vit_test_tiny", "pretrained": False}},
    "benchmarks": {"synthetic": {"n_tasks": 3, "n_classes": 6}},
    "defaults": {"epochs": 1, "batch_size": 8, "eval_batch_size": 16},
    "methods": {"coda_prompt": {}, "coda_prompt_released": {}, "inflora": {"rank": 2},
                "inflora_released": {"rank": 2}},
}


def test_every_released_row_shares_its_fair_rows_cost_and_paper_cell():
    """A twin is the same method run as released: its registration repeats the fair row's group, cost factors and
    paper key by hand (methods/*.py), so this keeps the copies from drifting (the dry-run cost and the paper cell
    of a twin are its fair row's)."""
    twins = {n: METHODS.info(n) for n in METHODS.names() if n in METHODS and METHODS.info(n).released_of}
    assert len(twins) == 5
    for name, info in twins.items():
        fair = METHODS.info(info.released_of)
        assert info.display == f"{fair.display} (as released)", name
        assert (info.group, info.train_cost, info.eval_cost, info.trains_on_all_seen, info.paper_key) == (
            fair.group, fair.train_cost, fair.eval_cost, fair.trains_on_all_seen, fair.paper_key), name


def test_released_registrations_name_their_fair_rows():
    for name, fair, seeds in (("coda_prompt_released", "coda_prompt", (0,)),
                              ("inflora_released", "inflora", (0, 1, 2, 3, 4)),
                              ("hide_prompt_released", "hide_prompt", (42, 40, 44))):
        info, fair_info = METHODS.info(name), METHODS.info(fair)
        assert info.released_of == fair and info.display.endswith("(as released)")
        assert info.paper_key == fair_info.paper_key and info.identity_order and info.seeds == seeds
        assert (info.train_cost, info.eval_cost) == (fair_info.train_cost, fair_info.eval_cost)
        assert METHODS.get(name).obj is METHODS.get(fair).obj  # the same method, not a copy
        assert not fair_info.identity_order and fair_info.seeds is None


def test_released_rows_pin_identity_order_and_their_seeds():
    jobs = expand_jobs(SUITE)
    by_method = {}
    for job in jobs:
        by_method.setdefault(job.method, []).append(job)
    assert [j.seed for j in by_method["coda_prompt_released"]] == [0]
    assert [j.seed for j in by_method["inflora_released"]] == [0, 1, 2, 3, 4]
    for m in ("coda_prompt", "inflora"):
        assert [j.seed for j in by_method[m]] == [1993, 1994]
        assert all(j.benchmark_cfg.order_seed is None for j in by_method[m])
        assert all(j.config()["benchmark"]["order_seed"] == -1 for j in by_method[f"{m}_released"])
    # --seeds narrows a pinned list; it never adds seeds the release did not run
    narrowed = expand_jobs(SUITE, methods=["inflora_released", "inflora"], seeds=[1, 1993])
    assert sorted((j.method, j.seed) for j in narrowed) == [("inflora", 1), ("inflora", 1993), ("inflora_released", 1)]


def test_seeds_that_miss_every_pinned_seed_say_which_rows_they_drop(capsys):
    """--seeds 1993 leaves the released rows no job: a note names them and their seeds instead of a silent gap."""
    jobs = expand_jobs(SUITE, methods=["inflora_released", "inflora", "coda_prompt_released"], seeds=[1993])
    assert sorted((j.method, j.seed) for j in jobs) == [("inflora", 1993)]
    out = capsys.readouterr().out
    assert "coda_prompt_released at 0; inflora_released at 0, 1, 2, 3, 4" in out and "add those seeds" in out
    expand_jobs(SUITE, methods=["inflora_released", "inflora"], seeds=[1, 1993])  # one pinned seed kept: no note
    assert "note" not in capsys.readouterr().out


def test_released_row_record_holds_identity_order_and_seed(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    out = tmp_path / "res"
    assert run_suite.main(["--suite", str(suite), "--results-dir", str(out), "--no-report",
                           "--methods", "inflora,inflora_released", "--seeds", "3"]) == 0
    released = json.loads((out / "records" / "inflora_released__synthetic__s3.json").read_text())
    fair = json.loads((out / "records" / "inflora__synthetic__s3.json").read_text())
    assert released["status"] == fair["status"] == "done"
    assert released["seed"] == 3 and released["config"]["benchmark"]["order_seed"] == -1
    assert released["class_order"] == list(range(6))
    assert fair["config"]["benchmark"]["order_seed"] is None and fair["class_order"] != list(range(6))


def test_an_overrides_seeds_narrow_its_pairs_and_nothing_else(capsys):
    """A released config that ran one seed on one benchmark: an ``overrides`` entry with ``seeds`` narrows just
    those (method, benchmark) pairs, pinned rows and plain ones alike; ``--seeds`` narrows further."""
    suite = {**SUITE, "benchmarks": {"synthetic": {"n_tasks": 3, "n_classes": 6},
                                     "other": {"benchmark": "synthetic", "n_tasks": 2, "n_classes": 6}},
             "overrides": [{"methods": ["inflora_released"], "benchmarks": ["synthetic"], "seeds": [0]},
                           {"methods": ["inflora"], "benchmarks": ["other"], "seeds": [1994]}]}
    runs = {}
    for job in expand_jobs(suite, methods=["inflora", "inflora_released"]):
        runs.setdefault((job.method, job.benchmark), []).append(job.seed)
    assert runs == {("inflora", "synthetic"): [1993, 1994], ("inflora", "other"): [1994],
                    ("inflora_released", "synthetic"): [0], ("inflora_released", "other"): [0, 1, 2, 3, 4]}
    jobs = expand_jobs(suite, methods=["inflora_released"], seeds=[1, 2])
    assert sorted((j.benchmark, j.seed) for j in jobs) == [("other", 1), ("other", 2)]
    assert "inflora_released on synthetic at 0" in capsys.readouterr().out  # the pair --seeds dropped is named
    disjoint = [{"methods": ["inflora"], "benchmarks": ["other"], "seeds": s} for s in ([1993], [1994])]
    with pytest.raises(UserError, match="its overrides leave inflora on other no seed to run"):
        expand_jobs({**suite, "overrides": disjoint})


@pytest.mark.parametrize("override, message", [
    ({"seeds": [7]}, "7 is not among the seeds it runs (0, 1, 2, 3, 4); an override's seeds can only narrow them"),
    ({"seeds": []}, "'seeds' must be a non-empty list of integers"),
    ({"seeds": "0"}, "'seeds' must be a non-empty list of integers"),
])
def test_an_overrides_seeds_that_do_not_narrow_are_bad_input(tmp_path, capsys, override, message):
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({**SUITE, "overrides": [
        {"methods": ["inflora_released"], "benchmarks": ["synthetic"], **override}]}))
    out = tmp_path / "res"
    assert run_suite.main(["--suite", str(suite), "--results-dir", str(out), "--no-report"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not out.exists()


def test_paper_tables_runs_the_released_configs_seeds_per_benchmark():
    """InfLoRA's released configs list seed 0 alone for ImageNet-R N=5, N=20 and DomainNet (0-4 elsewhere), and
    HiDe-Prompt's CUB-200 script seed 42 alone (42, 40, 44 elsewhere); both twins run the identity order."""
    runs = {}
    for job in expand_jobs(load_suite("paper_tables"), methods=["inflora_released", "hide_prompt_released"]):
        runs.setdefault(job.method, {}).setdefault(job.benchmark, []).append(job.seed)
        assert job.benchmark_cfg.order_seed == -1
    assert runs["inflora_released"] == {b: [0] if b in ("imagenet_r_5", "imagenet_r_20", "domainnet_5") else
                                        [0, 1, 2, 3, 4] for b in runs["inflora_released"]}
    assert runs["hide_prompt_released"] == {b: [42] if b == "cub200_10" else [42, 40, 44]
                                            for b in runs["hide_prompt_released"]}
    assert len(runs["inflora_released"]) == len(runs["hide_prompt_released"]) == 7


def test_an_overrides_benchmark_fields_reach_its_pairs_only(tmp_path, capsys):
    """``set_benchmark``: benchmark fields for the selected (method, benchmark) pairs, e.g. a reference's own
    transforms for its row "as released"; the other rows keep the benchmark as the suite declares it."""
    suite = {**SUITE, "overrides": [{"methods": ["inflora_released"], "set_benchmark": {"n_tasks": 2}}]}
    tasks = {j.method: j.benchmark_cfg.n_tasks for j in expand_jobs(suite)}
    assert tasks == {"coda_prompt": 3, "coda_prompt_released": 3, "inflora": 3, "inflora_released": 2}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**SUITE, "overrides": [{"methods": ["inflora"], "set_benchmark": {"nope": 1}}]}))
    assert run_suite.main(["--suite", str(bad), "--results-dir", str(tmp_path / "res"), "--no-report"]) == 2
    assert "benchmark synthetic (with the override fields of inflora): unknown key(s) nope" in capsys.readouterr().err and not (tmp_path / "res").exists()


def test_paper_tables_gives_the_released_rows_their_references_transforms():
    """CODA-Prompt's own transforms on every benchmark, InfLoRA's where its code has its own (not CUB-200 or
    ImageNet-A), HiDe-Prompt's on CIFAR-100; every fair row keeps SD-LoRA's (benchmarks/transforms.py)."""
    recipes = {}
    for job in expand_jobs(load_suite("paper_tables"), seeds=[0, 42, 1993]):
        recipes.setdefault(job.method, {})[job.benchmark] = job.benchmark_cfg.transform
    own = {"inflora_released": {"imagenet_r_5", "imagenet_r_10", "imagenet_r_20", "domainnet_5", "cifar100_10"},
           "coda_prompt_released": set(recipes["coda_prompt_released"])}
    for method, by_bench in recipes.items():
        for bench, recipe in by_bench.items():
            want = ("coda" if bench in own.get(method, ()) else
                    "hide_cifar" if (method, bench) == ("hide_prompt_released", "cifar100_10") else "pilot")
            assert recipe == want, (method, bench)
    assert len(recipes["coda_prompt_released"]) == 7
