"""Method-specific tests of the baselines: InfLoRA (and its DualGPM), SimpleCIL, joint, sequential LoRA and the
Avalanche adapter. The generic checks (trainable sets, determinism, checkpoints) are in test_method_contract.py."""

from __future__ import annotations

import math
import pickle

import pytest
import torch
from avalanche.core import SupervisedPlugin
from conftest import make_strategy, synthetic_bench, train_tasks

from core.errors import UserError
from methods.base import coda_cosine
from methods.inflora import DualGPM, designed_down_projection


class Snapshot(SupervisedPlugin):
    """Calls ``fn(strategy)`` at the start of every experience (after setup_task and make_optimizer)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn
        self.values = []

    def before_training_exp(self, strategy, **kwargs):
        self.values.append(self.fn(strategy))


# ---------------------------------------------------------------------------------------------------- InfLoRA
def _inflora_state(strategy):
    gpm = strategy.gpm
    return {
        "A": [layer.A_cur.detach().clone() for layer in strategy.layers],
        "bases": [gpm.basis(i).clone() for i in range(gpm.n_layers)],
        "kinds": list(gpm.kinds),
    }


@pytest.mark.parametrize("lamb", [0.9, 0.999999])  # few directions stored ('remove') / most of the space ('retain')
def test_inflora_designed_a_is_scaled_orthonormal_and_avoids_the_old_subspace(lamb):
    bench = synthetic_bench()
    snap = Snapshot(_inflora_state)
    strategy = make_strategy("inflora", plugins=[snap], lamb=lamb)
    train_tasks(strategy, bench, 2)
    first, second = snap.values
    for A in first["A"] + second["A"]:
        assert torch.equal(A[0], A[1]), "k and v must share the designed A_t"
        rows = A[0].double()[A[0].abs().sum(1) > 0]
        torch.testing.assert_close(rows @ rows.T * 3, torch.eye(len(rows), dtype=torch.float64), atol=1e-5, rtol=0)
    assert all(len(A[0]) == strategy.config.rank for A in first["A"])
    for A, U, kind in zip(second["A"], second["bases"], second["kinds"]):
        A = A[0].double()
        if kind == "remove":  # A_t is orthogonal to the stored old-space basis
            assert float((A @ U).abs().max()) < 1e-5
        else:  # 'retain' stores the free subspace: A_t lies inside it
            assert float((A - A @ U @ U.T).abs().max()) < 1e-5
    if lamb > 0.9999:
        assert "retain" in second["kinds"]


def test_inflora_trains_only_b_and_keeps_old_branches():
    bench = synthetic_bench()

    def state(s):
        declared = {id(p) for p in s.trainable_parameters()}
        names = {n for n, p in s.model.named_parameters() if id(p) in declared and p.requires_grad}
        return (names, [layer.A_cur.detach().clone() for layer in s.layers],
                [layer.B_cur.detach().clone() for layer in s.layers],
                [(layer.A_old.clone(), layer.B_old.clone()) for layer in s.layers])

    snap = Snapshot(state)
    strategy = make_strategy("inflora", plugins=[snap], epochs=2)
    train_tasks(strategy, bench, 2)
    names, A1, B1, old1 = snap.values[1]
    n_blocks = len(strategy.layers)
    assert names == {"head.weight", "head.bias"} | {f"backbone.blocks.{i}.attn.qkv.B_cur" for i in range(n_blocks)}
    for layer, A, B, (A_old, B_old) in zip(strategy.layers, A1, B1, old1):
        assert layer.A_cur is None  # moved into the frozen stack after the task
        r = A.shape[1]
        assert torch.equal(layer.A_old[:, -r:], A), "A_t must not be trained"
        assert not torch.equal(layer.B_old[:, :, -r:], B), "B_t must be trained"
        assert torch.equal(layer.A_old[:, :-r], A_old) and torch.equal(layer.B_old[:, :, :-r], B_old)


def test_inflora_unscaled_sum_of_branches():
    bench = synthetic_bench()
    strategy = make_strategy("inflora")
    train_tasks(strategy, bench, 2)
    layer = strategy.layers[0]
    W = layer.base.weight.detach().clone()
    for s, k in enumerate(layer.slice_idx.tolist()):
        W[k * layer.d : (k + 1) * layer.d] += layer.B_old[s] @ layer.A_old[s]
    torch.testing.assert_close(layer.effective_weight(), W, atol=1e-6, rtol=0)


def test_inflora_threshold_rises_linearly_to_lame():
    bench = synthetic_bench()
    strategy = make_strategy("inflora", lamb=0.9, lame=1.0)
    train_tasks(strategy, bench)
    assert strategy.history["threshold"] == pytest.approx([0.9 + 0.1 * t / 3 for t in range(3)])
    assert strategy.stored_features() == sum(strategy.gpm.basis(i).numel() for i in range(strategy.gpm.n_layers))
    assert len(strategy.history["basis_size"]) == 3 and len(strategy.history["basis_size"][0]) == 2


def _psd(d: int, spectrum, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return Q @ torch.diag(torch.as_tensor(spectrum, dtype=torch.float64)) @ Q.T


def _captured(R: torch.Tensor, U: torch.Tensor) -> float:
    """The reference's energy criterion: (||R||^2 - ||R - U U^T R||^2) / ||R||^2."""
    total = float(torch.linalg.norm(R) ** 2)
    return (total - float(torch.linalg.norm(R - U @ U.T @ R) ** 2)) / total


def test_dualgpm_basis_grows_and_meets_the_threshold():
    d, eps = 16, 0.95
    gpm = DualGPM(1, d)
    R1 = _psd(d, [10.0, 5.0, 1.0] + [0.01] * (d - 3), seed=0)
    gpm.update([R1], eps)
    U1 = gpm.basis(0)
    ratio = torch.linalg.svdvals(R1) ** 2 / (torch.linalg.svdvals(R1) ** 2).sum()
    assert gpm.kinds == ["remove"] and U1.shape[1] == int((torch.cumsum(ratio, 0) < eps).sum())
    R2 = _psd(d, [8.0, 6.0, 3.0, 1.0] + [0.01] * (d - 4), seed=1)
    gpm.update([R2], eps)
    U2 = gpm.basis(0)
    assert U2.shape[1] > U1.shape[1] and torch.equal(U2[:, : U1.shape[1]], U1)  # old directions are kept
    torch.testing.assert_close(U2.T @ U2, torch.eye(U2.shape[1], dtype=torch.float64), atol=1e-8, rtol=0)
    assert _captured(R2, U2) >= eps


def test_dualgpm_switches_to_retain_and_shrinks_the_free_subspace():
    d, eps = 8, 0.99
    gpm = DualGPM(1, d)
    gpm.update([_psd(d, [5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.2, 0.1], seed=2)], eps)
    assert gpm.kinds == ["retain"]  # more than d/2 directions needed: the complement is stored
    free = gpm.basis(0)
    assert free.shape[1] <= d // 2
    R = _psd(d, [1.0] * d, seed=3)  # energy everywhere: the free subspace must shrink below 1 - eps
    gpm.update([R], eps)
    smaller = gpm.basis(0)
    assert smaller.shape[1] < free.shape[1]
    inside = float(torch.linalg.norm(smaller @ smaller.T @ R) ** 2 / torch.linalg.norm(R) ** 2)
    assert inside < 1 - eps + 1e-9 or smaller.shape[1] == 0


def test_dualgpm_first_task_retain_bug_flag():
    d, eps = 8, 0.99
    R = _psd(d, [5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.2, 0.1], seed=2)
    fixed, buggy = DualGPM(1, d), DualGPM(1, d, replicate_retain_bug=True)
    fixed.update([R], eps)
    buggy.update([R], eps)
    k = buggy.basis(0).shape[1]
    assert buggy.kinds == fixed.kinds == ["retain"]
    assert fixed.basis(0).shape[1] == d - k  # the complement of the k retained directions
    assert float((fixed.basis(0).T @ buggy.basis(0)).abs().max()) < 1e-8


def test_plain_gpm_differs_from_dualgpm():
    """InfLoRA's DomainNet variant (methods/inflora_domain.py ``update_GPM``): no 'retain' switch, the old-space
    basis is stored and grows. With the first-task fix DualGPM spans the same free subspace from the smaller of the
    two bases; the reference's DualGPM as released (``replicate_retain_bug``) leaves a different one."""
    d, eps = 8, 0.99
    R1 = _psd(d, [5.0, 4.0, 3.0, 2.0, 1.0, 0.5, 0.2, 0.1], seed=2)  # needs at least d/2 directions
    dual, plain, released = DualGPM(1, d), DualGPM(1, d, dual=False), DualGPM(1, d, replicate_retain_bug=True)
    for gpm in (dual, plain, released):
        gpm.update([R1], eps)
    ratio = torch.linalg.svdvals(R1) ** 2 / (torch.linalg.svdvals(R1) ** 2).sum()
    k = int((torch.cumsum(ratio, 0) < eps).sum())
    assert k >= d / 2
    assert dual.kinds == released.kinds == ["retain"] and plain.kinds == ["remove"]
    assert plain.basis(0).shape[1] == k and dual.basis(0).shape[1] == d - k  # different bases stored

    def proj(gpm):
        Q = gpm.free_basis(0)
        return Q @ Q.T

    torch.testing.assert_close(proj(dual), proj(plain), atol=1e-8, rtol=0)
    assert float((proj(released) - proj(plain)).abs().max()) > 0.5  # the released DualGPM: a different A_t space
    R2 = _psd(d, [4.0, 2.0, 1.0, 0.5, 0.3, 0.2, 0.1, 0.05], seed=3)
    for gpm in (dual, plain):
        gpm.update([R2], eps)
    assert plain.kinds == ["remove"] and plain.basis(0).shape[1] > k  # plain GPM grows, never switches
    assert _captured(R2, plain.basis(0)) >= eps
    assert dual.kinds == ["retain"] and dual.basis(0).shape[1] < d - k  # DualGPM shrinks its free subspace


def test_plain_gpm_first_task_keeps_a_small_basis_as_remove():
    d = 16
    R = _psd(d, [10.0, 5.0, 1.0] + [0.01] * (d - 3), seed=0)
    dual, plain = DualGPM(1, d), DualGPM(1, d, dual=False)
    dual.update([R], 0.95)
    plain.update([R], 0.95)
    assert torch.equal(dual.basis(0), plain.basis(0)) and dual.kinds == plain.kinds == ["remove"]


def test_designed_projection_of_a_full_basis_is_zero():
    A = designed_down_projection(_psd(4, [3.0, 2.0, 1.0, 0.5], seed=5), torch.zeros(4, 0, dtype=torch.float64), 2)
    assert A.shape == (2, 4) and not A.any()


def test_inflora_domainnet_job_of_paper_tables_is_the_reference_variant():
    """liangyanshuo/InfLoRA configs/domainnet_inflora.json with methods/inflora_domain.py, written out."""
    from runner.suite import expand_jobs, load_suite

    jobs = expand_jobs(load_suite("paper_tables"), methods=["inflora"], benchmarks=["domainnet_5"])
    assert jobs
    for job in jobs:
        c = job.method_cfg
        assert c.preset == "domainnet" and c.gpm == "plain"
        assert (c.optimizer, c.momentum, c.weight_decay, c.batch_size) == ("sgd", 0.9, 0.0, 128)
        assert (c.lr, c.head_lr, c.init_lr) == (0.005, 0.01, None)
        assert c.coda_cosine is False and (c.scheduler, c.milestones, c.lr_decay) == ("multistep", (4,), 0.1)
        assert (c.epochs, c.init_epochs, c.rank, c.lamb, c.lame, c.slices) == (5, None, 30, 0.95, 1.0, ("k", "v"))
    others = expand_jobs(load_suite("paper_tables"), methods=["inflora"], benchmarks=["imagenet_r_10", "cifar100_10"])
    for job in others:  # the other benchmarks keep methods/inflora.py: DualGPM, Adam, CODA cosine, one lr
        c = job.method_cfg
        assert (c.gpm, c.optimizer, c.coda_cosine, c.head_lr, c.rank) == ("dual", "adam", True, None, 10)


def test_inflora_head_lr_and_multistep_schedule():
    def groups(s):
        head = {id(p) for p in s.model.head.parameters()}
        return sorted((g["lr"], all(id(p) in head for p in g["params"])) for g in s.optimizer.param_groups)

    lrs = []

    class Lr(SupervisedPlugin):
        def before_training_epoch(self, strategy, **kwargs):
            lrs.append([g["lr"] for g in strategy.optimizer.param_groups])

    strategy = make_strategy("inflora", preset="domainnet", epochs=5, rank=4, batch_size=8,
                             plugins=[Snapshot(groups), Lr()])
    seen = strategy.plugins[0].values
    train_tasks(strategy, synthetic_bench(), 1)
    assert seen[0] == [(0.005, False), (0.01, True)]  # encoder B_t at lrate, head at fc_lrate
    flat = [lr for epoch in lrs for lr in sorted(epoch)]
    assert flat == pytest.approx([0.005, 0.01] * 4 + [0.0005, 0.001])  # MultiStepLR x0.1 at epoch 4
    assert strategy.gpm.kinds and set(strategy.gpm.kinds) == {"remove"}


def test_designed_projection_stays_in_a_small_free_subspace():
    d, rank = 6, 4
    R = _psd(d, [3.0, 2.0, 1.0, 0.5, 0.2, 0.1], seed=4)
    Q = torch.linalg.qr(torch.randn(d, 2, dtype=torch.float64))[0]  # only 2 free directions for a rank-4 branch
    A = designed_down_projection(R, Q, rank)
    assert torch.count_nonzero(A.abs().sum(1)) == 2
    assert float((A - A @ Q @ Q.T).abs().max()) < 1e-10


def _reference_cosine_lrs(lr: float, K: int) -> list[float]:
    """The lr of each epoch as GT-RIPL/CODA-Prompt runs ``utils/schedulers.py`` ``CosineSchedule`` (also SD-Lora-CL
    ``models/coda_prompt.py``, InfLoRA ``utils/schedulers.py``), restated: the constructor calls ``step(0)`` (lr at
    cos(0)) and then sets ``last_epoch = -1``; each later ``step()`` does ``last_epoch += 1`` and sets
    ``lr * cos(99 pi last_epoch / (200 (K - 1)))``; the learners call it once per epoch, after the epoch
    (SD-Lora-CL, InfLoRA) or before every epoch but the first (CODA ``learners/default.py``), the same thing."""
    last_epoch, current, lrs = -1, lr * math.cos(0.0), []
    for _ in range(K):
        lrs.append(current)  # the epoch trains at the lr set so far
        last_epoch += 1
        current = lr * math.cos(99 * math.pi * last_epoch / (200 * (K - 1)))
    return lrs


def test_coda_cosine_schedule_matches_the_reference_stepping():
    c = 99 * math.pi / 200
    # written out: the first two epochs at the full rate, then cos(c * j / (K - 1)) for j = 1 .. K - 2
    assert [coda_cosine(5)(e) for e in range(5)] == pytest.approx(
        [1.0, 1.0, math.cos(c / 4), math.cos(2 * c / 4), math.cos(3 * c / 4)])
    assert [coda_cosine(20)(e) for e in range(20)] == pytest.approx(
        [1.0, 1.0] + [math.cos(c * j / 19) for j in range(1, 19)])
    for K in (2, 5, 20, 50):
        assert [1e-3 * coda_cosine(K)(e) for e in range(K)] == pytest.approx(_reference_cosine_lrs(1e-3, K))
    assert coda_cosine(2)(1) == 1.0  # K = 2: both epochs at the full rate
    assert coda_cosine(1)(0) == 1.0  # the reference divides by zero at K = 1: constant


@pytest.mark.parametrize("method", ["inflora", "coda_prompt"])
def test_coda_cosine_lr_per_epoch_in_training(method):
    strategy = make_strategy(method, epochs=4, lr=1e-3)
    lrs = []

    class Lr(SupervisedPlugin):
        def before_training_epoch(self, strategy, **kwargs):
            lrs.append(strategy.optimizer.param_groups[0]["lr"])

    strategy.plugins.append(Lr())
    train_tasks(strategy, synthetic_bench(), 1)
    assert lrs == pytest.approx(_reference_cosine_lrs(1e-3, 4))
    assert lrs[0] == lrs[1] == pytest.approx(1e-3)


# ---------------------------------------------------------------------------------------------------- SimpleCIL
def test_simple_cil_predicts_the_nearest_prototype():
    bench = synthetic_bench()
    strategy = make_strategy("simple_cil", epochs=0)
    train_tasks(strategy, bench)
    model = strategy.model.eval()
    with torch.no_grad():
        train = [bench.scenario.train_stream[t].dataset for t in range(3)]
        means = []
        for c in range(6):
            xs = torch.stack([x for ds in train for x, y, *_ in ds if y == c])
            means.append(model.features(xs).mean(0))
        means = torch.stack(means)
        torch.testing.assert_close(model.head.weight, means, atol=1e-5, rtol=1e-5)
        x = torch.stack([x for x, *_ in bench.scenario.test_stream[2].dataset])
        f = torch.nn.functional.normalize(model.features(x), dim=-1)
        expected = (f @ torch.nn.functional.normalize(means, dim=-1).T).argmax(1)
        assert torch.equal(model(x).argmax(1), expected)
    assert strategy.stored_features() == 6 * model.head.in_features
    assert strategy.learnable_per_task[-1] == (0, 0)


def test_simple_cil_refuses_training_epochs():
    with pytest.raises(UserError, match="epochs: 0"):
        make_strategy("simple_cil", epochs=2)


# ---------------------------------------------------------------------------------------------------- joint
def test_joint_sees_every_seen_class_data():
    bench = synthetic_bench()
    labels: list[set] = []

    class Labels(SupervisedPlugin):
        def before_training_exp(self, strategy, **kwargs):
            labels.append(set())

        def after_training_iteration(self, strategy, **kwargs):
            labels[-1] |= set(strategy.mb_y.tolist())

    strategy = make_strategy("joint", plugins=[Labels()])
    train_tasks(strategy, bench)
    assert labels == [set(range(2)), set(range(4)), set(range(6))]
    assert strategy.history["train_samples"] == [16, 32, 48]


def test_joint_restart_starts_every_task_from_the_pretrained_backbone():
    bench = synthetic_bench()
    snap = Snapshot(lambda s: s.model.backbone.cls_token.detach().clone())
    strategy = make_strategy("joint", plugins=[snap])
    pretrained = strategy.model.backbone.cls_token.detach().clone()
    train_tasks(strategy, bench, 2)
    assert all(torch.equal(v, pretrained) for v in snap.values)
    with pytest.raises(UserError, match="mask_old_logits"):
        make_strategy("joint", mask_old_logits=True)


# ---------------------------------------------------------------------------------------------------- seq_lora
def test_seq_lora_keeps_training_one_direction():
    bench = synthetic_bench()
    snap = Snapshot(lambda s: [(id(layer.A_cur), layer.A_cur.detach().clone(), layer.B_cur.detach().clone())
                               for layer in s.layers])
    strategy = make_strategy("seq_lora", epochs=2)
    strategy.plugins.append(snap)
    train_tasks(strategy, bench)
    ends = snap.values[1:] + [[(id(layer.A_cur), layer.A_cur.detach(), layer.B_cur.detach())
                               for layer in strategy.layers]]
    for start, end in zip(snap.values, ends):
        for (id0, A0, B0), (id1, A1, B1) in zip(start, end):
            assert id0 == id1, "the same direction object is trained in every task"
            assert not torch.equal(A0, A1) and not torch.equal(B0, B1), "A and B are trained in every task"
    for layer in strategy.layers:
        assert layer.stored_rank == 0 and layer.A_cur.shape[1] == 10 and layer.slice_names == ("q", "v")
        W = layer.base.weight.detach().clone()  # plain W0 + B A: no magnitude, no normalisation
        for s, k in enumerate(layer.slice_idx.tolist()):
            W[k * layer.d : (k + 1) * layer.d] += layer.B_cur[s].detach() @ layer.A_cur[s].detach()
        torch.testing.assert_close(layer.effective_weight(), W, atol=1e-6, rtol=0)
    assert len(strategy.history["cosine_to_previous"]) == 2


def test_seq_lora_merged_equals_unmerged():
    bench = synthetic_bench()
    strategy = make_strategy("seq_lora")
    train_tasks(strategy, bench, 2)
    x = torch.stack([x for x, *_ in bench.scenario.test_stream[1].dataset])
    model = strategy.model.eval()
    with torch.no_grad():
        plain = model(x)
        strategy.before_evaluation()
        merged = model(x)
        strategy.after_evaluation()
    torch.testing.assert_close(plain, merged, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------- Avalanche
def test_avalanche_adapter_builds_ewc_with_its_keyword():
    from avalanche.training.plugins import EWCPlugin

    from methods import METHODS

    strategy = make_strategy("avalanche:EWC", ewc_lambda=100.0, mode="online", decay_factor=0.5)
    ewc = [p for p in strategy.plugins if isinstance(p, EWCPlugin)]
    assert len(ewc) == 1 and ewc[0].ewc_lambda == 100.0 and ewc[0].mode == "online" and ewc[0].decay_factor == 0.5
    assert all(p.requires_grad for p in strategy.model.backbone.parameters())  # full fine-tuning by default
    cfg = METHODS.make_config("avalanche:EWC", {"ewc_lambda": 100})
    assert cfg.ewc_lambda == 100.0 and isinstance(cfg.ewc_lambda, float)
    assert pickle.loads(pickle.dumps(cfg)) == cfg  # joblib workers receive configs by pickle


def test_avalanche_adapter_rejects_unknown_and_missing_keywords():
    from methods import METHODS

    with pytest.raises(UserError, match="unknown key.*ewc_lamda.*valid keys are:.*ewc_lambda"):
        METHODS.make_config("avalanche:EWC", {"ewc_lamda": 100})
    with pytest.raises(UserError, match="needs ewc_lambda"):
        METHODS.make_config("avalanche:EWC", {})
    with pytest.raises(UserError, match="valid names are:.*avalanche:EWC"):
        METHODS.get("avalanche:NoSuchStrategy")
    with pytest.raises(UserError, match="not supported"):
        METHODS.get("avalanche:LearningToPrompt")


def test_avalanche_lwf_distils_old_outputs():
    from avalanche.training.plugins import LwFPlugin

    bench = synthetic_bench()
    strategy = make_strategy("avalanche:LwF", alpha=1.0, temperature=2.0, train_backbone=False)
    train_tasks(strategy, bench, 2)
    lwf = [p for p in strategy.plugins if isinstance(p, LwFPlugin)]
    assert len(lwf) == 1 and lwf[0].lwf.prev_model is not None
    assert not any(p.requires_grad for p in strategy.model.backbone.parameters())


class _LossCheck(SupervisedPlugin):
    """After each training forward of task 2: (strategy's loss, CE over all seen logits, logits width, seen)."""

    def __init__(self):
        super().__init__()
        self.values = []

    def after_forward(self, strategy, **kwargs):
        if strategy.task_id == 1:
            full = torch.nn.functional.cross_entropy(strategy.mb_output, strategy.mb_y)
            self.values.append((float(strategy.criterion()), float(full), strategy.mb_output.shape[1], strategy.seen))


@pytest.mark.parametrize(("method", "kwargs", "masked"), [
    ("avalanche:EWC", {"ewc_lambda": 10.0}, "ewc_masked"),
    ("avalanche:LwF", {"alpha": 1.0, "temperature": 2.0}, "lwf_masked"),
])
def test_avalanche_ewc_lwf_train_with_avalanches_loss_by_default(method, kwargs, masked):
    """Avalanche's EWC and LwF train with CE over every seen logit (no masking); ``<name>_masked`` masks."""
    from methods import METHODS

    losses = {}
    for name in (method, masked):
        check = _LossCheck()
        strategy = make_strategy(name, plugins=[check], **kwargs)
        train_tasks(strategy, synthetic_bench(), 2)
        assert check.values and all(width == seen == strategy.seen for _, _, width, seen in check.values)
        losses[name] = check.values
    assert METHODS.make_config(method, kwargs).mask_old_logits is False
    assert all(loss == pytest.approx(full, rel=1e-6) for loss, full, _, _ in losses[method])
    assert all(loss != pytest.approx(full, rel=1e-3) for loss, full, _, _ in losses[masked])
    info = METHODS.info(masked)
    assert info.display.endswith("old logits masked") and METHODS.make_config(masked, kwargs).mask_old_logits is True



# ---------------------------------------------------------------------------------------------------- head init
def _documented_head_inits() -> dict[str, str]:
    """docs/baselines.md section 14: method name -> head_init."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "baselines.md").read_text()
    section = text.split("## 14. Head initialisation", 1)[1].split("\n## ", 1)[0]
    table = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[2].startswith("`"):
            for name in re.findall(r"`([^`]+)`", re.sub(r"\([^)]*\)", "", cells[0])):
                table[name] = cells[2].strip("`")
    return table


def test_every_registered_method_has_its_documented_head_init():
    from methods import METHODS
    from methods.base import IncrementalHead

    table = _documented_head_inits()
    # the shipped methods (a plugin another test imported into this process registers its own, undocumented)
    names = [n for n in METHODS.names() if not n.endswith(":<name>")
             and METHODS.get(n).obj.__module__.partition(".")[0] == "methods"] + ["avalanche:EWC", "avalanche:LwF"]
    for name in names:
        key = "avalanche:<Name>" if name.startswith("avalanche:") else name
        assert key in table, f"{name} is missing from docs/baselines.md section 14"
        kwargs = {"ewc_lambda": 1.0} if "EWC" in name or name == "ewc_masked" else {}
        kwargs = {"alpha": 1.0, "temperature": 2.0} if "LwF" in name or name == "lwf_masked" else kwargs
        cfg = METHODS.make_config(name, kwargs)
        assert cfg.head_init == table[key], name
        strategy = make_strategy(name, **kwargs)
        heads = [m for m in strategy.model.modules() if isinstance(m, IncrementalHead)]
        assert all(h.init == table[key] for h in heads), name
    assert {table["l2p"], table["dualprompt"], table["hide_prompt"]} == {"trunc_normal"}
    assert {table["coda_prompt"], table["inflora"], table["avalanche:<Name>"]} == {"linear"}
    assert table["sd_lora"] == table["seq_lora"] == table["full_ft"] == "kaiming"


@pytest.mark.parametrize("how", ["kaiming", "linear", "trunc_normal"])
def test_head_rows_follow_head_init(how):
    from methods.base import IncrementalHead

    d, n = 64, 4000
    torch.manual_seed(0)
    head = IncrementalHead(d, init=how)
    head.grow(3)
    old_w, old_b = head.weight.detach().clone(), head.bias.detach().clone()
    head.grow(3 + n)
    assert torch.equal(head.weight[:3], old_w) and torch.equal(head.bias[:3], old_b)  # old rows kept
    w, b = head.weight[3:].detach(), head.bias[3:].detach()
    if how == "kaiming":  # U(+-sqrt(3/d)), bias 0
        assert not b.any() and float(w.abs().max()) <= math.sqrt(3 / d) and float(w.std()) == pytest.approx(d**-0.5, rel=0.02)
    elif how == "linear":  # nn.Linear: weight and bias U(+-1/sqrt(d))
        assert float(w.abs().max()) <= d**-0.5 and float(w.std()) == pytest.approx((3 * d) ** -0.5, rel=0.02)
        assert float(b.abs().max()) <= d**-0.5 and b.std() > 0
    else:  # timm: trunc_normal std 0.02, bias 0
        assert not b.any() and float(w.std()) == pytest.approx(0.02, rel=0.02)
