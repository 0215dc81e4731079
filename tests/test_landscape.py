"""Tests of ``analysis.solutions`` and ``analysis.landscape`` on real per-task checkpoints of a tiny suite.

One module-scoped suite run (tiny random ViT, synthetic 3-task benchmark, five epochs, SD-LoRA, sequential LoRA and
full fine-tuning) provides records and checkpoints; every test reads them.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from analysis.__main__ import main as cli_main
from analysis.landscape import (
    LandscapeOptions,
    compute_landscape,
    filter_normalized_direction,
    landscape_samples,
    plane_basis,
    random_directions,
    write_landscape,
)
from analysis.solutions import (
    effective_state,
    interpolate,
    job_solutions,
    load_solution,
    load_test_samples,
    plain_model,
    predict,
    pretrained_state,
    proximity,
    separate_task_solutions,
    task_solution,
)
from core.errors import UserError
from runner.reload import load_record, load_strategy

METHODS = ("sd_lora", "seq_lora", "full_ft")
SUITE = {
    "name": "tiny_landscape",
    "seeds": [0],
    "backbones": {"tiny": {"tag": "vit_test_tiny", "pretrained": False}},
    "benchmarks": {"synthetic": {"n_tasks": 3, "n_classes": 6, "train_per_class": 16, "test_per_class": 10}},
    # 5 epochs: enough for accuracies between chance and 100% (a meaningful check of the endpoints), < 1 s a job
    "defaults": {"epochs": 5, "batch_size": 8, "eval_batch_size": 16},
    "methods": {m: {"lr": 0.01} for m in METHODS},
}


def job(method: str) -> str:
    return f"{method}__synthetic__s0"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    import run_suite

    root = tmp_path_factory.mktemp("landscape")
    suite = root / "tiny_landscape.yaml"
    suite.write_text(yaml.safe_dump(SUITE))
    # --threads 1: the runner sets torch's thread count in this process; keep the tests' single thread.
    rc = run_suite.main(["--suite", str(suite), "--results-dir", str(root / "res"), "--no-report", "--threads", "1"])
    assert rc == 0
    torch.set_num_threads(1)
    return root / "res"


def test_plain_model_reproduces_merged_strategy(results):
    """The premise of every analysis: the effective weights in one plain ViT compute the method's function."""
    for method in ("sd_lora", "full_ft"):
        record = load_record(results, job(method))
        strategy, bench = load_strategy(record, results, 2)
        strategy.before_evaluation()
        x, _ = load_test_samples(bench, [0, 1, 2])
        model = plain_model(record, strategy.model.head.out_features)
        load_solution(model, effective_state(strategy))
        with torch.no_grad():
            assert torch.equal(model(x), strategy.model(x))


def test_task_solution_keys(results):
    record = load_record(results, job("sd_lora"))
    strategy, _ = load_strategy(record, results, 1)
    sol = task_solution(strategy)
    assert sorted(sol) == ["backbone.blocks.0.attn.qkv.weight", "backbone.blocks.1.attn.qkv.weight", "head.bias",
                           "head.weight"]
    assert torch.equal(sol["backbone.blocks.0.attn.qkv.weight"], strategy.layers[0].effective_weight())
    assert sorted(task_solution(strategy, pretrained_state(record))) == sorted(sol)  # only qkv differs from W0
    full = load_record(results, job("full_ft"))
    full_sol = task_solution(load_strategy(full, results, 1)[0])
    assert set(pretrained_state(full)) <= set(full_sol)  # full fine-tuning: every backbone tensor


@pytest.mark.parametrize("method", METHODS)
def test_task_confusion_is_where_the_final_model_predicts(results, method):
    """The record's task_confusion and task_id_acc, recomputed from the final checkpoint's own predictions."""
    record = load_record(results, job(method))
    strategy, bench = load_strategy(record, results, 2)
    strategy.before_evaluation()
    ends = np.cumsum(record["classes_per_task"])
    rows, own, n = [], 0, 0
    for t in range(3):
        x, y = load_test_samples(bench, [t])
        pred = predict(strategy.model, x).argmax(1)
        assert 100.0 * int((pred == y).sum()) / len(y) == record["acc_matrix"][-1][t]  # the job's own evaluation
        counts = np.bincount(np.searchsorted(ends, pred.numpy(), side="right"), minlength=3)
        rows.append((100.0 * counts / len(y)).tolist())
        own, n = own + int(counts[t]), n + len(y)
    assert record["task_confusion"] == rows
    assert record["metrics"]["task_id_acc"] == 100.0 * own / n
    assert all(sum(row) == pytest.approx(100.0) for row in rows)
    assert all(record["acc_matrix"][-1][t] <= rows[t][t] for t in range(3))
    if method == "full_ft":  # the tiny run forgets: some old images go to other tasks (the check is not vacuous)
        assert any(rows[t][t] < 100.0 for t in range(2))


def test_prompt_method_has_no_solution():
    from conftest import make_strategy

    with pytest.raises(UserError, match="no weight-space solution"):
        task_solution(make_strategy("l2p"))


@pytest.mark.parametrize("method", ["sd_lora", "seq_lora"])
@pytest.mark.parametrize("t_a", [0, 1])
def test_interpolation_endpoints_reproduce_saved_solutions(results, method, t_a):
    record = load_record(results, job(method))
    t_b = t_a + 1
    out = interpolate(record, results, t_a, t_b)
    acc, til = record["acc_matrix"], record["til_matrix"]
    assert out["lambda"][0] == 0.0 and out["lambda"][-1] == 1.0 and len(out["lambda"]) == 11
    # lambda = 1 is W_b with its own head: the record's row after task b
    assert (out["t1"][-1], out["t2"][-1]) == (acc[t_b][t_a], acc[t_b][t_b])
    # lambda = 0 is W_a: its own head gives the record's row after task a ...
    assert out["t1_seen_a"][0] == acc[t_a][t_a] and out["t1_til"][0] == til[t_a][t_a]
    # ... and with the rows of the classes it has not seen taken from W_b, the method's own merged forward agrees
    strategy, bench = load_strategy(record, results, t_a)
    strategy.before_evaluation()
    head_b = load_strategy(record, results, t_b)[0].model.head
    n_a = strategy.model.head.out_features
    for t, key in ((t_a, "t1"), (t_b, "t2")):
        x, y = load_test_samples(bench, [t])
        with torch.no_grad():
            feats = strategy.model.features(x)
            logits = torch.cat([strategy.model.head(feats), F.linear(feats, head_b.weight[n_a:], head_b.bias[n_a:])], 1)
        assert out[key][0] == 100.0 * int((logits.argmax(1) == y).sum()) / len(y)


def test_filter_normalized_direction_matches_row_norms():
    g = torch.Generator().manual_seed(0)
    weights = {"fc": torch.randn(6, 5, generator=g) * 3, "conv": torch.randn(4, 3, 2, 2, generator=g),
               "bias": torch.randn(6, generator=g)}
    d = filter_normalized_direction(weights, torch.Generator().manual_seed(1))
    for key in ("fc", "conv"):
        w_rows, d_rows = weights[key].flatten(1), d[key].flatten(1)
        torch.testing.assert_close(d_rows.norm(dim=1), w_rows.norm(dim=1))
        assert not torch.allclose(d_rows / d_rows.norm(dim=1, keepdim=True), w_rows / w_rows.norm(dim=1, keepdim=True))
    assert torch.equal(d["bias"], torch.zeros(6))
    d1, d2 = random_directions(weights, seed=3)
    e1, e2 = random_directions(weights, seed=3)
    assert all(torch.equal(d1[k], e1[k]) and torch.equal(d2[k], e2[k]) for k in weights)  # deterministic
    assert not torch.equal(d1["fc"], d2["fc"])  # two different directions


def test_plane_passes_through_the_three_solutions(results):
    record = load_record(results, job("seq_lora"))
    states, changeable, _ = job_solutions(record, results, [0, 1, 2])
    keys = sorted(k for k in changeable if k.startswith("backbone."))
    p0, p1, p2 = ({k: s[k] for k in keys} for s in (states[2], states[1], states[0]))
    u, v, coords = plane_basis(p0, p1, p2)

    def flat(d):
        return torch.cat([d[k].double().flatten() for k in keys])

    assert abs(float(flat(u) @ flat(v))) < 1e-6
    assert abs(float(flat(u).norm()) - 1) < 1e-6 and abs(float(flat(v).norm()) - 1) < 1e-6
    assert coords[0] == (0.0, 0.0) and coords[1][1] == 0.0
    for point, (x, y) in zip((p0, p1, p2), coords):
        for k in keys:
            torch.testing.assert_close(p0[k] + x * u[k] + y * v[k], point[k], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="collinear"):
        plane_basis(p0, p1, {k: 2 * p1[k] - p0[k] for k in keys})


def _saved_loss(record, results, task: int, max_samples: int) -> dict[str, float]:
    """Loss of the saved solution through the method's own merged model, on the landscape's samples."""
    strategy, bench = load_strategy(record, results, task)
    strategy.before_evaluation()
    out = {}
    for name, (x, y) in landscape_samples(bench, task, max_samples).items():
        with torch.no_grad():
            out[name] = float(F.cross_entropy(strategy.model(x), y))
    return out


def test_landscape_origin_is_the_saved_solution(results):
    record = load_record(results, job("sd_lora"))
    saved = _saved_loss(record, results, 2, 30)
    random = compute_landscape(record, results, 2, LandscapeOptions(resolution=3, max_samples=30, device="cpu"))
    assert random["n_samples"] == {"old": 15, "new": 15}
    assert np.asarray(random["loss_new"]).shape == (3, 3) and random["x"][1] == 0.0 and random["y"][1] == 0.0
    for name in ("old", "new"):
        assert random[f"loss_{name}"][1][1] == pytest.approx(saved[name], rel=1e-5)
        assert len({v for row in random[f"loss_{name}"] for v in row}) == 9  # the weights really moved
    plane = compute_landscape(record, results, 2, LandscapeOptions(mode="plane", resolution=3, max_samples=30,
                                                                      device="cpu"))
    assert [p["task"] for p in plane["points"]] == [2, 1, 0]
    assert plane["points"][0]["loss_old"] == pytest.approx(saved["old"], rel=1e-5)
    # the point of W_1 (reconstructed from its plane coordinates) with W_2's head, the one head of the plane
    strategy, bench = load_strategy(record, results, 1)
    strategy.before_evaluation()
    head_2 = load_strategy(record, results, 2)[0].model.head
    x, y = landscape_samples(bench, 2, 30)["new"]
    with torch.no_grad():
        expected = float(F.cross_entropy(head_2(strategy.model.features(x)), y))
    assert plane["points"][1]["loss_new"] == pytest.approx(expected, rel=1e-4)
    again = compute_landscape(record, results, 2, LandscapeOptions(resolution=3, max_samples=30, device="cpu"))
    assert json.dumps(again, sort_keys=True) == json.dumps(random, sort_keys=True)


def test_landscape_figures_render_deterministically(results, tmp_path):
    record = load_record(results, job("seq_lora"))
    result = compute_landscape(record, results, 2, LandscapeOptions(mode="plane", resolution=3, max_samples=12,
                                                                       device="cpu"))
    first = write_landscape(result, tmp_path / "a")
    second = write_landscape(result, tmp_path / "b")
    assert [p.suffix for p in first] == [".png", ".pdf", ".json"]
    for a, b in zip(first, second):
        assert a.stat().st_size > 0 and a.read_bytes() == b.read_bytes()


def test_proximity_formula_and_separate_solutions(results):
    w0 = {"backbone.w": torch.zeros(2, 2)}
    one, two = torch.eye(2), 2 * torch.eye(2)
    m = proximity([{"backbone.w": one, "head.weight": torch.ones(1)}, {"backbone.w": two}], w0)
    np.testing.assert_allclose(m, [[0.0, 1.0], [0.5, 0.0]])  # ||W_i - W_j|| / ||W_i - W_0||, head left out
    with pytest.raises(ValueError, match="equal W0"):
        proximity([{"backbone.w": torch.zeros(2, 2)}, {"backbone.w": one}], w0)
    record = load_record(results, job("sd_lora"))
    sols = separate_task_solutions(record, "seq_lora", epochs=1, tasks=[0, 2])
    assert [s["head.weight"].shape[0] for s in sols] == [2, 6]  # each task trained alone, rows up to its classes
    assert sorted(k for k in sols[0] if k.startswith("backbone.")) == [
        "backbone.blocks.0.attn.qkv.weight", "backbone.blocks.1.attn.qkv.weight"]
    matrix = proximity(sols, pretrained_state(record))
    assert matrix.shape == (2, 2) and matrix[0, 1] > 0 and matrix[0, 0] == 0


def test_cli_writes_figures(results, tmp_path, monkeypatch):
    import analysis.__main__ as cli
    from core.cpu import level_in_force, pin_kernels

    pinned = []  # each subcommand pins the CPU kernels before its torch work, as run_suite.py does
    monkeypatch.setattr(cli, "pin_kernels", lambda level: pinned.append(level) or pin_kernels(level))
    base = ["--results-dir", str(results), "--device", "cpu", "--out", str(tmp_path)]
    assert cli_main(["landscape", *base, "--job", job("sd_lora"), "--resolution", "3", "--max-samples", "12"]) == 0
    assert cli_main(["interpolate", *base, "--jobs", f"{job('seq_lora')},{job('sd_lora')}", "--tasks", "0,1",
                     "--cpu-isa", "native"]) == 0
    assert cli_main(["proximity", *base, "--job", job("seq_lora"), "--source", "sequential"]) == 0
    assert pinned == ["avx2", "native", "avx2"]
    for name in ("landscape_random__sd_lora__synthetic__s0__task2.json", "proximity_sequential__seq_lora__synthetic__s0.json"):
        assert json.loads((tmp_path / name).read_text())["cpu_isa"] == level_in_force()  # named as a record names it
    names = sorted(p.name for p in tmp_path.iterdir())
    assert "landscape_random__sd_lora__synthetic__s0__task2.png" in names
    assert {"interpolation_task0_task1.png", "interpolation_task0_task1.pdf", "interpolation_task0_task1.json",
            "proximity_sequential__seq_lora__synthetic__s0.png"} <= set(names)
    data = json.loads((tmp_path / "interpolation_task0_task1.json").read_text())
    assert set(data) == {"seq_lora", "sd_lora"} and len(data["sd_lora"]["t1"]) == 11
    assert all(p.stat().st_size > 0 for p in tmp_path.iterdir())


def test_cli_errors_exit_2_with_one_line(results, tmp_path, capsys):
    # a record whose checkpoints are gone
    broken = tmp_path / "res"
    shutil.copytree(results / "records", broken / "records")
    base = ["--results-dir", str(broken), "--device", "cpu", "--out", str(tmp_path / "out")]
    cases = [
        ["landscape", *base, "--job", "no_such_job"],
        ["landscape", *base, "--job", job("sd_lora")],
        ["landscape", "--results-dir", str(results), "--job", job("sd_lora"), "--mode", "plane", "--task", "1"],
        ["interpolate", "--results-dir", str(results), "--jobs", job("sd_lora"), "--tasks", "0,1,2"],
        ["proximity", *base, "--job", job("seq_lora"), "--source", "sequential"],
    ]
    for argv in cases:
        capsys.readouterr()
        assert cli_main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, err
    assert not (tmp_path / "out").exists()
    assert cli_main(["--results-dir", str(tmp_path / "nothing")]) == 2  # the report keeps its behaviour
