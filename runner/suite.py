"""Suite files (YAML) -> validated jobs.

A suite names its benchmarks, methods and backbones once (each a label with the registry name and config
fields), then which combinations run::

    name: quick
    seeds: [1993, 1994, 1995]
    backbones:  {fmnist_vit: {tag: vit_fmnist_p7_28.fmnist_half}}
    benchmarks: {split_fmnist: {n_tasks: 5}}               # label = registry name unless `benchmark:` is given
    methods:
      sd_lora: {epochs: 2, lr: 0.01}
      sd_lora_paper: {method: sd_lora, preset: paper}      # a second configuration of the same method
    defaults: {epochs: 2}                                  # optional: fields every method gets (if it has them)
    overrides:                                             # optional: per (method, benchmark) fields
      - {methods: [sd_lora], benchmarks: [split_fmnist], set: {lr: 0.02}}
      - {methods: [sd_lora], benchmarks: [split_fmnist], seeds: [1993]}  # and seeds: only these of theirs
      - {methods: [sd_lora], benchmarks: [split_fmnist], set_benchmark: {n_tasks: 2}}  # and benchmark fields
    experiments:                                           # optional: default is the full product
      - {methods: [sd_lora, full_ft], benchmarks: [split_fmnist]}
    jobs: 2                                                # optional: CPU workers when --jobs is not given
    threads: 1                                             # optional: torch threads per job (default: cores / jobs)
    executor: local                                        # optional: local or slurm, with a `slurm:` mapping
    recipe: {...}                                          # optional: lr/epochs per method family, chosen on a
                                                           # validation split by code (runner/recipe.py)

``jobs`` is capped at one worker per core (runner/plan.py); ``threads`` fixed keeps a suite's records independent of
the machine's core count (a full fine-tuning row's weight gradients round differently with 1 and 2 threads).

A method's fields come from, last wins: its config class's defaults, the suite's ``defaults`` (only fields the
method has; never the ``epochs``/``init_epochs`` of a ``TRAINING_FREE`` method), its entry, matching ``overrides``,
then command-line overrides. A value from ``defaults`` that the method rejects is named in the error.

A method whose registration pins the class order or the seeds (``MethodInfo.identity_order``/``seeds``: rows
"as released", docs/baselines.md section 15) gets them in every suite: :func:`pinned_by_method`. An ``overrides``
entry with ``seeds`` narrows its pairs to those of their seeds (:func:`pair_seeds`), e.g. a released config that
ran one seed on one benchmark; a seed the pair would not run is an error. One with ``set_benchmark`` sets benchmark
fields for its pairs only, e.g. the transforms a reference used for its own method; the records hold them.

Every config is built (and so validated) before any job runs: a bad suite exits 2 with nothing written.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from benchmarks import BENCHMARKS
from benchmarks.backbones import BackboneConfig
from benchmarks.base import split_sizes
from core.errors import UserError
from methods import METHODS
from runner.checks import check_suite_shape, path_problems
from runner.jobs import Job

SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"
TOP_KEYS = {"name", "description", "extends", "seeds", "backbones", "benchmarks", "methods", "defaults",
            "overrides", "experiments", "executor", "slurm", "jobs", "threads", "recipe"}
MERGED_KEYS = ("backbones", "benchmarks", "methods", "defaults")


def suite_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    candidate = SUITES_DIR / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    raise UserError(f"unknown suite {name_or_path!r}; valid suites are: {', '.join(list_suites())} (or a .yaml path)")


def list_suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def load_suite(name_or_path: str, _chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read and check a suite file; ``extends: OTHER`` starts from OTHER's content (labels merged key by key,
    a label set to null is removed, every other top-level key replaced)."""
    path = suite_path(name_or_path)
    if str(path) in _chain:
        raise UserError(f"suite {path.name}: 'extends' forms a cycle ({' -> '.join(_chain)})")
    data = _read_yaml(path)
    parent_name = data.pop("extends", None)
    if parent_name:
        sibling = path.parent / f"{parent_name}.yaml"  # next to the child first, then suites/
        parent = load_suite(str(sibling) if sibling.exists() else str(parent_name), (*_chain, str(path)))
        parent.pop("name", None)
        data = _merge_suites(parent, data)
    for key in ("benchmarks", "methods"):
        if not isinstance(data.get(key), dict) or not data[key]:
            raise UserError(f"suite {path.name}: '{key}' must be a non-empty mapping of label -> settings")
    data.setdefault("name", path.stem)
    return data


def _merge_suites(parent: dict, child: dict) -> dict:
    merged = dict(parent)
    for key, value in child.items():
        if key in MERGED_KEYS and isinstance(value, dict) and isinstance(parent.get(key), dict):
            table = {k: dict(v or {}) if isinstance(v, dict) or v is None else v for k, v in parent[key].items()}
            for label, body in value.items():
                if body is None and label in table and key != "defaults":
                    del table[label]
                elif isinstance(body, dict) and isinstance(table.get(label), dict):
                    table[label] = {**table[label], **body}
                else:
                    table[label] = body
            merged[key] = table
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"suite file {path} is not valid YAML{where}; fix the syntax") from None
    if not isinstance(data, dict):
        raise UserError(f"suite file {path} must be a mapping with keys benchmarks, methods, seeds")
    unknown = sorted(str(k) for k in set(data) - TOP_KEYS)
    if unknown:
        raise UserError(f"suite {path.name}: unknown key(s) {', '.join(unknown)}; valid keys are: {', '.join(sorted(TOP_KEYS))}")
    check_suite_shape(data, f"suite {path.name}")
    return data


def _entries(suite: dict, key: str) -> dict[str, dict]:
    out = {}
    for label, body in (suite.get(key) or {}).items():
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise UserError(f"suite {suite['name']}: {key}.{label} must be a mapping of settings")
        out[str(label)] = dict(body)
    return out


def _seeds(suite: dict, override: list[int] | None) -> list[int]:
    seeds = override if override is not None else suite.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise UserError(f"suite {suite['name']}: seeds must be a non-empty list of integers")
    return seeds


def expand_jobs(suite: dict, *, methods: list[str] | None = None, benchmarks: list[str] | None = None,
                seeds: list[int] | None = None, overrides: dict[str, dict] | None = None) -> list[Job]:
    """All jobs of the suite (optionally narrowed), each with fully built configs."""
    name = suite["name"]
    bench_entries = _entries(suite, "benchmarks")
    method_entries = _entries(suite, "methods")
    backbone_entries = _entries(suite, "backbones") or {"default": {}}
    for wanted, entries, what in ((methods, method_entries, "method"), (benchmarks, bench_entries, "benchmark")):
        for label in wanted or []:
            if label not in entries:
                raise UserError(f"{what} {label!r} is not in suite {name}; its {what}s are: {', '.join(entries)}")
    experiments = suite.get("experiments") or [{}]
    pairs: list[tuple[str, str]] = []
    for exp in experiments:
        for m in exp.get("methods", list(method_entries)):
            for b in exp.get("benchmarks", list(bench_entries)):
                if m not in method_entries or b not in bench_entries:
                    raise UserError(f"suite {name}: experiment names unknown method/benchmark {m!r}/{b!r}")
                if (m, b) not in pairs:
                    pairs.append((m, b))
    defaults = suite.get("defaults") or {}
    backbone_cfgs = {label: BackboneConfig.from_dict(body, where=f"backbone {label}")
                     for label, body in backbone_entries.items()}
    jobs, unpinned = [], {}
    for m_label, b_label in pairs:
        if (methods and m_label not in methods) or (benchmarks and b_label not in benchmarks):
            continue
        b_body = dict(bench_entries[b_label])
        b_name = b_body.pop("benchmark", b_label)
        pair_overrides = matching_overrides(suite, m_label, b_label)
        pair_fields = {k: v for ov in pair_overrides for k, v in ov.get("set_benchmark", {}).items()}
        where = f"benchmark {b_label}" + (f" (with the override fields of {m_label})" if pair_fields else "")
        b_cfg = BENCHMARKS.make_config(b_name, {**b_body, **pair_fields}, where=where)
        check_split(b_label, b_name, b_cfg)
        m_body = dict(method_entries[m_label])
        m_name = m_body.pop("method", m_label)
        entry = METHODS.get(m_name)
        b_cfg, job_seeds = pinned_by_method(entry.info, b_cfg, _seeds(suite, seeds), seeds)
        pinned = getattr(entry.info, "seeds", None)
        job_seeds, narrowed = pair_seeds(suite["name"], m_label, b_label, pair_overrides, pinned or _seeds(suite, None),
                                         job_seeds)
        if not job_seeds:  # --seeds missed every seed the registration or an override pins
            unpinned[f"{m_label} on {b_label}" if narrowed else m_label] = narrowed or pinned
        # precedence (docs/adding_a_method.md): the method's declared defaults < suite defaults (the fields it has,
        # less a training-free method's schedule) < the method's entry < per-(method, benchmark) overrides < caller
        from_defaults = suite_defaults_for(entry.config_cls, defaults)
        merged = dict(from_defaults)
        merged.update(m_body)
        for ov in pair_overrides:
            merged.update(ov.get("set", {}))
        merged.update((overrides or {}).get(m_label, {}))
        try:
            m_cfg = METHODS.make_config(m_name, merged, where=f"method {m_label}")
        except UserError as err:
            inherited = {k: v for k, v in from_defaults.items()  # the defaults the error names, still in force
                         if merged.get(k) is v and re.search(rf"\b{re.escape(k)}\b", str(err))}
            if not inherited:
                raise
            given = ", ".join(f"{k}: {v}" for k, v in inherited.items())
            raise UserError(f"{err} (suite defaults gave it {given}; set the field in the entry of {m_label} "
                            "to override them)") from None
        try:
            m_cfg.check_benchmark(b_cfg)  # a method's limits that depend on the benchmark
        except UserError as err:
            raise UserError(f"method {m_label} on benchmark {b_label}: {err}") from None
        for bb_label, bb_cfg in backbone_cfgs.items():
            for seed in job_seeds:
                jobs.append(Job(name, m_label, m_name, m_cfg, b_label, b_name, b_cfg, bb_label, bb_cfg, seed,
                                multi_backbone=len(backbone_cfgs) > 1))
    if unpinned and jobs:
        listed = "; ".join(f"{m} at {', '.join(map(str, s))}" for m, s in unpinned.items())
        print(f"note: --seeds leaves no job to methods that run only at the seeds their registration pins "
              f"(MethodInfo.seeds, a row 'as released') or an override's 'seeds' gives them: {listed}; add those "
              "seeds to --seeds to keep them")
    if not jobs:
        ran = ", ".join(dict.fromkeys(m for m, _ in pairs))
        raise UserError(f"suite {name}: the selection leaves no jobs (its experiments run the methods {ran} on "
                        f"{', '.join(dict.fromkeys(b for _, b in pairs))}); check --methods/--benchmarks/--seeds")
    return jobs


def class_count(b_name: str, b_cfg: Any) -> int | None:
    """How many classes a benchmark config splits into tasks, when that is known before its data is read: the
    config's own ``n_classes`` (e.g. ``synthetic``), else the registration's ``BenchmarkInfo.n_classes``, unless
    the config has another ``*_classes`` field besides ``init_classes`` that may change the count (e.g.
    ``split_fmnist_glyphs``' ``glyph_classes``): None then, and the job checks its own split."""
    own = getattr(b_cfg, "n_classes", None)
    if isinstance(own, int):
        return own
    if any(f.endswith("_classes") and f != "init_classes" for f in b_cfg.field_names()):
        return None
    return BENCHMARKS.get(b_name).info.n_classes


def check_split(b_label: str, b_name: str, b_cfg: Any) -> None:
    """A split of the classes that no job could make is bad input: one line before anything runs, not a failed
    record per job (``benchmarks.base.split_sizes`` is the jobs' own rule)."""
    n = class_count(b_name, b_cfg)
    if n is None:
        return
    try:
        split_sizes(n, b_cfg.n_tasks, b_cfg.init_classes)
    except UserError as err:
        raise UserError(f"benchmark {b_label}: {err}") from None


def matching_overrides(suite: dict, m_label: str, b_label: str) -> list[dict]:
    """The suite's ``overrides`` entries that select the pair (an entry without ``methods`` or ``benchmarks`` selects
    every method or benchmark), in file order: later entries win."""
    return [ov for ov in suite.get("overrides") or []
            if m_label in ov.get("methods", [m_label]) and b_label in ov.get("benchmarks", [b_label])]


def pair_seeds(suite_name: str, m_label: str, b_label: str, pair_overrides: list[dict],
               own: list[int] | tuple[int, ...], job_seeds: list[int]) -> tuple[list[int], tuple[int, ...] | None]:
    """(seeds, the overrides' seeds or None) of one (method, benchmark) pair: an entry of its ``pair_overrides``
    (:func:`matching_overrides`) with ``seeds`` narrows the pair to those (e.g. a released config that ran one seed on
    one benchmark), which must be among the seeds the pair runs by the suite file (``own``: the registration's pinned
    seeds, else the suite's); ``--seeds`` still narrows them (``job_seeds``)."""
    narrowed = None
    for ov in pair_overrides:
        if "seeds" not in ov:
            continue
        extra = [s for s in ov["seeds"] if s not in own]
        if extra:
            raise UserError(f"suite {suite_name}: an override gives {m_label} on {b_label} the seeds "
                            f"{', '.join(map(str, ov['seeds']))}, but {', '.join(map(str, extra))} is not among the "
                            f"seeds it runs ({', '.join(map(str, own))}); an override's seeds can only narrow them")
        narrowed = tuple(s for s in (own if narrowed is None else narrowed) if s in ov["seeds"])
        if not narrowed:
            raise UserError(f"suite {suite_name}: its overrides leave {m_label} on {b_label} no seed to run; "
                            "give its overrides one common seed")
    return (job_seeds if narrowed is None else [s for s in job_seeds if s in narrowed]), narrowed


def pinned_by_method(info: Any, b_cfg: Any, suite_seeds: list[int], chosen: list[int] | None) -> tuple[Any, list[int]]:
    """(benchmark config, seeds) of a method's jobs: a registration that pins them (``MethodInfo.identity_order``,
    ``MethodInfo.seeds``, e.g. a row "as released") overrides the suite's order and seeds; ``--seeds`` still narrows
    the pinned seeds. Both end up in the job's config, so its record holds them."""
    if getattr(info, "identity_order", False):
        b_cfg = b_cfg.replace(order_seed=-1)
    pinned = getattr(info, "seeds", None)
    if pinned is None:
        return b_cfg, suite_seeds
    return b_cfg, [s for s in pinned if chosen is None or s in chosen]


def suite_defaults_for(config_cls: type, defaults: dict[str, Any]) -> dict[str, Any]:
    """The part of a suite's ``defaults`` that a method's config gets: the fields it has, except the training
    schedule (``TRAINING_FIELDS``) of a method whose config declares ``TRAINING_FREE``."""
    skip = set(config_cls.TRAINING_FIELDS) if getattr(config_cls, "TRAINING_FREE", False) else set()
    valid = set(config_cls.field_names()) - skip
    return {k: v for k, v in defaults.items() if k in valid}


def validate_paths(jobs: list[Job]) -> None:
    """Datasets and weights must exist before anything runs (each config knows what it needs)."""
    problems = path_problems(jobs)
    if problems:
        raise UserError(problems[0])
