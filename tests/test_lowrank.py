"""The generic low-rank layer (plain LoRA on qkv slices) and SD-LoRA's layer as a variant on top of it."""

from __future__ import annotations

import pytest
import torch
from conftest import make_strategy, synthetic_bench, train_tasks
from torch.overrides import TorchFunctionMode

from methods.lowrank import LowRankQKV
from methods.sd_lora import DecoupledQKV, Magnitudes


def _plain_layer(path: str, n_old: int = 2, ranks=(3, 2, 4), slices=("k", "v"), seed: int = 0):
    """A LowRankQKV on a random 8-wide qkv with ``n_old`` frozen random directions and a current one."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layer = LowRankQKV(torch.nn.Linear(8, 24), slices, path=path)
    hand = []
    for t in range(n_old + 1):
        layer.add_direction(ranks[t % len(ranks)], generator=g)
        with torch.no_grad():
            layer.B_cur.copy_(torch.randn(layer.B_cur.shape, generator=g))
        hand.append((layer.A_cur.detach().clone(), layer.B_cur.detach().clone()))
        if t < n_old:
            layer.freeze_direction()
    return layer, hand


def _hand_weight(layer, hand):
    """``W0 + sum_t B_t A_t`` on the adapted slices, with explicit d x d products."""
    W = layer.base.weight.detach().clone()
    for s, k in enumerate(layer.slice_idx.tolist()):
        for A, B in hand:
            W[k * layer.d : (k + 1) * layer.d] += B[s] @ A[s]
    return W


@pytest.mark.parametrize("path", ["lowrank", "dense"])
def test_plain_layer_is_w0_plus_the_sum_of_its_directions_merged_or_not(path):
    layer, hand = _plain_layer(path)
    assert layer.n_old == 2 and layer.stored_rank == 5 and layer.row_task.tolist() == [0, 0, 0, 1, 1]
    x = torch.randn(5, 7, 8)
    expected = x @ _hand_weight(layer, hand).t() + layer.base.bias.detach()
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)
    layer.merge()
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)
    layer.unmerge()
    assert layer.merged_weight is None


def test_plain_layer_paths_agree_in_value_and_gradient():
    outs = []
    for path in ("lowrank", "dense"):
        layer, _ = _plain_layer(path)
        x = torch.randn(4, 6, 8, generator=torch.Generator().manual_seed(1))
        loss = (layer(x) ** 2).sum()
        loss.backward()
        outs.append((loss.detach(), layer.A_cur.grad.clone(), layer.B_cur.grad.clone()))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


class _CountCalls(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("path", ["lowrank", "dense"])
def test_forward_does_the_same_operations_for_2_and_20_stored_tasks(path):
    """Stacked factors: the work per forward is a fixed sequence of batched ops, not a loop over old tasks."""
    counts = []
    for n_old in (2, 20):
        layer, _ = _plain_layer(path, n_old=n_old)
        with _CountCalls() as mode:
            layer(torch.randn(2, 5, 8))
        counts.append(mode.calls)
    assert counts[0] == counts[1] > 0


def test_decoupled_layer_with_unit_magnitudes_and_no_norm_is_the_plain_layer():
    """SD-LoRA's part only rescales the plain layer's stacked factors: alpha = 1, norm "none" gives plain LoRA."""
    x = torch.randn(3, 4, 8)
    for path in ("lowrank", "dense"):
        plain, _ = _plain_layer(path)
        mags = Magnitudes(1.0)
        decoupled = DecoupledQKV(plain.base, plain.slice_names, mags, norm_mode="none", path=path)
        decoupled.add_direction(1)
        for (A, B) in [(plain.A_old[:, plain.row_task == t], plain.B_old[:, :, plain.row_task == t])
                       for t in range(plain.n_old)] + [(plain.A_cur, plain.B_cur)]:
            with torch.no_grad():
                decoupled.A_cur = torch.nn.Parameter(A.detach().clone())
                decoupled.B_cur = torch.nn.Parameter(B.detach().clone())
            if decoupled.n_old < plain.n_old:
                decoupled.freeze_direction()
        mags.set_old(torch.ones(decoupled.n_old))
        torch.testing.assert_close(decoupled(x), plain(x), atol=1e-6, rtol=1e-6)
        assert decoupled.old_scales() is not None and plain.old_scales() is None


@pytest.mark.parametrize("method", ["seq_lora", "inflora"])
def test_lora_baselines_use_the_plain_layer_without_sd_lora_state(method):
    strategy = train_tasks(make_strategy(method), synthetic_bench(), 2)
    assert all(type(layer) is LowRankQKV for layer in strategy.layers)
    keys = strategy.model.state_dict().keys()
    assert not any(k.split(".")[-1] in ("inv_norm", "offset") or k.startswith("magnitudes") for k in keys)
    assert all(layer.old_scales() is None and layer.current_scale() is None for layer in strategy.layers)


def test_sd_lora_layers_are_the_decoupled_variant():
    strategy = make_strategy("sd_lora")
    assert all(isinstance(layer, DecoupledQKV) for layer in strategy.layers)
    assert {k for k in strategy.model.state_dict() if k.startswith("magnitudes")} == {"magnitudes.old",
                                                                                     "magnitudes.cur"}
