"""SD-LoRA's maths (docs/sdlora.md sections 2-4), merged inference, variants and ablations."""

from __future__ import annotations

import pytest
import torch
from conftest import make_strategy, synthetic_bench, train_tasks

from methods.sd_lora import DecoupledQKV, Magnitudes


def _layer_with_history(norm_mode: str, path: str, n_old: int = 2, ranks=(3, 2, 4), seed: int = 0):
    """A DecoupledQKV on a random 8-wide qkv with ``n_old`` frozen directions and a current one, all random."""
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.Linear(8, 24)
    mags = Magnitudes(0.8)
    layer = DecoupledQKV(base, ("q", "v"), mags, norm_mode=norm_mode, path=path)
    hand = []
    for t in range(n_old + 1):
        layer.add_direction(ranks[t], generator=g)
        with torch.no_grad():
            layer.B_cur.copy_(torch.randn(layer.B_cur.shape, generator=g))
        A, B = layer.A_cur.detach().clone(), layer.B_cur.detach().clone()
        hand.append((A, B))
        if t < n_old:
            layer.freeze_direction()
    mags.set_old(torch.tensor([1.3, -0.4])[:n_old])
    mags.cur = torch.nn.Parameter(torch.tensor(0.7))
    return layer, mags, hand


def _hand_weight(layer, mags, hand, norm_mode):
    """W_eff from the formula of docs/sdlora.md section 2, built slice by slice with explicit d x d products."""
    W = layer.base.weight.detach().clone()
    d = layer.d
    for s, k in enumerate((0, 2)):  # q and v slices of the fused output
        delta = torch.zeros(d, layer.d_in)
        for i, (A, B) in enumerate(hand):
            prod = B[s] @ A[s]
            if i < len(hand) - 1:
                norm = B[s].norm() * A[s].norm() if norm_mode == "code" else prod.norm()
                delta += mags.old[i].detach() * prod / norm
            else:  # the current direction is trained unnormalised (docs/sdlora.md section 2)
                delta += mags.cur.detach() * prod
        W[k * d : (k + 1) * d] += delta
    return W


@pytest.mark.parametrize("norm_mode", ["code", "paper"])
@pytest.mark.parametrize("path", ["lowrank", "dense"])
def test_forward_equals_hand_built_weight(norm_mode, path):
    layer, mags, hand = _layer_with_history(norm_mode, path)
    x = torch.randn(5, 7, 8)
    W = _hand_weight(layer, mags, hand, norm_mode)
    expected = x @ W.t() + layer.base.bias.detach()
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)
    layer.merge()
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


def test_lowrank_and_dense_paths_agree_in_value_and_gradient():
    outs = []
    for path in ("lowrank", "dense"):
        torch.manual_seed(0)
        layer, mags, _ = _layer_with_history("code", path)
        x = torch.randn(4, 6, 8)
        loss = (layer(x) ** 2).sum()
        loss.backward()
        outs.append((loss.detach(), layer.B_cur.grad.clone(), layer.A_cur.grad.clone(), mags.old.grad.clone(),
                     mags.cur.grad.clone()))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_training_changes_only_the_intended_parameters():
    bench = synthetic_bench()
    strategy = make_strategy("sd_lora", epochs=2)
    train_tasks(strategy, bench, 1)
    before = {k: v.clone() for k, v in strategy.model.state_dict().items()}
    train_tasks_from(strategy, bench, 1)
    after = strategy.model.state_dict()
    adapter = ("A_old", "B_old", "row_task", "inv_norm", "offset", "A_cur", "B_cur")
    pretrained = [k for k in before if k.startswith("backbone.") and not k.endswith(adapter)]
    assert len(pretrained) > 20
    for key in pretrained:  # the pretrained ViT is bit-identical
        assert torch.equal(before[key], after[key]), f"backbone tensor {key} changed"
    for i in range(2):
        key = f"backbone.blocks.{i}.attn.qkv."
        # the first task's direction was frozen when task 2 started (the code's timing), exactly as trained
        assert torch.equal(after[key + "A_old"], before[key + "A_cur"])
        assert torch.equal(after[key + "B_old"], before[key + "B_cur"])
        assert after[key + "B_cur"].abs().sum() > 0  # the second task's direction was trained
    # old head rows get no gradient (masked loss, no weight decay); the new rows were trained
    assert torch.equal(after["head.weight"][:2], before["head.weight"])
    assert not torch.equal(after["head.weight"][2:4], torch.zeros_like(after["head.weight"][2:4]))
    assert after["magnitudes.old"].shape == (1,)  # one frozen direction; the current one has magnitudes.cur


def test_merged_equals_unmerged_after_training():
    bench = synthetic_bench()
    strategy = make_strategy("sd_lora", epochs=2)
    train_tasks(strategy, bench)
    x = torch.rand(6, 3, 16, 16)
    strategy.model.eval()
    with torch.no_grad():
        plain = strategy.model(x)
        strategy.before_evaluation()
        merged = strategy.model(x)
        strategy.after_evaluation()
    assert strategy.layers[0].merged_weight is None
    assert (plain - merged).abs().max().item() < 1e-5


@pytest.mark.parametrize("n_tasks,expected", [
    (5, [10, 10, 10, 10, 8]),
    (10, [10] * 4 + [8] * 4 + [6] * 2),
    (20, [10] * 4 + [8] * 4 + [6] * 12),
])
def test_rank_reduction_schedule_matches_spec(n_tasks, expected):
    from methods import METHODS

    cfg = METHODS.make_config("sd_lora_rr", {})
    assert [cfg.rank_for_task(t) for t in range(n_tasks)] == expected


def test_rank_reduction_keeps_old_ranks():
    bench = synthetic_bench(n_tasks=3, n_classes=6)
    strategy = make_strategy("sd_lora_rr", rank_breakpoints=[1, 2], rank_values=[4, 3, 2])
    train_tasks(strategy, bench)
    layer = strategy.layers[0]
    assert layer.row_task.bincount().tolist() == [4, 3] and layer.A_cur.shape[1] == 2  # last one still live
    assert strategy.history["ranks"] == [4, 3, 2]


def _kd_after_first_task(make_current):
    """Train task 1 of sd_lora_kd, then force the task-2 direction before folding."""
    bench = synthetic_bench()
    strategy = make_strategy("sd_lora_kd", epochs=1)
    train_tasks(strategy, bench, 1)
    exp = bench.scenario.train_stream[1]
    strategy.experience = exp
    strategy._before_training_exp()  # grows the head, adds the task-2 direction, builds the optimizer
    for layer in strategy.layers:
        make_current(layer)
    return strategy


def _outputs_with_direction_kept(strategy, x):
    """Model outputs if the current direction were frozen as an old one with magnitude alpha_t."""
    import copy

    clone = copy.deepcopy(strategy)
    for layer in clone.layers:
        layer.freeze_direction()
    clone.mags.set_old(torch.cat([clone.mags.old.detach(), clone.mags.cur.detach()[None]]))
    clone.model.eval()
    with torch.no_grad():
        return clone.model(x)


def test_kd_folds_an_exact_combination_and_keeps_the_function():
    def combination(layer):  # B_t A_t = 0.5 * B_0 A_0 in every layer: normalised, exactly D_0
        with torch.no_grad():
            layer.A_cur.copy_(layer.A_old[:, :10])
            layer.B_cur.copy_(0.5 * layer.B_old[:, :, :10])

    strategy = _kd_after_first_task(combination)
    x = torch.rand(5, 3, 16, 16)
    expected = _outputs_with_direction_kept(strategy, x)
    old_before = strategy.mags.old.detach().clone()
    strategy.consolidate(1)
    assert strategy.history["kd"]["folded"] == [1]
    assert strategy.history["kd"]["residuals"][0] < 1e-6
    assert strategy.layers[0].n_old == 1  # the new direction was dropped
    torch.testing.assert_close(strategy.mags.old.detach(), old_before + strategy.mags.cur.detach())
    strategy.model.eval()
    with torch.no_grad():
        assert (strategy.model(x) - expected).abs().max().item() < 1e-5


def test_kd_keeps_a_direction_that_is_not_explained():
    def random_direction(layer):
        with torch.no_grad():
            layer.B_cur.copy_(torch.randn_like(layer.B_cur))

    strategy = _kd_after_first_task(random_direction)
    strategy.consolidate(1)
    assert strategy.history["kd"]["folded"] == []
    assert strategy.history["kd"]["residuals"][0] > 0.5
    assert strategy.layers[0].n_old == 2


def _trainable_names(strategy):
    """Short names of the parameters the optimizer of the last task trained."""
    return {n.split(".")[-1] for n in strategy.trained_names}


@pytest.mark.parametrize("method,task2", [
    ("sd_lora", {"weight", "bias", "cur", "old", "A_cur", "B_cur"}),
    ("sd_lora_fixed_first", {"weight", "bias", "old"}),
    ("sd_lora_single", {"weight", "bias", "cur", "A_cur", "B_cur"}),
    ("sd_lora_no_rescale", {"weight", "bias", "cur", "A_cur", "B_cur"}),
])
def test_table4_ablations_train_only_their_parameters(method, task2):
    bench = synthetic_bench()
    strategy = make_strategy(method)
    train_tasks(strategy, bench, 1)
    assert _trainable_names(strategy) >= {"A_cur", "B_cur", "cur"}
    old_before = strategy.mags.old.detach().clone()
    train_tasks_from(strategy, bench, 1)
    assert _trainable_names(strategy) == task2
    if method == "sd_lora_no_rescale":
        assert torch.equal(strategy.mags.old.detach()[: len(old_before)], torch.ones_like(old_before))
    if method == "sd_lora_fixed_first":
        assert strategy.layers[0].n_old == 1 and strategy.layers[0].A_cur is None
    if method == "sd_lora_single":
        assert strategy.layers[0].n_old == 0 and strategy.layers[0].cur_normalized


def train_tasks_from(strategy, bench, start):
    strategy.train(bench.scenario.train_stream[start], eval_streams=[], num_workers=0)
    return strategy


def test_thirty_tasks_run_without_a_cap():
    bench = synthetic_bench(n_tasks=30, n_classes=30, train_per_class=2, test_per_class=1)
    strategy = make_strategy("sd_lora", rank=2, residual_every=0, batch_size=4)
    train_tasks(strategy, bench)
    assert strategy.layers[0].n_old == 29 and strategy.layers[0].A_cur is not None  # the last is still live
    assert strategy.layers[0].stored_rank == 58
    assert len(strategy.history["magnitudes"][-1]) == 30
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.isfinite(strategy.model(x)).all()


def test_freeze_at_task_end_normalises_before_evaluation():
    bench = synthetic_bench()
    late = train_tasks(make_strategy("sd_lora"), bench, 1)
    early = train_tasks(make_strategy("sd_lora", freeze_at="task_end"), bench, 1)
    assert late.layers[0].A_cur is not None and late.layers[0].n_old == 0
    assert early.layers[0].A_cur is None and early.layers[0].n_old == 1
    assert torch.equal(early.layers[0].A_old, late.layers[0].A_cur.detach())


def test_carry_alpha_keeps_learned_magnitudes():
    bench = synthetic_bench()
    strategy = make_strategy("sd_lora", carry_alpha=True, lr=0.5, epochs=2)
    train_tasks(strategy, bench, 2)
    mags = strategy.history["magnitudes"]
    assert mags[1][0] != pytest.approx(0.8)
    reset = make_strategy("sd_lora", lr=0.5, epochs=2)
    train_tasks(reset, bench, 2)
    # code behaviour: every magnitude restarts at alpha_init in each task, so old values drift from 0.8 only
    # within the task; with carry they continue from the previous task's values
    assert mags[1][0] != reset.history["magnitudes"][1][0]
