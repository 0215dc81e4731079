"""A suite's recipe rule: training settings chosen per method family on a validation split, by code, before any job.

A suite may declare (``recipe:``, inherited through ``extends`` like every top-level key; ``recipe: null`` drops it)::

    recipe:
      validation: 0.2              # fraction of each validated task's training images held out, per class
      seed: 1993                   # class order, split and initialisation of the selection runs
      grid: {lr: [0.003, 0.01, 0.03, 0.1], epochs: [2]}
      families:                    # suite method labels; the first is the family's probe
        full: [full_ft, ewc, lwf, joint]
        lora: [sd_lora, sd_lora_rr, sd_lora_kd, seq_lora]
      tasks: 1                     # optional: validate on the first `tasks` tasks (default 1)

For each benchmark of the suite and each family with a selected member, the probe is trained on the first task's
other images at every grid point (from its own suite config, only ``lr`` and ``epochs`` changed) and scored by its
accuracy on the held-out images; the best point (ties: fewer epochs, then the smaller lr) becomes ``lr`` and
``epochs`` of every member on that benchmark. Test images are never seen by the rule. A family's probe stands for
its members because on the first task they train the same parameters with the same loss (full fine-tuning, EWC,
LwF and joint training; the LoRA methods before any direction is frozen); a method unlike the others is a family
of its own.

With ``tasks: T > 1`` the probe learns the first T tasks in turn (each task's kept images, as a run of the suite
would) and is scored by its class-incremental accuracy on all T tasks' held-out images (the mean over tasks, as
``Acc``): regularisers, masking and frozen directions then act during selection. It follows the idea of selecting
on a sequence of a few tasks (Chaudhry et al., ICLR 2019, "Efficient Lifelong Learning with A-GEM", section 2,
which uses separate tasks that are never evaluated; here the held-out images of the stream's first tasks). From
the second task on, methods of one family train different losses, so a probe no longer stands for other members:
every family must then have one member. ``tasks: 1`` is left out of the rule's hash, so suites that do not set it
keep their stored choices. Measured on ``mini`` (docs/results/mini/DESIGN.md section 8): the two-task score ranks
most methods by the second task, and the CPU suites keep ``tasks: 1``.

The grid runs go where the suite's jobs go: local worker processes (:func:`run_here`), or SLURM tasks with the
jobs' resources under ``--executor slurm`` (:func:`runner.slurm.run_calls`); each is a :class:`ValidationRun`,
plain data, so both give the same accuracies. The choices are kept in ``<results>/recipe.json`` (with the
selection's commit, start and seconds, which count in the suite's wall-clock time) with every grid point's
validation accuracy, keyed by a hash of the rule, the probe's config and its code, so a resumed or repeated run
reuses them and a changed rule or method selects again. Each job then carries its family's choice in ``runtime["recipe"]`` (kept in its record).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from core.config import stable_hash
from core.errors import UserError
from runner.jobs import Job
from runner.store import atomic_write_text

RULE_KEYS = ("validation", "seed", "grid", "families")
OPTIONAL_KEYS = ("tasks",)
GRID_KEYS = ("lr", "epochs")


@dataclass(frozen=True)
class Family:
    name: str
    members: tuple[str, ...]  # suite method labels; members[0] is the probe

    @property
    def probe(self) -> str:
        return self.members[0]


@dataclass(frozen=True)
class RecipeRule:
    """A suite's ``recipe:`` mapping, checked (bad values exit 2 naming the fix)."""

    validation: float
    seed: int
    lrs: tuple[float, ...]
    epochs: tuple[int, ...]
    families: tuple[Family, ...]
    tasks: int = 1  # the first `tasks` tasks are validated on

    @classmethod
    def from_suite(cls, suite: dict) -> RecipeRule | None:
        spec = suite.get("recipe")
        if spec is None:
            return None
        where = f"suite {suite['name']}: recipe"
        if not isinstance(spec, dict) or not set(RULE_KEYS) <= set(spec) <= set(RULE_KEYS + OPTIONAL_KEYS):
            raise UserError(f"{where} must be a mapping with the keys {', '.join(RULE_KEYS)} and optionally "
                            f"{', '.join(OPTIONAL_KEYS)}")
        grid, families = spec["grid"], spec["families"]
        if not isinstance(grid, dict) or not set(grid) <= set(GRID_KEYS) or not grid:
            raise UserError(f"{where}.grid must map some of {', '.join(GRID_KEYS)} to lists of values")
        lrs, epochs = tuple(grid.get("lr") or ()), tuple(grid.get("epochs") or ())
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 for v in lrs):
            raise UserError(f"{where}.grid.lr must be a list of learning rates > 0, got {lrs}")
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in epochs):
            raise UserError(f"{where}.grid.epochs must be a list of integers >= 1, got {epochs}")
        fraction, seed = spec["validation"], spec["seed"]
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
            raise UserError(f"{where}.validation must be a fraction in (0, 1), got {fraction!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise UserError(f"{where}.seed must be an integer, got {seed!r}")
        if not isinstance(families, dict) or not families or not all(
                isinstance(m, list) and m and all(isinstance(x, str) for x in m) for m in families.values()):
            raise UserError(f"{where}.families must map each family name to a non-empty list of method labels")
        labels = [m for members in families.values() for m in members]
        twice = sorted({m for m in labels if labels.count(m) > 1})
        if twice:
            raise UserError(f"{where}.families: {', '.join(twice)} in more than one family; give each one family")
        unknown = sorted(set(labels) - set(suite.get("methods") or {}))
        if unknown:
            raise UserError(f"{where}.families name(s) {', '.join(unknown)} not among the suite's methods; "
                            "use the suite's method labels")
        tasks = spec.get("tasks", 1)
        if isinstance(tasks, bool) or not isinstance(tasks, int) or tasks < 1:
            raise UserError(f"{where}.tasks must be an integer >= 1 (the first tasks validated on), got {tasks!r}")
        shared = sorted(k for k, v in families.items() if len(v) > 1)
        if tasks > 1 and shared:
            raise UserError(f"{where}: with tasks > 1 a probe stands only for itself (its family's losses differ "
                            f"from the second task on); give each member of {', '.join(shared)} its own family")
        return cls(float(fraction), seed, tuple(float(v) for v in lrs), epochs,
                   tuple(Family(str(k), tuple(v)) for k, v in families.items()), tasks)

    def points(self, job: Job) -> list[dict[str, Any]]:
        """The grid points for a probe job (an axis the rule leaves out keeps the job's own value)."""
        lrs = self.lrs or (job.method_cfg.lr,)
        epochs = self.epochs or (job.method_cfg.epochs,)
        return [{"epochs": e, "lr": lr} for e in sorted(epochs) for lr in sorted(lrs)]

    def where(self) -> str:
        """The tasks validated on, in words."""
        return "the first task" if self.tasks == 1 else f"each of the first {self.tasks} tasks"

    def family_of(self, label: str) -> Family | None:
        return next((f for f in self.families if label in f.members), None)

    def describe(self) -> dict[str, Any]:
        """The rule as data (hashed into every choice's cache key; ``tasks`` only where it is not 1)."""
        out = {"validation": self.validation, "seed": self.seed, "lr": list(self.lrs), "epochs": list(self.epochs),
               "families": {f.name: list(f.members) for f in self.families}}
        return out if self.tasks == 1 else {**out, "tasks": self.tasks}


def check_members(rule: RecipeRule, jobs: list[Job]) -> None:
    """Every family member must train (a training-free method has nothing to choose), on a benchmark with at least
    the rule's ``tasks`` tasks."""
    for job in jobs:
        if rule.family_of(job.method) and getattr(job.method_cfg, "TRAINING_FREE", False):
            raise UserError(f"recipe: {job.method} trains nothing (training-free); remove it from recipe.families")
        n_tasks = getattr(job.benchmark_cfg, "n_tasks", None)
        if rule.family_of(job.method) and n_tasks is not None and n_tasks < rule.tasks:
            raise UserError(f"recipe.tasks is {rule.tasks} but benchmark {job.benchmark} has {n_tasks} task(s); "
                            "lower recipe.tasks")


def probe_jobs(rule: RecipeRule, jobs: list[Job]) -> dict[tuple[str, str], Job]:
    """(benchmark label, family) -> the probe's job at the rule's seed, for every family with a member in ``jobs``.

    ``jobs`` is the suite's unnarrowed job list: a ``--methods`` selection without the probe still needs its config.
    """
    need = {(j.benchmark, f.name) for j in jobs if (f := rule.family_of(j.method))}
    probes: dict[tuple[str, str], Job] = {}
    for job in jobs:
        family = rule.family_of(job.method)
        if family and job.method == family.probe and (job.benchmark, family.name) in need:
            probes.setdefault((job.benchmark, family.name), replace(job, seed=rule.seed))
    missing = sorted(need - set(probes))
    if missing:
        bench, family = missing[0]
        raise UserError(f"recipe: family {family} has no job of its probe {rule_probe(rule, family)} on benchmark "
                        f"{bench}; add that pair to the suite's experiments or put another member first")
    return probes


def rule_probe(rule: RecipeRule, family: str) -> str:
    return next(f.probe for f in rule.families if f.name == family)


def cache_key(rule: RecipeRule, probe: Job) -> str:
    return stable_hash({"rule": rule.describe(), "probe": probe.config(), "code": probe.code_hash()})


def load_choices(results_dir: Path) -> dict[str, Any]:
    path = Path(results_dir) / "recipe.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text()).get("choices", {})
    except (OSError, json.JSONDecodeError):
        return {}


def stored(rule: RecipeRule, probes: dict[tuple[str, str], Job], choices: dict[str, Any]
           ) -> tuple[dict[tuple[str, str], dict], dict[tuple[str, str], Job]]:
    """(choices stored for the current rule and probe config, probes whose choice is still to make)."""
    ready, todo = {}, {}
    for key, probe in probes.items():
        choice = choices.get(f"{key[0]}/{key[1]}")
        if choice is not None and choice.get("key") == cache_key(rule, probe):
            ready[key] = choice
        else:
            todo[key] = probe
    return ready, todo


def needed_probes(rule: RecipeRule, all_jobs: list[Job], jobs: list[Job]) -> dict[tuple[str, str], Job]:
    """The probe jobs of the (benchmark, family) pairs that ``jobs`` (a run narrowed by --methods, --benchmarks
    or --seeds) belong to; the probes themselves come from the whole suite (``all_jobs``)."""
    needed = {(j.benchmark, f.name) for j in jobs if (f := rule.family_of(j.method))}
    return {k: p for k, p in probe_jobs(rule, all_jobs).items() if k in needed}


def apply(rule: RecipeRule | None, jobs: list[Job], all_jobs: list[Job], results_dir: Path) -> tuple[list[Job], int]:
    """(jobs with their family's stored choice applied, number of (benchmark, family) choices still to make)."""
    if rule is None:
        return jobs, 0
    check_members(rule, jobs)
    ready, todo = stored(rule, needed_probes(rule, all_jobs, jobs), load_choices(results_dir))
    out = []
    for job in jobs:
        family = rule.family_of(job.method)
        choice = ready.get((job.benchmark, family.name)) if family else None
        if choice is not None:
            cfg = job.method_cfg.replace(lr=choice["lr"], epochs=choice["epochs"])
            runtime = {**job.runtime, "recipe": {"family": family.name, "probe": family.probe, "lr": choice["lr"],
                                                 "epochs": choice["epochs"], "val_acc": choice["val_acc"]}}
            job = replace(job, method_cfg=cfg, runtime=runtime)
        out.append(job)
    return out, len(todo)


@dataclass(frozen=True)
class ValidationRun:
    """One grid point of one probe as plain data (the job as :func:`runner.executors.job_spec`), callable in
    another process: a local worker or a SLURM task. Returns the held-out accuracy (%)."""

    spec: dict[str, Any]
    point: dict[str, Any]
    fraction: float
    threads: int | None
    imports: tuple[str, ...] = ()
    tasks: int = 1

    def __call__(self) -> float:
        from runner.executors import import_plugins, job_from_spec

        import_plugins(self.imports)
        return validation_accuracy(job_from_spec(self.spec), self.point, self.fraction, self.threads, tasks=self.tasks)


def run_here(n_workers: int) -> Callable[[list[ValidationRun]], list[float]]:
    """The validation runs on ``n_workers`` local CPU worker processes (joblib)."""
    from joblib import Parallel, delayed

    return lambda calls: Parallel(n_jobs=max(1, n_workers), backend="loky")(delayed(call)() for call in calls)


def select(rule: RecipeRule, all_jobs: list[Job], jobs: list[Job], results_dir: Path,
           run_all: Callable[[list[ValidationRun]], list[float]], threads: int | None,
           imports: tuple[str, ...] = (), log=print) -> None:
    """Make the choices :func:`apply` still lacks (the probes' grid runs, through ``run_all``: :func:`run_here`,
    or SLURM tasks) and store them in ``<results>/recipe.json``."""
    from runner.executors import job_spec

    choices = load_choices(results_dir)
    _, todo = stored(rule, needed_probes(rule, all_jobs, jobs), choices)
    if not todo:
        return
    started, t0 = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), time.perf_counter()
    runs = [(key, point) for key, probe in todo.items() for point in rule.points(probe)]
    log(f"recipe: {len(runs)} validation runs ({len(todo)} famil{'y' if len(todo) == 1 else 'ies'} x grid) on "
        f"{rule.validation:g} of the training images of {rule.where()}, seed {rule.seed}")
    accs = run_all([ValidationRun(job_spec(todo[key]), point, rule.validation, threads, tuple(imports), rule.tasks)
                    for key, point in runs])
    for key, probe in todo.items():
        scored = [(point, acc) for (k, point), acc in zip(runs, accs) if k == key]
        best_point, best_acc = max(scored, key=lambda pa: (pa[1], -pa[0]["epochs"], -pa[0]["lr"]))
        choices[f"{key[0]}/{key[1]}"] = {
            "key": cache_key(rule, probe), "probe": probe.method, **best_point, "val_acc": best_acc,
            "grid": [{**point, "val_acc": acc} for point, acc in scored]}
        log(f"recipe: {key[0]} / {key[1]}: lr {best_point['lr']:g}, epochs {best_point['epochs']} "
            f"(validation accuracy {best_acc:.2f}; grid " +
            ", ".join(f"{p['lr']:g}x{p['epochs']}: {a:.2f}" for p, a in scored) + ")")
    from runner.run_job import git_state

    commit, dirty = git_state()
    document = {"rule": rule.describe(), "git_commit": commit, "git_dirty": dirty, "started": started,
                "elapsed_s": round(time.perf_counter() - t0, 1), "runs": len(runs), "choices": choices}
    Path(results_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(results_dir) / "recipe.json", json.dumps(document, indent=2, sort_keys=True) + "\n")


def split_tasks(bench, fraction: float, seed: int, tasks: int = 1):
    """(training part, held-out part) of the first ``tasks`` tasks' training images: ``fraction`` of each class held
    out (one generator over the classes in stream order, so the first task's split does not depend on ``tasks``)."""
    from avalanche.benchmarks.utils import concat_datasets

    if tasks > bench.n_tasks:  # checked before any run by check_members; here for a direct call
        raise UserError(f"recipe.tasks is {tasks} but the benchmark has {bench.n_tasks} task(s); lower recipe.tasks")
    rng = np.random.default_rng(seed)
    kept, held_out = [], []
    for experience in list(bench.scenario.train_stream)[:tasks]:
        dataset = experience.dataset
        targets = np.asarray(list(dataset.targets))
        held: list[int] = []
        for c in np.unique(targets):
            idx = np.flatnonzero(targets == c)
            held += rng.permutation(idx)[: max(1, round(fraction * len(idx)))].tolist()
        kept.append(dataset.subset(sorted(set(range(len(targets))) - set(held))))
        held_out.append(dataset.subset(sorted(held)).eval())
    return concat_datasets(kept), concat_datasets(held_out)


def validation_benchmark(bench, fraction: float, seed: int, tasks: int = 1):
    """A benchmark of the first ``tasks`` tasks: their kept images to train, their held-out images to evaluate."""
    from avalanche.benchmarks.scenarios.supervised import class_incremental_benchmark

    from benchmarks.base import CILBenchmark

    train, held = split_tasks(bench, fraction, seed, tasks)
    per_task = list(bench.classes_per_task[:tasks])
    k = sum(per_task)
    scenario = class_incremental_benchmark({"train": train, "test": held}, class_order=list(range(k)),
                                           num_classes_per_exp=per_task)
    return CILBenchmark(scenario, bench.class_order[:k], per_task, bench.class_names[:k], bench.image_shape,
                        {**bench.info, "recipe_validation": fraction})


def validation_accuracy(probe: Job, point: dict[str, Any], fraction: float, threads: int | None,
                        tasks: int = 1) -> float:
    """Train ``probe`` at ``point`` on the kept part of its first ``tasks`` tasks, in turn; its class-incremental
    accuracy (%) on their held-out parts, the mean over tasks."""
    from runner.record import Provenance
    from runner.run_job import build_run, now

    job = replace(probe, method_cfg=probe.method_cfg.replace(**point), runtime={**probe.runtime, "threads": threads})
    log = logging.getLogger("sdlb.recipe")  # the selection's runs keep no log of their own
    log.disabled = True
    run = build_run(job, log, Provenance(started=now()),
                    bench=lambda b: validation_benchmark(b, fraction, job.seed, tasks))
    for experience in run.bench.scenario.train_stream:
        run.strategy.train(experience, eval_streams=[], **run.loader_kw)
    run.collector.reset()
    run.strategy.eval(run.bench.scenario.test_stream[:tasks], **run.loader_kw)
    cil, _, _, _ = run.collector.row()
    return float(np.mean(cil))
