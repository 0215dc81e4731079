"""The shipped suite files and the runner's suite features: extends, --smoke, --weights, --data-root, dry-run."""

from __future__ import annotations

import json

import pytest
import yaml

import run_suite
from benchmarks import BENCHMARKS
from core.errors import UserError
from methods import METHODS
from runner.suite import check_split, class_count, expand_jobs, list_suites, load_suite


@pytest.mark.parametrize("name", list_suites())
def test_every_shipped_suite_expands(name):
    jobs = expand_jobs(load_suite(name))
    assert jobs and len({j.job_id for j in jobs}) == len(jobs)


def test_paper_tables_covers_every_cell_of_the_paper():
    jobs = expand_jobs(load_suite("paper_tables"))
    cells = {(j.method, j.benchmark_name, j.n_tasks()) for j in jobs}
    main = ["full_ft", "l2p", "dualprompt", "coda_prompt", "hide_prompt", "inflora", "sd_lora", "sd_lora_rr",
            "sd_lora_kd"]
    for method in main:
        for bench in [("imagenet_r", 5), ("imagenet_r", 10), ("imagenet_r", 20), ("imagenet_a", 10),
                      ("domainnet", 5), ("cifar100", 10), ("cub200", 10)]:
            assert (method, *bench) in cells
    for method in ["sd_lora_fixed_first", "sd_lora_single", "sd_lora_no_rescale"]:
        assert {(method, "imagenet_r", 5), (method, "imagenet_r", 10)} <= cells
    # every "as released" row (docs/baselines.md section 15) beside its plain row on every paper benchmark
    released = {n: METHODS.get(n).info.released_of for n in METHODS.names() if n in METHODS
                and METHODS.get(n).info.released_of}
    assert set(released) >= {"l2p_released", "dualprompt_released", "coda_prompt_released", "hide_prompt_released",
                             "inflora_released"}
    for twin, method in released.items():
        for _, bench, n in {c for c in cells if c[0] == method}:
            assert (twin, bench, n) in cells, (twin, bench, n)
    assert {j.seed for j in jobs if not j.method.endswith("_released")} == {1993, 1994, 1995, 1996, 1997}
    assert {j.seed for j in jobs if j.method in ("coda_prompt_released", "inflora_released")} == {0, 1, 2, 3, 4}
    by_id = {j.job_id: j for j in jobs}
    ina = by_id["sd_lora__imagenet_a_10__s1993"].method_cfg  # exps/sdlora_ina.json
    assert (ina.init_lr, ina.lr, ina.milestones, ina.lr_decay) == (0.01, 0.005, (10, 15), 0.05)
    assert by_id["sd_lora__cifar100_10__s1993"].method_cfg.lr == 0.008
    assert by_id["hide_prompt__cifar100_10__s1993"].method_cfg.preset == "original"


def test_paper_recipe_suite_extends_paper_tables():
    jobs = expand_jobs(load_suite("paper_tables_paper_recipe"))
    by_id = {j.job_id: j for j in jobs}
    cfg = by_id["sd_lora__imagenet_r_10__s1993"].method_cfg
    assert (cfg.optimizer, cfg.lr, cfg.epochs, cfg.norm_mode, cfg.alpha_init, cfg.carry_alpha) == (
        "adam", 0.008, 30, "paper", 1.0, True)
    assert by_id["sd_lora__domainnet_5__s1993"].method_cfg.epochs == 10
    dino = expand_jobs(load_suite("paper_figures_dino"))
    assert {j.backbone_cfg.tag for j in dino} == {"vit_base_patch16_224.dino"}


def test_dry_run_prints_jobs_and_a_gpu_estimate(capsys):
    assert run_suite.main(["--suite", "paper_tables", "--dry-run"]) == 0
    out = capsys.readouterr().out
    # 425 plain jobs + the "as released" rows on 7 benchmarks at their configs' seeds: l2p and dualprompt the suite's
    # 5; coda_prompt 0; inflora 0-4, 0 alone on ImageNet-R N=5, N=20 and DomainNet; hide_prompt 42, 40, 44, 42 on CUB
    released = 2 * 7 * 5 + 7 + (4 * 5 + 3) + (6 * 3 + 1)
    assert f"{425 + released} jobs; estimated" in out and "A100-hours" in out
    assert "sd_lora_kd__domainnet_5__s1997" in out


def test_weights_flag_points_the_backbone_at_a_file(tmp_path, capsys):
    weights = tmp_path / "w.safetensors"
    assert run_suite.main(["--suite", "paper_tables", "--dry-run", "--weights", str(weights)]) == 0
    assert run_suite.main(["--suite", "paper_tables", "--dry-run", "--weights", f"nope={weights}"]) == 2
    assert "no backbone 'nope'" in capsys.readouterr().err


def test_a_split_no_job_could_make_is_bad_input_before_anything_is_written(tmp_path, capsys):
    """Ten garments in three equal tasks: one line naming the fix, exit 2, no record, log or lock per job."""
    suite = tmp_path / "bad.yaml"
    suite.write_text("name: bad\nextends: quick\nbenchmarks:\n  split_fmnist: {n_tasks: 3}\n")
    out = tmp_path / "out"
    assert run_suite.main(["--suite", str(suite), "--results-dir", str(out), "--no-report"]) == 2
    err = capsys.readouterr().err
    assert "benchmark split_fmnist: 10 classes cannot be split" in err and "change n_tasks" in err
    assert not out.exists()
    # The counts it checks: the config's own (synthetic), the registration's, none where a config field may change
    # it (the glyph stream's glyph_classes: its jobs check their own split)
    assert class_count("synthetic", BENCHMARKS.make_config("synthetic", {"n_classes": 7}, where="t")) == 7
    assert class_count("split_fmnist", BENCHMARKS.make_config("split_fmnist", {}, where="t")) == 10
    assert class_count("split_fmnist_glyphs", BENCHMARKS.make_config("split_fmnist_glyphs", {"glyph_classes": 10},
                                                                      where="t")) is None
    with pytest.raises(UserError, match="benchmark s: 7 classes cannot be split"):
        check_split("s", "synthetic", BENCHMARKS.make_config("synthetic", {"n_classes": 7, "n_tasks": 3}, where="t"))


def test_data_root_must_exist(tmp_path, capsys):
    assert run_suite.main(["--suite", "paper_tables", "--data-root", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "missing: no such folder" in err and "--prepare" in err
    (tmp_path / "a_file").write_text("x")
    assert run_suite.main(["--suite", "paper_tables", "--data-root", str(tmp_path / "a_file")]) == 2
    assert "a_file: not a folder" in capsys.readouterr().err


def test_smoke_runs_a_paper_suite_to_latex_tables(tmp_path):
    suite = {
        "name": "mini_paper", "extends": "paper_tables", "seeds": [1993],
        "experiments": [{"methods": ["sd_lora", "full_ft"], "benchmarks": ["imagenet_r_5", "cifar100_10"]}],
    }
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(suite))
    out = tmp_path / "res"
    assert run_suite.main(["--suite", str(path), "--smoke", "--results-dir", str(out)]) == 0
    rec = json.loads((out / "records" / "sd_lora__imagenet_r_5__s1993.json").read_text())
    assert rec["status"] == "done" and rec["n_tasks"] == 5 and rec["classes_per_task"] == [40] * 5
    assert rec["class_order"][:5] == [168, 136, 51, 9, 183]  # seed 1993 on 200 classes (SDL utils/data_manager.py)
    assert (out / "tables" / "main.tex").exists() and (out / "tables" / "table2.tex").exists()


OPTIMIZER_FIELDS = {"preset", "optimizer", "lr", "init_lr", "epochs", "scheduler", "milestones", "lr_decay"}


def test_paper_optim_differs_from_paper_tables_only_in_the_optimizer(capsys):
    optim = {j.job_id: j for j in expand_jobs(load_suite("paper_optim"))}
    base = {j.job_id: j for j in expand_jobs(load_suite("paper_tables"))}
    assert {j.method for j in optim.values()} == {"sd_lora", "sd_lora_rr", "sd_lora_kd"}
    assert len(optim) == 3 * 7 * 5 and set(optim) <= set(base)
    changed = set()
    for job_id, job in optim.items():
        a, b = job.method_cfg.to_dict(), base[job_id].method_cfg.to_dict()
        changed |= {k for k in a if a[k] != b[k]}
        assert (job.benchmark_cfg, job.backbone_cfg, job.seed) == (base[job_id].benchmark_cfg,
                                                                   base[job_id].backbone_cfg, base[job_id].seed)
        cfg = job.method_cfg
        assert (cfg.optimizer, cfg.lr, cfg.init_lr, cfg.scheduler) == ("adam", 0.008, None, "constant")
        assert cfg.epochs == {"imagenet_r": 30, "domainnet": 10}.get(job.benchmark_name, 20)
        assert cfg.norm_mode == "code" and cfg.alpha_init == 0.8  # the code's model (KD carries alpha in both)
    assert changed and changed <= OPTIMIZER_FIELDS
    # the all-four recipe is this suite plus the model flags
    recipe = {j.job_id: j.method_cfg for j in expand_jobs(load_suite("paper_tables_paper_recipe"))}
    assert set(recipe) == set(optim)
    for job_id, cfg in recipe.items():
        a, b = cfg.to_dict(), optim[job_id].method_cfg.to_dict()
        assert {k for k in a if a[k] != b[k]} <= {"preset", "norm_mode", "alpha_init", "carry_alpha", "freeze_at"}
    assert run_suite.main(["--suite", "paper_optim", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "105 jobs; estimated" in out
    assert "sd_lora__imagenet_r_10__s1993" in out and "epochs=30 lr=0.008 sched=constant bs=128 opt=adam" in out


def test_dino_suite_runs_the_official_dino_schedule(capsys):
    jobs = expand_jobs(load_suite("paper_figures_dino"))
    assert {j.seed for j in jobs} == {1993}  # the seed exps/dino names
    for j in jobs:
        if j.method in ("sd_lora", "sd_lora_rr", "sd_lora_kd", "full_ft"):
            cfg = j.method_cfg
            assert (cfg.lr, cfg.init_lr, cfg.scheduler, cfg.milestones, cfg.lr_decay, cfg.epochs) == (
                0.01, None, "multistep", (10, 15), 0.05, 20), j.job_id
    assert run_suite.main(["--suite", "paper_figures_dino", "--dry-run"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("sd_lora__imagenet_a_10__s1993 "))
    assert "lr=0.01 sched=multistep[10,15]x0.05" in line
    assert "none of the 27 jobs feeds a paper cell" in out  # DINO: another backbone than every paper row
