"""Precision: fp32 by default, ``amp: bf16`` opt-in (on CPU too), and what stays float32 under it
(docs/baselines.md section 13)."""

from __future__ import annotations

import pytest
import torch
from avalanche.core import SupervisedPlugin
from conftest import make_strategy, synthetic_bench, train_tasks
from test_eval_transforms import Capture

from core.errors import UserError
from methods import METHODS
from methods.base import legacy_amp
from runner.reload import method_fields

BF16 = {"device_type": "cpu", "dtype": torch.bfloat16}


def first_batch(bench, n: int = 6) -> torch.Tensor:
    data = bench.scenario.train_stream[0].dataset
    return torch.stack([data[i][0] for i in range(n)])


def test_default_is_fp32_and_amp_is_a_recorded_config_field():
    for name in ("full_ft", "sd_lora", "l2p", "hide_prompt", "simple_cil", "inflora"):
        cfg = METHODS.make_config(name, {})
        assert cfg.amp == "none" and cfg.to_dict()["amp"] == "none"
        assert METHODS.make_config(name, {"amp": "bf16"}).to_dict()["amp"] == "bf16"


@pytest.mark.parametrize("value", [True, False, "fp16", "bfloat16", None])
def test_amp_values_are_refused_with_one_line(value):
    with pytest.raises(UserError) as err:
        METHODS.make_config("full_ft", {"amp": value})
    message = str(err.value)
    assert "\n" not in message and "amp must be 'none'" in message and "'bf16'" in message


@pytest.mark.parametrize("amp", ["none", "bf16"])
def test_training_forward_autocasts_only_when_asked(amp):
    strategy = make_strategy("full_ft", amp=amp)
    seen = []
    strategy.model.backbone.register_forward_hook(lambda *_: seen.append(torch.is_autocast_enabled("cpu")))
    outputs, losses = [], []
    strategy.model.register_forward_hook(lambda _m, _i, out: outputs.append(out.dtype))

    class Loss(SupervisedPlugin):
        def after_forward(self, strategy, **kwargs):
            losses.append(strategy.mb_output.dtype)

    strategy.plugins.append(Loss())
    train_tasks(strategy, synthetic_bench(), 1)
    assert seen and set(seen) == {amp == "bf16"}
    assert set(outputs) == {torch.bfloat16 if amp == "bf16" else torch.float32}
    assert set(losses) == {torch.float32}  # the loss always sees float32 logits


@pytest.mark.parametrize("method", ["l2p", "dualprompt"])
def test_key_matching_is_float32_under_autocast(method):
    strategy = make_strategy(method, amp="bf16", **({"g_layers": [0], "e_layers": [1]} if method == "dualprompt" else {}))
    model = strategy.model.eval()
    strategy.setup_task(0, None)
    with torch.no_grad(), torch.autocast(**BF16):
        logits = model(first_batch(synthetic_bench()))
    assert logits.dtype == torch.bfloat16  # autocast was on for the forward
    assert model.aux["pull"].dtype == torch.float32  # the similarities behind the selection were not


def test_coda_weights_and_hide_task_inference_are_float32_under_autocast():
    x = first_batch(synthetic_bench())
    coda = make_strategy("coda_prompt", amp="bf16").model.eval()
    q = coda.query(x)
    coda.coda[0].new_rows(4)
    hide = make_strategy("hide_prompt", amp="bf16").model.eval()
    hide.tii_head.grow(3)
    with torch.no_grad(), torch.autocast(**BF16):
        assert coda.coda[0].weights(q.bfloat16()).dtype == torch.float32
        assert hide.tii_logits(hide.query(x)).dtype == torch.float32
        assert hide.tii_head(q).dtype == torch.bfloat16  # the same head outside fp32(): autocast was on


# Inside an active bf16 autocast region the statistics passes give exactly the fp32 values.
def test_simple_cil_prototypes_are_float32_under_autocast():
    bench = synthetic_bench()
    exp = bench.scenario.train_stream[0]
    protos = {}
    for amp in ("none", "bf16"):
        strategy = make_strategy("simple_cil", amp=amp)
        with torch.autocast(**BF16, enabled=amp == "bf16"):
            strategy.train(exp, eval_streams=[], num_workers=0)
            scores = strategy.model(first_batch(bench))
        protos[amp] = strategy.model.head.weight
        assert scores.dtype == torch.float32
    assert torch.equal(protos["none"], protos["bf16"])


def test_hide_statistics_are_float32_under_autocast():
    exp = synthetic_bench().scenario.train_stream[0]
    hide = make_strategy("hide_prompt", amp="bf16")
    hide.experience, hide.known, hide.seen = exp, 0, 2
    hide.model.eval()
    runs = []
    for enabled in (False, True):
        capture = Capture()
        with torch.no_grad(), torch.autocast(**BF16, enabled=enabled):
            hide._add_stats(capture, hide.model.query)
        runs.append(capture.feats)
    assert len(runs[0]) == 2 and all(torch.equal(a, b) for a, b in zip(*runs))


def test_inflora_input_statistics_are_float32_under_autocast():
    exp = synthetic_bench().scenario.train_stream[0]
    inflora = make_strategy("inflora", amp="bf16")
    plain = inflora.input_statistics(exp)
    with torch.autocast(**BF16):
        under = inflora.input_statistics(exp)
    assert all(torch.equal(a, b) for a, b in zip(plain, under))


@pytest.mark.parametrize("method", ["l2p", "hide_prompt"])
def test_a_prompt_method_trains_under_bf16_on_cpu(method):
    strategy = make_strategy(method, amp="bf16")
    train_tasks(strategy, synthetic_bench(), 1)
    strategy.eval(synthetic_bench().scenario.test_stream[:1])
    with torch.no_grad(), strategy.autocast():
        logits = strategy.model.eval()(first_batch(synthetic_bench()))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()


def test_records_with_a_boolean_amp_read_as_the_precision_they_ran():
    assert legacy_amp(True, "cuda:0") == "bf16" and legacy_amp(True, "cpu") == "none"
    assert legacy_amp(False, "cuda") == "none" and legacy_amp("bf16", "cpu") == "bf16"
    record = {"config": {"method": {"amp": True, "lr": 0.1}}, "provenance": {"device": "cpu"}}
    assert method_fields(record) == {"amp": "none", "lr": 0.1}
    assert METHODS.make_config("full_ft", method_fields(record)).amp == "none"
