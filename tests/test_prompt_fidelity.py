"""The prompt methods' fidelity options (docs/baselines.md sections 2, 4 and 7): HiDe-Prompt's data-parallel step
count (``micro_batch``) and alignment batch sizes, and the ``_released`` rows that reproduce the released code
(batch-majority selection, the reshaped prefix layout), on the tiny test ViT."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_strategy, synthetic_bench, train_tasks

import methods.hide_prompt as hide
from methods import METHODS
from methods._hide_stats import ClassStats, align_classifier
from methods.prompting import kv_prefixes

pytestmark = pytest.mark.filterwarnings("ignore:.*do not exist in a 2-block backbone")

HIDE_TINY = {"tii_lr": 1e-3, "tii_epochs": 1, "tii_ca_lr": 0.01, "ca_iters": 2, "ca_epochs": 1, "n_centroids": 2}
DUAL_TINY = {"g_layers": (0,), "e_layers": (1,)}


# ---------------------------------------------------------------------------------------- HiDe-Prompt step count
def test_hide_presets_run_eight_processes_of_24():
    for preset in ("original", "original_imr"):
        cfg = METHODS.make_config("hide_prompt", {"preset": preset})
        assert (cfg.batch_size, cfg.micro_batch, cfg.ca_batch_size, cfg.tap_batch_size) == (192, 24, 24, 120)
        assert cfg.lr == pytest.approx(0.03 * 24 / 256)  # scaled by the per-process batch
    assert hide.micro_batches(192, 192, 24) == [slice(24 * i, 24 * (i + 1)) for i in range(8)]
    assert hide.micro_batches(13, 192, 24)[-1] == slice(12, 13)  # last batch: eight near-equal parts
    assert hide.micro_batches(5, 192, None) == [slice(0, 5)]


def test_hide_micro_batch_bad_value_is_rejected():
    from core.errors import UserError

    with pytest.raises(UserError, match="micro_batch"):
        METHODS.make_config("hide_prompt", {"micro_batch": 0})
    assert hide.micro_batches(2, 2, 24) == [slice(0, 2)]  # a batch below the micro-batch: one process


def test_hide_steps_per_epoch_follow_the_global_batch_with_a_loss_per_micro_batch(monkeypatch):
    seen = []
    real = hide.contrastive_loss
    monkeypatch.setattr(hide, "contrastive_loss", lambda f, p, t: (seen.append(f.shape[0]), real(f, p, t))[1])
    s = make_strategy("hide_prompt", batch_size=6, micro_batch=2, epochs=2, **HIDE_TINY)
    bench = synthetic_bench()
    n = len(bench.scenario.train_stream[0].dataset)  # 16 images: batches 6, 6, 4
    train_tasks(s, bench, 1)
    assert s.global_step == 2 * math.ceil(n / 6)  # one optimizer step per global batch, not per micro-batch
    assert seen == 2 * [2, 2, 2, 2, 2, 2, 2, 1, 1]  # the contrastive term sees one process's features


def test_hide_original_preset_steps_once_per_192_images_with_losses_over_24(monkeypatch):
    seen = []
    real = hide.contrastive_loss
    monkeypatch.setattr(hide, "contrastive_loss", lambda f, p, t: (seen.append(f.shape[0]), real(f, p, t))[1])
    s = make_strategy("hide_prompt", preset="original", batch_size=192, tii_epochs=1, ca_epochs=1, n_centroids=2)
    bench = synthetic_bench(train_per_class=100)
    n = len(bench.scenario.train_stream[0].dataset)  # 200 images: a batch of 192, then 8
    train_tasks(s, bench, 1)
    assert s.global_step == math.ceil(n / 192) == 2
    assert seen == [24] * 8 + [1] * 8  # eight processes of 24; the last batch split eight ways


def test_hide_accumulated_gradient_is_the_mean_of_the_micro_batch_gradients(monkeypatch):
    s = make_strategy("hide_prompt", batch_size=8, micro_batch=4, epochs=1, contrast_reg=1.0, **HIDE_TINY)
    captured = {}

    class FirstStep(Exception):
        pass

    def capture(self):  # stop before the first update: the model keeps the state its gradient was taken at
        captured["grad"] = self.model.e_prompt.grad.clone()
        captured["batch"] = [t.clone() for t in self.mbatch]
        raise FirstStep

    monkeypatch.setattr(type(s), "optimizer_step", capture)
    with pytest.raises(FirstStep):
        train_tasks(s, synthetic_bench(), 1)
    assert len(captured["batch"][0]) == 8

    def grad_of(part):
        s.mbatch = [t[part] for t in captured["batch"]]
        s.mb_output = s.forward()
        return torch.autograd.grad(s.criterion(), s.model.e_prompt)[0]

    per_part = torch.stack([grad_of(slice(0, 4)), grad_of(slice(4, 8))]).mean(dim=0)
    torch.testing.assert_close(captured["grad"], per_part, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(grad_of(slice(0, 8)), per_part, atol=1e-6, rtol=1e-5)  # one loss over 8 differs


def test_tap_draws_120_per_centroid_in_batches_of_120_while_tii_alignment_keeps_24(monkeypatch):
    calls = []
    real = hide.align_classifier
    monkeypatch.setattr(hide, "align_classifier", lambda *a, **k: (calls.append(a[4]), real(*a, **k))[1])
    s = make_strategy("hide_prompt", **{**HIDE_TINY, "tii_epochs": 0})
    train_tasks(s, synthetic_bench(), 2)
    assert calls == [24, 120]  # after task 1: TII alignment, then TAP (task 0 aligns nothing)


def test_align_classifier_draws_batch_per_component_and_steps_on_batches_of_it(monkeypatch):
    stats = ClassStats(4, "multi-centroid", 2)
    torch.manual_seed(0)
    for c in range(3):
        stats.add_class(torch.randn(10, 4) + c)
    drawn, sizes = [], []
    real_sample = ClassStats.sample
    monkeypatch.setattr(ClassStats, "sample", lambda self, k: (drawn.append(k), real_sample(self, k))[1])
    head = torch.nn.Linear(4, 3)
    head.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
    align_classifier(head, list(head.parameters()), stats, n_iters=2, batch=5, lr=0.01, epochs=3)
    assert drawn == [5, 5, 5] and sizes == [5] * 6


# ---------------------------------------------------------------------------------------- the released prefix layout
def test_released_layout_with_one_shared_prompt_gives_halves_of_the_batch_k_k_and_v_v():
    pk, pv = torch.randn(3, 8), torch.randn(3, 8)
    for B, pattern in ((4, "kkkkvvvv"), (3, "kkkvvv"), (5, "kkkkkvvvvv")):
        shared = torch.stack([pk, pv])[:, None].expand(-1, B, -1, -1)  # training: one prompt for every sample
        keys, values = kv_prefixes(shared, "released")
        got = "".join("k" if torch.equal(p, pk) else "v" for b in range(B) for p in (keys[b], values[b]))
        assert got == pattern  # B = 4: samples 0-1 (P_k, P_k), 2-3 (P_v, P_v); B odd: the middle one (P_k, P_v)
        keys, values = kv_prefixes(shared, "per_sample")
        assert all(torch.equal(keys[b], pk) and torch.equal(values[b], pv) for b in range(B))


def test_released_layout_at_test_mixes_prompts_across_samples():
    B, L, A = 3, 2, 8
    gathered = torch.randn(2, B, L, A)  # (key/value, sample, length, width): sample b's own prompts
    keys, values = kv_prefixes(gathered, "released")
    k, v = gathered
    # rows [k0, k1, k2, v0, v1, v2] taken in pairs: sample b gets rows 2b and 2b + 1
    expected = [(k[0], k[1]), (k[2], v[0]), (v[1], v[2])]
    for b, (ek, ev) in enumerate(expected):
        assert torch.equal(keys[b], ek) and torch.equal(values[b], ev)
    # the reference's own reshape of its (layers, 2, B, top_k, L, heads, hd) gather, read as (layers, B, 2, ...)
    raw = gathered.reshape(1, 2, B, 1, L, 2, A // 2)
    ref = raw.reshape(1, B, 2, L, 2, A // 2)
    torch.testing.assert_close(keys, ref[0, :, 0].reshape(B, L, A))
    torch.testing.assert_close(values, ref[0, :, 1].reshape(B, L, A))


@pytest.mark.parametrize("method", ["dualprompt", "hide_prompt"])
def test_released_rows_train_with_the_reshaped_prefixes(method):
    """With one prompt shared by a training batch of 4, the prompted block gets (P_k, P_k) for samples 0-1 and
    (P_v, P_v) for samples 2-3 in the ``_released`` row; the fair row gives every sample (P_k, P_v)."""
    from methods.prompting import cls_features, prompted_tokens

    x = torch.rand(4, 3, 16, 16)
    tiny = DUAL_TINY if method == "dualprompt" else {"e_layers": (1,), **HIDE_TINY}
    feats = {}
    for name in (method, f"{method}_released"):
        s = make_strategy(name, **tiny)
        model = s.model.train()
        model.train_task = 0
        feats[name] = model.features(x)
        pk, pv = model.e_prompt[0, 0, 0], model.e_prompt[0, 1, 0]
        layer = model.e_layers[0]
        prefixes = model.prefixes(torch.zeros(4, dtype=torch.long)) if method == "dualprompt" else {}
        prefixes[layer] = (torch.stack([pk, pk, pv, pv]), torch.stack([pk, pk, pv, pv]))
        reshaped = cls_features(model.backbone, prompted_tokens(model.backbone, x, prefixes=prefixes))
        if name.endswith("_released"):
            torch.testing.assert_close(feats[name], reshaped)
        else:
            assert not torch.allclose(feats[name], reshaped)


def _logits_alone_and_together(model, x, forward):
    with torch.no_grad():
        together = forward(model, x, slice(None))
        alone = torch.cat([forward(model, x[i:i + 1], slice(i, i + 1)) for i in range(len(x))])
    return alone, together


TASKS = torch.tensor([0, 1, 1, 0])  # HiDe: the tasks TII would give the four images


@pytest.mark.parametrize("method,forward", [
    ("l2p", lambda m, x, i: m(x)),
    ("dualprompt", lambda m, x, i: m(x)),
    ("hide_prompt", lambda m, x, i: m.prompted_features(x, task=TASKS[i])),
])
def test_released_predictions_depend_on_the_batch_fair_ones_do_not(method, forward):
    x = torch.rand(4, 3, 16, 16)
    tiny = {"l2p": {"pool_size": 4, "length": 1, "top_k": 2}, "dualprompt": DUAL_TINY,
            "hide_prompt": {"e_layers": (1,), **HIDE_TINY}}[method]
    for name in (method, f"{method}_released"):
        s = make_strategy(name, **tiny)
        model = s.model.eval()
        model.head.grow(4)
        with torch.no_grad():
            q = model.query(x)
            if method == "l2p":  # sample 0 prefers prompts 0-1, the other three prompts 2-3
                model.prompt_key.copy_(torch.stack([q[0], q[0], q[1:].mean(0), q[1:].mean(0)]))
            elif method == "dualprompt":  # sample 0 matches E-prompt 0, the others E-prompt 1
                model.e_key[0], model.e_key[1], model.e_key[2:] = q[0], q[1:].mean(0), -q[0]
        alone, together = _logits_alone_and_together(model, x, forward)
        if name.endswith("_released"):
            assert not torch.allclose(alone, together, atol=1e-4)
        else:
            torch.testing.assert_close(alone, together, atol=1e-5, rtol=1e-5)


def test_released_rows_are_registered_beside_their_fair_rows():
    for fair in ("l2p", "dualprompt", "hide_prompt"):
        info, fair_info = METHODS.get(f"{fair}_released").info, METHODS.get(fair).info
        assert info.released_of == fair and fair_info.released_of is None
        assert info.display == f"{fair_info.display} (as released)"
        assert (info.group, info.order, info.paper_key) == (fair_info.group, fair_info.order + 1, fair_info.paper_key)
        assert (info.train_cost, info.eval_cost) == (fair_info.train_cost, fair_info.eval_cost)
        assert info.color != fair_info.color
    assert METHODS.make_config("l2p_released", {}).batchwise_prompt
    dual = METHODS.make_config("dualprompt_released", {"preset": "sdl"})
    assert dual.batchwise_prompt and dual.prefix_layout == "released" and dual.lr == 0.001
    assert not METHODS.make_config("dualprompt", {}).batchwise_prompt
    assert METHODS.make_config("hide_prompt_released", {"preset": "original_imr"}).prefix_layout == "released"


# ------------------------------------------------------------------------------- released loops (section 15)
def test_coda_released_drops_each_epochs_last_partial_batch():
    """CODA-Prompt's references train with ``DataLoader(drop_last=True)``: the twin skips the last 4 of 16 images
    each epoch (batch 6: two steps, not three); the fair row trains on them, as every harness loader does."""
    bench = synthetic_bench()
    n = len(bench.scenario.train_stream[0].dataset)
    steps = {}
    for name in ("coda_prompt", "coda_prompt_released"):
        s = make_strategy(name, batch_size=6, epochs=2, pool_size=10, n_tasks=3)
        train_tasks(s, bench, 1)
        steps[name] = s.global_step
    assert n == 16 and steps == {"coda_prompt": 2 * 3, "coda_prompt_released": 2 * 2}
    assert METHODS.make_config("coda_prompt_released", {}).drop_last
    assert not METHODS.make_config("coda_prompt_released", {"drop_last": False}).drop_last
    assert "drop_last" not in METHODS.make_config("coda_prompt", {}).to_dict()  # the fair row's records unchanged


def _epoch_lrs(name: str, **cfg) -> list[list[float]]:
    """The WTP prompts' lr at the start of each epoch of each of two tasks."""
    from avalanche.core import SupervisedPlugin

    class Lrs(SupervisedPlugin):
        def __init__(self):
            super().__init__()
            self.seen: list[list[float]] = []

        def before_training_exp(self, strategy, **kwargs):
            self.seen.append([])

        def before_training_epoch(self, strategy, **kwargs):
            self.seen[-1].append(strategy.optimizer.param_groups[0]["lr"])

    lrs = Lrs()
    s = make_strategy(name, plugins=[lrs], batch_size=8, **{**HIDE_TINY, **cfg})
    train_tasks(s, synthetic_bench(), 2)
    return lrs.seen


def test_hide_released_steps_its_schedule_one_epoch_late():
    """The engine's ``lr_scheduler.step(epoch)`` after epoch e sets epoch e's rate for epoch e + 1: with a step at
    epoch 1, the released twin runs two epochs at the full rate, the fair row one; each task starts afresh."""
    cfg = {"lr": 0.01, "epochs": 3, "scheduler": "multistep", "milestones": (1,), "lr_decay": 0.1}
    fair, released = _epoch_lrs("hide_prompt", **cfg), _epoch_lrs("hide_prompt_released", **cfg)
    assert fair == [pytest.approx([0.01, 0.001, 0.001])] * 2
    assert released == [pytest.approx([0.01, 0.01, 0.001])] * 2
    cosine = _epoch_lrs("hide_prompt_released", **{**cfg, "scheduler": "cosine", "min_lr": 0.0})
    assert cosine[0] == pytest.approx([0.01, 0.01, 0.0075])  # torch's cosine at epochs 0, 0, 1 of 3
    assert not METHODS.make_config("hide_prompt_released", {"scheduler_lag": False}).scheduler_lag
    assert "scheduler_lag" not in METHODS.make_config("hide_prompt", {}).to_dict()


def test_coda_released_starts_new_rows_by_the_references_projections():
    """CODA's ``gram_schmidt`` subtracts from a random vector its projection onto each earlier row; with trained
    (non-orthogonal) old rows the new row is not orthogonal to them, as the harness's SVD-based start makes it."""
    import methods.coda_prompt as coda

    old = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])  # two old rows, not orthogonal
    torch.manual_seed(0)
    new = coda.classical_gram_schmidt_rows(old, 1)[0].double()
    torch.manual_seed(0)
    v = torch.randn(3, dtype=torch.float64)
    u = v - v[0] * torch.tensor([1.0, 0, 0], dtype=torch.float64) - (v[0] + v[1]) / 2 * torch.tensor(
        [1.0, 1.0, 0], dtype=torch.float64)  # classical: both projections of the same v
    torch.testing.assert_close(new, u / u.norm(), atol=1e-6, rtol=1e-6)
    assert abs(float(new @ old[0].double())) > 1e-3  # not orthogonal to the first old row
    ours = coda.gram_schmidt_rows(old, 1)[0]
    assert abs(float(ours @ old[0])) < 1e-5 and abs(float(ours @ old[1])) < 1e-5
    fair, released = (make_strategy(n, pool_size=10, n_tasks=3) for n in ("coda_prompt", "coda_prompt_released"))
    assert fair.model.coda[0].init_rows is coda.gram_schmidt_rows
    assert released.model.coda[0].init_rows is coda.classical_gram_schmidt_rows
    assert not METHODS.make_config("coda_prompt_released", {"classical_gram_schmidt": False}).classical_gram_schmidt


def test_hide_released_computes_wtp_statistics_one_class_at_a_time(monkeypatch):
    """The reference's ``_compute_mean`` passes one class's images at a time (in batches of 24 per process): with the
    released layout a feature depends on its place in the batch, so the twin's batches never mix classes. Task 1
    of the synthetic stream: two classes of 8 images, micro-batches of 6 (6, 2, 6, 2, not 6, 6, 4); the fair row's
    batches run through the experience."""
    sizes = {}
    for name in ("hide_prompt", "hide_prompt_released"):
        s = make_strategy(name, batch_size=6, micro_batch=6, eval_batch_size=6, epochs=1, **HIDE_TINY)
        real = s.model.prompted_features
        seen = sizes.setdefault(name, [])

        def spy(x, task=None, prompt=None, real=real, seen=seen, model=s.model):
            if not model.training and task is not None:
                seen.append(x.shape[0])
            return real(x, task=task, prompt=prompt)

        monkeypatch.setattr(s.model, "prompted_features", spy)
        train_tasks(s, synthetic_bench(), 1)
    assert sizes == {"hide_prompt": [6, 6, 4], "hide_prompt_released": [6, 2, 6, 2]}
