"""The contract every method must pass, on the tiny ViT and the synthetic benchmark (3 experiences, CPU).

Parametrised over every name in ``METHODS`` (a new method file registers itself and is picked up here without
editing this file) plus the Avalanche strategies ``avalanche:Naive``, ``avalanche:EWC`` and ``avalanche:LwF``.
Checks, for each method:

* losses and outputs are finite;
* within each experience only the parameters the method declares trainable (``trainable_parameters()`` with
  ``requires_grad``) change, the optimizer holds exactly those, frozen parameters stay bit-identical, and over the
  whole run a parameter never declared trainable never changes;
* evaluation covers exactly the classes seen so far (head rows == logits width == seen classes);
* the same seed gives the same accuracy matrix and the same logits;
* the config round-trips through YAML and rejects unknown keys;
* a checkpoint taken after an experience (saved and loaded with ``weights_only=True``, as the harness stores it),
  restored into a freshly built strategy, gives the same predictions;
* resume: the method runs as a job (:func:`runner.run_job.run_job`) that is stopped after experience 2 of 3 and
  started again, so that it resumes exactly as a pre-empted job does (:mod:`runner.resume`: the method's
  ``checkpoint()``, the record so far, the Avalanche clock and the RNGs, restored into a freshly built strategy);
  its final record and final checkpoint equal those of an uninterrupted run. This is what catches state that
  ``checkpoint()`` misses (statistics kept in a plain attribute): predictions right after a restore still match,
  but the continued training does not (tests/ridge_fixture.py shows both).

A method file outside ``methods/`` joins the matrix through ``SDLB_IMPORT`` (comma-separated ``.py`` files or
modules, imported as ``run_suite.py --import`` does), e.g.
``SDLB_IMPORT=examples/last_blocks.py python -m pytest tests/test_method_contract.py -k last_blocks``.

Special cases: a strategy class may define ``CONTRACT_OVERRIDES: ClassVar[dict]``, config fields the contract
sets for it on top of the small test settings (``conftest.SMALL_SETTINGS``, applied as a suite's ``defaults``: a
training-free method keeps ``epochs: 0``). Avalanche strategies whose keyword arguments have no default get them
from :data:`AVALANCHE_CASES`.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml
from avalanche.core import SupervisedPlugin
from conftest import SMALL_SETTINGS, make_strategy, synthetic_bench
from ridge_fixture import registered

AVALANCHE_CASES = {
    "avalanche:Naive": {},
    "avalanche:EWC": {"ewc_lambda": 10.0},
    "avalanche:LwF": {"alpha": 1.0, "temperature": 2.0},
    "ewc_masked": {"ewc_lambda": 10.0},
    "lwf_masked": {"alpha": 1.0, "temperature": 2.0},
}


def contract_methods() -> list[str]:
    from methods import METHODS

    extra = [spec for spec in os.environ.get("SDLB_IMPORT", "").split(",") if spec]
    if extra:
        from runner.executors import import_plugins

        import_plugins(extra)

    registered = [name for name in METHODS.names() if not name.endswith(":<name>")]
    return sorted(set(registered) | set(AVALANCHE_CASES))


def overrides(method: str) -> dict:
    from methods import METHODS

    entry = METHODS.get(method)
    return {**AVALANCHE_CASES.get(method, {}), **getattr(entry.obj, "CONTRACT_OVERRIDES", {})}


def build(method: str, seed: int = 0, plugins=None):
    return make_strategy(method, seed=seed, plugins=plugins, **overrides(method))


def params(strategy) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in strategy.model.named_parameters()}


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {n for n, v in after.items() if n in before and before[n].shape == v.shape and not torch.equal(before[n], v)}


@dataclass
class TaskTrace:
    trainable: set[str] = field(default_factory=set)
    optimizer_matches: bool = True
    changed: set[str] = field(default_factory=set)
    iterations: int = 0
    losses_finite: bool = True


class Probe(SupervisedPlugin):
    """Records what each experience trains and what each evaluation outputs."""

    def __init__(self):
        super().__init__()
        self.tasks: list[TaskTrace] = []
        self.outputs: list[torch.Tensor] = []
        self.widths: set[int] = set()

    def before_training_exp(self, strategy, **kwargs):  # after setup_task and make_optimizer
        declared = {id(p) for p in strategy.trainable_parameters() if p.requires_grad}
        named = dict(strategy.model.named_parameters())
        optimized = {id(p) for g in strategy.optimizer.param_groups for p in g["params"]}
        in_model = {id(p) for p in named.values()}
        trace = TaskTrace(trainable={n for n, p in named.items() if id(p) in declared},
                          optimizer_matches=(optimized & in_model) == declared)
        self.tasks.append(trace)
        self._before = params(strategy)

    def after_training_iteration(self, strategy, **kwargs):
        self.tasks[-1].iterations += 1
        self.tasks[-1].losses_finite &= bool(torch.isfinite(torch.as_tensor(strategy.loss)).all())

    def after_training_epoch(self, strategy, **kwargs):  # before finish_task may legitimately edit the model
        self.tasks[-1].changed = changed(self._before, params(strategy))

    def after_eval_iteration(self, strategy, **kwargs):
        self.outputs.append(strategy.mb_output.detach().float().cpu().clone())
        self.widths.add(strategy.mb_output.shape[1])


@dataclass
class Run:
    acc_matrix: list[list[float]]
    outputs: list[torch.Tensor]
    head_rows: list[int]
    widths: list[set[int]]
    seen: list[int]
    tasks: list[TaskTrace]
    never_trainable_changed: set[str]


def run(method: str, seed: int = 0) -> Run:
    from runner.metrics import AccuracyCollector

    bench = synthetic_bench()
    probe, collector = Probe(), AccuracyCollector(bench.classes_per_task)
    strategy = build(method, seed, plugins=[probe, collector])
    initial = params(strategy)
    acc, outputs, head_rows, widths, seen = [], [], [], [], []
    for t, experience in enumerate(bench.scenario.train_stream):
        strategy.train(experience, eval_streams=[], num_workers=0)
        collector.reset()
        probe.outputs, probe.widths = [], set()
        strategy.eval(bench.scenario.test_stream[: t + 1], num_workers=0)
        acc.append(collector.row()[0])
        outputs.append(torch.cat(probe.outputs))
        head_rows.append(strategy.model.head.out_features)
        widths.append(probe.widths)
        seen.append(sum(bench.classes_per_task[: t + 1]))
    ever = set().union(*(trace.trainable for trace in probe.tasks))
    never = changed(initial, params(strategy)) - ever
    return Run(acc, outputs, head_rows, widths, seen, probe.tasks, never)


@functools.cache
def two_runs(method: str) -> tuple[Run, Run]:
    return run(method), run(method)


@pytest.fixture(params=contract_methods())
def method(request):
    return request.param


def test_losses_and_outputs_are_finite(method):
    first, _ = two_runs(method)
    assert all(trace.losses_finite for trace in first.tasks), "a training loss was not finite"
    assert all(torch.isfinite(out).all() for out in first.outputs), "an evaluation output was not finite"


def test_only_declared_trainable_parameters_change(method):
    first, _ = two_runs(method)
    for t, trace in enumerate(first.tasks):
        assert trace.optimizer_matches, f"task {t}: the optimizer does not hold exactly trainable_parameters()"
        stray = trace.changed - trace.trainable
        assert not stray, f"task {t}: parameters changed without being declared trainable: {sorted(stray)[:5]}"
        if trace.trainable and trace.iterations:
            assert trace.changed, f"task {t}: {trace.iterations} steps changed none of {sorted(trace.trainable)[:5]}"
    assert not first.never_trainable_changed, f"frozen parameters changed: {sorted(first.never_trainable_changed)[:5]}"


def test_evaluation_covers_exactly_the_seen_classes(method):
    first, _ = two_runs(method)
    assert first.head_rows == first.seen
    assert first.widths == [{n} for n in first.seen]


def test_same_seed_same_results(method):
    first, second = two_runs(method)
    assert first.acc_matrix == second.acc_matrix
    for a, b in zip(first.outputs, second.outputs):
        assert torch.equal(a, b)


def test_config_round_trips_through_yaml(method):
    from core.errors import UserError
    from methods import METHODS

    entry = METHODS.get(method)
    cfg = METHODS.make_config(method, overrides(method))
    back = entry.config_cls.from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict())))
    assert type(back) is type(cfg) and back == cfg
    with pytest.raises(UserError, match="valid keys"):
        entry.config_cls.from_dict({**overrides(method), "no_such_key": 1})


def predictions(strategy, stream) -> torch.Tensor:
    probe = Probe()
    strategy.plugins.append(probe)
    try:
        strategy.eval(stream, num_workers=0)
    finally:
        strategy.plugins.remove(probe)
    return torch.cat(probe.outputs)


def test_checkpoint_restore_gives_same_predictions(method):
    bench = synthetic_bench()
    trained = build(method)
    for experience in list(bench.scenario.train_stream)[:2]:
        trained.train(experience, eval_streams=[], num_workers=0)
    buffer = io.BytesIO()
    torch.save(trained.checkpoint(), buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    fresh = build(method)
    fresh.restore(checkpoint)
    stream = bench.scenario.test_stream[:2]
    expected, got = predictions(trained, stream), predictions(fresh, stream)
    assert fresh.model.head.out_features == trained.model.head.out_features
    assert torch.allclose(expected, got, rtol=0, atol=1e-6), f"max diff {float((expected - got).abs().max())}"


# ---------------------------------------------------------------------------------------------------- resume
class Stopped(BaseException):
    """Stands for a kill right after a resume state was saved (not an Exception: run_job does not record it)."""


VOLATILE = ("timings", "provenance", "config")  # wall-clock times, hosts, runtime settings


def tensors_differ(a, b, where: str = "") -> list[str]:
    """Where two nested checkpoints (dicts, lists, tensors, plain values) differ, as dotted paths."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where} keys {sorted(set(a) ^ set(b))[:5]}"]
        return [d for k in a for d in tensors_differ(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where} length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in tensors_differ(x, y, f"{where}[{i}]")]
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return [] if a.shape == b.shape and torch.equal(a, b) else [where]
    return [] if a == b else [where]


def resume_mismatches(method: str, out: Path, stop_after: int = 1) -> list[str]:
    """Run ``method`` as a job uninterrupted, and again stopped after experience ``stop_after`` (0-based) and
    resumed; return what differs between the two final records and final checkpoints (empty: none)."""
    from runner import resume
    from runner.run_job import run_job
    from runner.suite import expand_jobs

    label = method.replace(":", "_")
    suite = {"name": "contract", "seeds": [0], "defaults": SMALL_SETTINGS,
             "backbones": {"tiny": {"tag": "vit_test_tiny", "pretrained": False}},
             "benchmarks": {"synthetic": {"n_tasks": 3, "n_classes": 6}},
             "methods": {label: {"method": method, **overrides(method)}}}
    job = expand_jobs(suite)[0]  # seed 0, or the first seed a row "as released" pins (its registration's)
    job = dataclasses.replace(job, runtime={"device": "cpu", "threads": 1})
    reference = run_job(job, out / "reference").to_dict()
    assert reference["status"] == "done", reference["error"]
    save = resume.save

    def save_then_stop(store, job_id, config_hash, finished, *args, **kwargs):
        save(store, job_id, config_hash, finished, *args, **kwargs)
        if finished == stop_after:
            raise Stopped

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(resume, "save", save_then_stop)
        with pytest.raises(Stopped):
            run_job(job, out / "resumed")
    resumed = run_job(job, out / "resumed").to_dict()
    assert resumed["status"] == "done", resumed["error"]
    log = (out / "resumed" / resumed["log_path"]).read_text()
    assert f"resumed: experiences 1-{stop_after + 1} of 3 already finished" in log, "the job did not resume"
    diffs = [key for key in reference if key not in VOLATILE and reference[key] != resumed.get(key)]
    final = [torch.load(run / rec["checkpoint"], weights_only=True)
             for run, rec in ((out / "reference", reference), (out / "resumed", resumed))]
    return diffs + [f"checkpoint{d}" for d in tensors_differ(*final)]


def test_a_resumed_job_ends_exactly_as_an_uninterrupted_one(method, tmp_path):
    mismatches = resume_mismatches(method, tmp_path)
    assert not mismatches, f"stopped after experience 2 and resumed, the job ends differently in: {mismatches[:8]}"


def test_the_resume_check_catches_statistics_left_out_of_the_checkpoint(tmp_path):
    """The fixture keeps its readout's statistics in a plain attribute: predictions right after a restore match
    (the older check passes), but a resumed job refits on the last task's statistics alone. The same method with
    the statistics in buffers passes."""
    with registered("ridge_lost_state", "ridge_buffers"):
        test_checkpoint_restore_gives_same_predictions("ridge_lost_state")
        assert resume_mismatches("ridge_buffers", tmp_path / "buffers") == []
        lost = resume_mismatches("ridge_lost_state", tmp_path / "lost")
    assert "acc_matrix" in lost and "checkpoint.tensors.head.weight" in lost, lost


# ---------------------------------------------------------------------------------------------------- head
def test_the_head_must_be_a_growing_head():
    """What the base strategy calls on ``model.head`` is the abstract GrowingHead: a head lacking ``grow`` cannot
    be built, and a model whose head is not a GrowingHead is refused at construction."""
    from conftest import tiny_backbone
    from torch import nn

    from methods.base import CILModel, CILStrategy, GrowingHead, MethodConfig

    class NoGrow(GrowingHead):
        out_features = 0

        def forward(self, features):
            return features

    with pytest.raises(TypeError, match="abstract"):
        NoGrow(4)

    class PlainLinear(CILStrategy):
        def build_model(self, backbone):
            model = CILModel(backbone)
            model.head = nn.Linear(backbone.num_features, 2)
            return model

    with pytest.raises(TypeError, match="whose .head is a methods.base.GrowingHead"):
        PlainLinear(cfg=MethodConfig(), backbone=tiny_backbone())
    assert isinstance(CILStrategy(cfg=MethodConfig(), backbone=tiny_backbone()).model.head, GrowingHead)
