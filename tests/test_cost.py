"""The paper's conventions in efficiency figures and plans: Table 5 counted as the paper counts (GFLOPs with attention
on CPU, learnable parameters without the head, stored features), the backbone-aware reference table (DINO runs) and
the dry run's cost per method and benchmark. The one-factor and DINO suites' settings: tests/test_suites.py."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import make_strategy, synthetic_bench, tiny_backbone, train_tasks
from torch import nn

import run_suite
from analysis import tables
from analysis.records import record_row, records_frame
from benchmarks import BENCHMARKS
from methods import METHODS
from runner.cost import (
    REFERENCE_CSV,
    CostModel,
    Rates,
    estimate_table,
    feeds_paper_cell,
    paper_cells,
    stored_rates,
    wall_clock,
)
from runner.executors import slots_for
from runner.profile import efficiency, inference_gflops
from runner.suite import expand_jobs, load_suite

ROOT = Path(__file__).resolve().parents[1]
PAPER_TAG = "vit_base_patch16_224.augreg2_in21k_ft_in1k"


def _fixture_maker():
    spec = importlib.util.spec_from_file_location("fixture_make", ROOT / "tests" / "fixtures" / "records" / "make.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _frame(records: list[dict]) -> pd.DataFrame:
    return records_frame([record_row(rec, Path(rec["job_id"] + ".json")) for rec in records])


# --- GFLOPs -----------------------------------------------------------------------------------------------------


class _Stub:
    """What :func:`inference_gflops` needs of a strategy: a model and the evaluation hooks."""

    def __init__(self, model):
        self.model = model

    def before_evaluation(self):
        pass

    def after_evaluation(self):
        pass


def _analytic_gflops(backbone, n_classes: int) -> float:
    """Multiply-adds x 2 of a timm ViT's matmuls on one image: patch embedding, per block qkv, QK^T, AV, proj and
    the two MLP layers, then the head on the CLS feature (norms, softmax and GELU are not counted by torch)."""
    d = backbone.embed_dim
    patch = backbone.patch_embed.patch_size[0]
    n_patches = backbone.patch_embed.num_patches
    tokens = n_patches + backbone.num_prefix_tokens
    hidden = backbone.blocks[0].mlp.fc1.out_features
    c_in = backbone.patch_embed.proj.in_channels
    macs = n_patches * c_in * patch * patch * d
    per_block = tokens * d * 3 * d + 2 * tokens * tokens * d + tokens * d * d + 2 * tokens * d * hidden
    macs += len(backbone.blocks) * per_block + d * n_classes
    return 2 * macs / 1e9


def test_cpu_gflops_count_attention_and_match_the_analytic_count():
    backbone = tiny_backbone().eval()
    assert backbone.blocks[0].attn.fused_attn  # the path that calls scaled_dot_product_attention
    model = nn.Sequential(backbone, nn.Linear(backbone.embed_dim, 10))
    counted = inference_gflops(_Stub(model), (3, 16, 16), torch.device("cpu"))
    expected = _analytic_gflops(backbone, 10)
    assert counted == pytest.approx(expected, rel=0.01)
    # torch's counter alone misses the CPU attention kernel: the products QK^T and AV of every block
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as plain:
        model(torch.zeros(1, 3, 16, 16))
    tokens, d = backbone.patch_embed.num_patches + 1, backbone.embed_dim
    missing = len(backbone.blocks) * 2 * 2 * tokens * tokens * d / 1e9
    assert plain.get_total_flops() / 1e9 == pytest.approx(expected - missing, rel=1e-9)


# --- learnable parameters and stored features as the paper counts them --------------------------------------------


def test_sd_lora_learnable_without_head_is_blocks_x_2_x_2rd():
    """The smoke backbone (vit_test_tiny): each block adds A (r x d) and B (d x r) on q and on v; besides them only
    the shared magnitudes train (one per task so far, code mode): Table 5's SD-LoRA 0.37 M = 12 x 2 x 2 x 10 x 768."""
    rank, n_tasks = 3, 2
    strategy = make_strategy("sd_lora", rank=rank)
    train_tasks(strategy, synthetic_bench(), n_tasks)
    backbone = strategy.model.backbone
    d, blocks = backbone.embed_dim, len(backbone.blocks)
    eff = efficiency(strategy, (3, 16, 16), torch.device("cpu"))
    magnitudes = n_tasks  # alpha of the current direction and of each earlier one
    assert eff["learnable_params_excl_head"] == blocks * 2 * (2 * rank * d) + magnitudes
    head = sum(p.numel() for p in strategy.model.head.parameters())
    assert eff["learnable_params"] == eff["learnable_params_excl_head"] + head
    assert eff["stored_features_paper"] == eff["stored_features"] == 0
    assert 12 * 2 * (2 * 10 * 768) == 368_640  # the paper's 0.37 M


def _t5_record(make, method: str, seed: int, **efficiency) -> dict:
    rec = make.make_record(method, "imagenet_r_20", seed, n_tasks=20)
    rec["benchmark_name"] = "imagenet_r"
    rec["efficiency"].update(efficiency)
    return rec


def test_table5_counts_as_the_paper_and_says_what_hide_prompt_keeps_beside():
    make = _fixture_maker()
    recs = [_t5_record(make, "hide_prompt", s, gflops=70.3, learnable_params_excl_head=80_000,
                       stored_features=6_144_000, stored_features_paper=153_600) for s in (1993, 1994)]
    recs += [_t5_record(make, "sd_lora", s, learnable_params_excl_head=368_660) for s in (1993, 1994)]
    t5 = tables.paper_table(_frame(recs), 5)
    line = next(ln for ln in t5.splitlines() if ln.startswith("HiDe-Prompt &"))
    assert line == r"HiDe-Prompt & 70.30 & 70.36 & \textbf{0.08} & 0.08 & 0.15 & 0.15 & 2 \\"
    assert r"hide\_prompt 6.14 M" in t5  # the footnote: what the harness keeps besides the paper's one mean per class
    assert r"SD-LoRA & \textbf{35.12} & 35.12 & 0.37 & 0.37 & \textbf{0.00} & 0.00 & 2 \\" in t5
    # an old record (no stored_features_paper) shows its stored_features, and no footnote
    for rec in recs:
        rec["efficiency"].pop("stored_features_paper", None)
    t5_old = tables.paper_table(_frame(recs), 5)
    assert r"& \textbf{0.08} & 0.08 & 6.14 & 0.15 & 2" in t5_old and "6.14 M" not in t5_old


# --- suites -------------------------------------------------------------------------------------------------------


def test_dino_records_are_never_set_beside_the_paper():
    make = _fixture_maker()
    recs = []
    for tag in ("vit_base_patch16_224.dino", PAPER_TAG):
        for seed in (1993, 1994):
            rec = make.make_record("sd_lora", "imagenet_r_5", seed)
            rec["config"]["backbone"] = {"tag": tag}
            recs.append(rec)
    dino = tables.reference_table(_frame(recs[:2]), REFERENCE_CSV)
    assert dino is None  # every paper cell is IN21K->IN1K
    both = tables.reference_table(_frame(recs), REFERENCE_CSV)
    assert both is not None and both.count("& Acc &") == 1
    # a --smoke stand-in is matched on the backbone it stands for
    smoke = [dict(r, config={"backbone": {"tag": "vit_test_tiny"}, "runtime": {"smoke_of": r["config"]["backbone"]["tag"]}})
             for r in recs[:2]]
    assert tables.reference_table(_frame(smoke), REFERENCE_CSV) is None


# --- the dry run's cost -------------------------------------------------------------------------------------------


def test_paper_tables_dry_run_prints_cost_per_method_and_benchmark_and_unpaired_jobs(capsys):
    assert run_suite.main(["--suite", "paper_tables", "--dry-run"]) == 0
    out = capsys.readouterr().out
    jobs = expand_jobs(load_suite("paper_tables"))
    unit = CostModel.choose().unit  # A100-hours while no GPU measurement is stored
    header = next(ln for ln in out.splitlines() if ln.startswith(unit))
    benches = list(dict.fromkeys(j.benchmark for j in jobs))
    assert header.split()[1:] == [*benches, "total"]
    rows = {ln.split()[0]: ln.split()[1:] for ln in out.splitlines()[out.splitlines().index(header) + 1:]
            if ln.split() and ln.split()[0] in {j.method for j in jobs} | {"total"}}
    assert set(rows) == {j.method for j in jobs} | {"total"}
    assert rows["sd_lora_single"][2] == "-"  # the ablations run on ImageNet-R N=5 and 10 only
    total = float(rows["total"][-1])
    assert f"estimated {total:.1f} {unit}" in out
    assert sum(float(r[-1]) for m, r in rows.items() if m != "total") == pytest.approx(total, abs=0.1 * len(rows))
    # jobs that feed no paper cell, counted here from the plan and the CSV
    with open(REFERENCE_CSV) as f:
        lines = [ln for ln in f if not ln.startswith("#")]
    paper = {(r["method"], r["benchmark"], int(r["n_tasks"]), r["backbone"]) for r in csv.DictReader(lines)}
    ours = {"ablation_fixed_first_direction": "sd_lora_fixed_first", "ablation_single_decoupled_lora": "sd_lora_single",
            "ablation_fixed_old_magnitudes": "sd_lora_no_rescale"}
    paper = {(ours.get(m, m), b, n, t) for m, b, n, t in paper}
    # a method's "as released" twin (MethodInfo.released_of) fills its paper cells too
    twins = {(name, b, n, t) for name in METHODS.names() if name in METHODS and METHODS.get(name).info.released_of
             for m, b, n, t in paper if m == METHODS.get(name).info.released_of}
    paper |= twins
    unpaired = [j for j in jobs if (j.method, j.benchmark_name, j.n_tasks(), j.backbone_cfg.tag) not in paper]
    # simple_cil, joint, seq_lora (figures), HiDe-Prompt and its "as released" row (seeds 42, 40, 44; 42 alone on
    # CUB) on CIFAR-100 and CUB
    assert len(unpaired) == 5 * (7 + 7 + 2 + 2) + 3 + 1
    assert f"{len(unpaired)} of {len(jobs)} jobs feed no paper cell" in out
    assert paper_cells() == paper and sum(not feeds_paper_cell(j, paper) for j in jobs) == len(unpaired)


def test_estimate_table_marks_unknown_sizes():
    jobs = expand_jobs(load_suite("quick"))
    table = estimate_table(jobs)
    assert table.splitlines()[0].split() == ["A100-hours", "split_fmnist", "total"]
    assert len(table.splitlines()) == len({j.method for j in jobs}) + 2


# --- the cost model from measured rates ---------------------------------------------------------------------------


def _hand_estimate(raw: dict, job, method: str, factors: tuple[float, float] = (1.0, 1.0)) -> float:
    """The cost model written out over a rates file's raw JSON: per task, epochs x training images x seconds per
    training image plus seen test images x seconds per evaluation image, the seconds linear in the task index
    between the measured first and last task, scaled by tokens."""
    ips = raw["methods"][method]["images_per_s"]
    info = BENCHMARKS.get(job.benchmark_name).info
    n, last = job.n_tasks(), raw["tasks"] - 1
    scale = ((getattr(job.benchmark_cfg, "img_size", 224) or 224) / raw["img_size"]) ** 2
    all_seen = METHODS.get(job.method_name).info.trains_on_all_seen
    total = 0.0
    for t in range(n):
        frac = min(t, last) / last
        sec = {w: (1 - frac) / ips[f"{w}_first"]["method"] + frac / ips[f"{w}_last"]["method"]
               if f"{w}_first" in ips else 0.0 for w in ("train", "eval")}
        images = info.train_size * ((t + 1) / n if all_seen else 1 / n)
        total += job.method_cfg.for_task(t)[1] * images * sec["train"] * factors[0] * scale
        total += info.test_size * (t + 1) / n * sec["eval"] * factors[1] * scale
    return total


def test_cost_model_estimate_is_the_formula_over_every_stored_rates_file():
    stored = stored_rates()
    assert stored, "no measured rates in results/reference/rates/ (python bench/throughput.py --out FILE)"
    jobs = expand_jobs(load_suite("paper_tables"), benchmarks=["imagenet_r_10"], seeds=[1993])
    by_method = {j.method: j for j in jobs if j.n_tasks() == 10}
    # Avalanche's EWC on the same benchmark: in no rates file, so scaled from SD-LoRA's
    by_method["ewc"] = dataclasses.replace(by_method["full_ft"], method="ewc", method_name="avalanche:EWC",
                                           method_cfg=METHODS.make_config("avalanche:EWC", {"ewc_lambda": 100}))
    for rates in stored:
        raw = json.loads(rates.path.read_text())
        model = CostModel(rates)
        for name in ("sd_lora", "inflora", "l2p", "joint", "full_ft", "simple_cil"):
            job = by_method[name]
            assert model.job_seconds(job) == pytest.approx(_hand_estimate(raw, job, name), rel=1e-12), name
        # a method the file does not hold (an Avalanche strategy): SD-LoRA's figures times its declared factors
        ewc = by_method["ewc"]
        info, anchor = METHODS.get(ewc.method_name).info, METHODS.get("sd_lora").info
        factors = (info.train_cost / anchor.train_cost, info.eval_cost / anchor.eval_cost)
        assert ewc.method_name not in raw["methods"]
        assert model.job_seconds(ewc) == pytest.approx(_hand_estimate(raw, ewc, "sd_lora", factors), rel=1e-12)
        # the measured model differs from the calibration (it is not silently the old constant)
        assert model.job_seconds(by_method["sd_lora"]) != CostModel().job_seconds(by_method["sd_lora"])


def test_wall_clock_spreads_longest_first_and_uses_the_slot_speedup():
    assert wall_clock([10, 5, 5], gpus=1, slots=1, speedup=1.0) == 20
    assert wall_clock([10, 5, 5], gpus=2, slots=1, speedup=1.0) == 10  # 10 | 5 + 5
    assert wall_clock([10, 5, 5], gpus=1, slots=2, speedup=1.0) == 20  # two at once, each at half speed
    assert wall_clock([10, 5, 5], gpus=1, slots=2, speedup=2.0) == 10  # two at once at full speed
    assert wall_clock([10, 5, 5], gpus=1, slots=2, speedup=1.5) == pytest.approx(10 * 2 / 1.5 + 0.0)


def test_slots_per_gpu_from_free_memory_and_the_measured_optimum():
    assert slots_for(free_mb=140_000, job_mb=6_000, optimum=4) == 4  # memory for 18, the optimum is 4
    assert slots_for(free_mb=20_000, job_mb=6_000, optimum=4) == 2  # 6,000 x 1.25 headroom fits twice
    assert slots_for(free_mb=1_000, job_mb=6_000, optimum=4) == 1  # never fewer than one
    assert slots_for(free_mb=None, job_mb=None, optimum=1) == 1


def test_dry_run_names_its_cost_source_and_wall_clock_and_refuses_a_bad_rates_file(capsys, tmp_path, monkeypatch):
    rates = stored_rates()[0]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # --gpus 0,0,1,1 is checked against the visible GPUs
    argv = ["--suite", "paper_tables", "--methods", "sd_lora", "--dry-run", "--rates", str(rates.path)]
    assert run_suite.main([*argv, "--gpus", "0,0,1,1"]) == 0
    out = capsys.readouterr().out
    assert f"source: images/s measured by bench/throughput.py on {rates.device_name}" in out
    assert rates.date in out and "2 GPU(s) x 2 slot(s)" in out
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert run_suite.main(["--suite", "quick", "--dry-run", "--rates", str(bad)]) == 2
    assert "not a bench/throughput.py --out file" in capsys.readouterr().err
    assert isinstance(Rates.load(rates.path), Rates)


def test_dry_run_says_when_its_gpu_estimate_is_not_this_machines_time(capsys, tmp_path, monkeypatch):
    """A CPU suite on a machine without a GPU: the headline's GPU-hours come with a note saying so."""
    argv = ["--suite", "quick", "--methods", "simple_cil", "--dry-run", "--results-dir", str(tmp_path / "r")]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU visible
    assert run_suite.main(argv) == 0
    out = capsys.readouterr().out
    assert CostModel.choose().unit != "CPU-hours" and "would train on this machine's CPU" in out
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # a GPU visible: --device auto would use it
    assert run_suite.main(argv) == 0
    assert "this machine's CPU" not in capsys.readouterr().out
    assert not (tmp_path / "r").exists()
