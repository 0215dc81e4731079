"""Hardening (issue 18): safe loading, bad input refused before any job, one job one runner, full disks, fuzzing.

1. tensor files load only with ``weights_only=True`` (a file naming a python global is refused with one line and
   nothing in it runs), resume states and checkpoints are saved that way, CIFAR-100 pickles go through a
   restricted unpickler;
2. a bad ``--device`` / ``--gpus`` exits 2 with one line before anything is written;
3. ``--dry-run`` lists every problem a real run would stop on;
4. two real runner processes on one results folder never run a job twice (per-job locks), and a killed holder's
   lock is free at once;
5. a results folder that cannot be written (disk full, read-only) gives one line and leaves records intact;
6. malformed suite files and wrong types for every field of every registered config: exit 2 and one line.

Cheap jobs use the ``noop`` method of bench/runner_overhead.py; the lock test adds a ``gate`` method that holds
its first experience while a file exists, so the two runners overlap by construction rather than by timing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import run_suite
from core.errors import UserError

REPO = Path(__file__).resolve().parent.parent
NOOP = str(REPO / "bench" / "runner_overhead.py")
TINY = {"tag": "vit_test_tiny", "pretrained": False}


def suite_file(folder: Path, methods: dict, seeds=(0,), name: str = "hard", backbone: dict | None = None,
               benchmarks: dict | None = None) -> Path:
    data = {"name": name, "seeds": list(seeds), "backbones": {"tiny": backbone or TINY},
            "benchmarks": benchmarks or {"synthetic": {"n_tasks": 3, "n_classes": 6}},
            "defaults": {"epochs": 0, "batch_size": 8, "eval_batch_size": 16}, "methods": methods}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def main(*args) -> tuple[int, str, str]:
    """run_suite.main with stdout and stderr captured (hypothesis runs it many times within one test)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = run_suite.main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def one_line(text: str) -> bool:
    return len(text.strip().splitlines()) == 1 and "Traceback" not in text


class Mkdir:
    """Pickles as a call of ``os.mkdir(path)``: the folder appears only if something unpickled it unrestricted."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return os.mkdir, (self.path,)


def evil_tensor_file(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"tensors": {}, "extra": Mkdir(marker)}, path)


def noop_run(folder: Path, out: Path, *extra, seeds=(0,)) -> tuple[int, str, str]:
    suite = suite_file(folder, {"noop": {}}, seeds=seeds)
    return main("--suite", suite, "--results-dir", out, "--import", NOOP, "--no-report", "--threads", "1", *extra)


# ---------------------------------------------------------------------------------------------------- 1. safe loading
def test_a_checkpoint_naming_a_global_is_refused_by_reload_and_runs_nothing(tmp_path):
    from runner import reload

    out = tmp_path / "res"
    assert noop_run(tmp_path, out)[0] == 0
    record = reload.load_record(out, "noop__synthetic__s0")
    marker = tmp_path / "pwned"
    evil_tensor_file(out / "checkpoints" / "noop__synthetic__s0" / "task2.pt", marker)
    with pytest.raises(UserError) as err:
        reload.load_strategy(record, out)
    assert not marker.exists()
    assert "refused" in str(err.value) and "mkdir" in str(err.value) and one_line(str(err.value))


def test_a_resume_state_naming_a_global_is_refused_and_the_job_starts_over(tmp_path):
    out = tmp_path / "res"
    marker = tmp_path / "pwned"
    evil_tensor_file(out / "checkpoints" / "noop__synthetic__s0" / "resume.pt", marker)
    assert noop_run(tmp_path, out)[0] == 0
    assert not marker.exists()
    log = (out / "logs" / "noop__synthetic__s0.log").read_text()
    assert "resume state unusable, starting from the first experience" in log and "refused" in log
    assert json.loads((out / "records" / "noop__synthetic__s0.json").read_text())["status"] == "done"


def test_tensor_files_hold_only_tensors_and_plain_data(tmp_path):
    from runner.store import atomic_torch_save, load_tensors

    path = tmp_path / "state.pt"
    with pytest.raises(TypeError, match=r"\['extra'\]\['loss'\] is a numpy.float32"):
        atomic_torch_save({"tensors": {"w": torch.ones(2)}, "extra": {"loss": np.float32(0.5)}}, path)
    with pytest.raises(TypeError, match=r"\['extra'\]\['acc'\]\[1\] is a numpy.float64"):  # a float subclass
        atomic_torch_save({"extra": {"acc": [1.0, np.float64(0.5)]}}, path)
    assert not path.exists() and not list(tmp_path.iterdir())
    state = {"tensors": {"w": torch.ones(2)}, "extra": {"task_id": 1, "seen": [0, 1], "pair": (1, 2.5), "x": None}}
    atomic_torch_save(state, path)
    loaded = load_tensors(path)
    assert torch.equal(loaded["tensors"]["w"], state["tensors"]["w"]) and loaded["extra"] == state["extra"]


def test_a_resume_state_holds_the_rngs_as_tensors_and_plain_data(tmp_path):
    """The python, numpy and torch RNG states survive a weights_only round trip exactly."""
    import random

    from runner import resume
    from runner.store import ResultStore

    class Strategy:
        def checkpoint(self):
            return {"tensors": {"w": torch.arange(3.0)}, "extra": {"task_id": 0}}

    random.seed(3), np.random.seed(3), torch.manual_seed(3)
    store = ResultStore(tmp_path)
    resume.save(store, "j", "h", 0, 3, Strategy(), {"pooled_acc": [1 / 3]})
    expected = random.random(), np.random.rand(), torch.rand(1).item()
    state = torch.load(resume.resume_path(store, "j"), weights_only=True)
    resume.restore_rng(state["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_a_cifar_pickle_naming_another_global_is_refused(tmp_path):
    from benchmarks import paper_datasets as pd
    from benchmarks.fixtures import write_cifar100

    write_cifar100(tmp_path, 4, 2, 1)
    base = tmp_path / "cifar-100-python"
    assert pd.read_cifar_pickle(base / "train", ("data", "fine_labels"))["data"].dtype == np.uint8
    marker = tmp_path / "pwned"
    (base / "meta").write_bytes(pickle.dumps({"fine_label_names": ["a"], "x": Mkdir(marker)}, protocol=2))
    with pytest.raises(UserError) as err:
        pd.read_cifar_pickle(base / "meta", ("fine_label_names",))
    assert not marker.exists()
    assert "mkdir" in str(err.value) and "refused" in str(err.value) and one_line(str(err.value))


def test_no_unrestricted_unpickling_outside_tests():
    pattern = re.compile(r"weights_only\s*=\s*False|pickle\.loads?\(")
    hits = [f"{path.relative_to(REPO)}:{n}" for path in REPO.rglob("*.py") if "tests" not in path.parts
            and ".git" not in path.parts for n, line in enumerate(path.read_text().splitlines(), 1)
            if pattern.search(line)]
    assert hits == []


# ---------------------------------------------------------------------------------------------------- 2. devices
@pytest.mark.parametrize("flags,visible,message", [
    (["--device", "banana"], "", "--device banana: not a device"),
    (["--device", "cuda:7"], "", "--device cuda:7: no GPU is visible here"),
    (["--device", "cuda:7"], "0,1", "--device cuda:7: no such GPU (2 GPU(s) visible here)"),
    (["--gpus", "7"], "0,1", "--gpus 7: no GPU 7 (the GPUs visible here are: 0, 1)"),
    (["--gpus", "0,x"], "0", "--gpus 0,x: no GPU x"),
    (["--gpus", "0,0", "--device", "cuda:1"], "0", "each --gpus worker sees only its own GPU"),
])
def test_a_bad_device_exits_2_with_one_line_before_anything_is_written(tmp_path, monkeypatch, flags, visible,
                                                                         message):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)  # the GPUs "here", without asking a driver
    out = tmp_path / "res"
    rc, _, err = noop_run(tmp_path, out, *flags)
    assert rc == 2 and message in err and one_line(err), err
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------- 3. dry run
def test_dry_run_lists_every_problem_a_real_run_would_stop_on(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    empty = tmp_path / "data"
    empty.mkdir()
    suite = suite_file(tmp_path, {"full_ft": {}}, backbone={"tag": "vit_test_tiny"},
                       benchmarks={"cifar100": {"root": str(empty)}, "synthetic": {"n_tasks": 3, "n_classes": 6}})
    out = tmp_path / "res"
    flags = ["--suite", suite, "--results-dir", out, "--weights", tmp_path / "missing.pth", "--device", "cuda"]
    rc, stdout, _ = main(*flags, "--dry-run")
    notes = [ln for ln in stdout.splitlines() if ln.startswith("note: a real run would stop here: ")]
    assert rc == 0 and len(notes) == 3, stdout
    for expected in ("--device cuda: no GPU is visible here", "CIFAR-100 not found", "backbone weights not found"):
        assert sum(expected in note for note in notes) == 1, (expected, notes)
    assert "full_ft__cifar100__s0" in stdout  # the plan itself is still printed
    rc, _, err = main(*flags)  # the real run stops on the first of them
    assert rc == 2 and "--device cuda" in err and one_line(err)
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------- 4. locks
GATE = '''
import time
from dataclasses import dataclass
from pathlib import Path

from methods.base import METHODS, CILStrategy, MethodConfig


@dataclass(frozen=True)
class GateConfig(MethodConfig):
    epochs: int = 0
    gate: str = ""


class Gate(CILStrategy):
    """Holds its first experience while the gate file exists."""

    def setup_task(self, t, experience):
        while t == 0 and Path(self.config.gate).exists():
            time.sleep(0.05)


if "gate" not in METHODS:
    METHODS.register("gate", GateConfig)(Gate)
'''


def wait_for(predicate, timeout: float, what: str, procs=()) -> None:
    deadline = time.time() + timeout
    while not predicate():
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"a runner ended (rc {proc.returncode}) while waiting for {what}: "
                                     f"{proc.stdout.read() if proc.stdout else ''}")
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def started(out: Path, job_id: str) -> int:
    path = out / "logs" / f"{job_id}.log"
    return path.read_text().count(f" start {job_id} ") if path.exists() else 0


def gate_suite(tmp_path: Path, *extra: str) -> tuple[list[str], Path, Path]:
    """A runner command for two gated jobs (seeds 0 and 1; they wait while the gate file exists), the gate (closed)
    and the results folder."""
    plugin = tmp_path / "gate_method.py"
    plugin.write_text(GATE)
    gate = tmp_path / "gate"
    gate.touch()
    suite = suite_file(tmp_path, {"gate": {"gate": str(gate)}}, seeds=(0, 1))
    out = tmp_path / "res"
    return ([sys.executable, str(REPO / "run_suite.py"), "--suite", str(suite), "--results-dir", str(out),
             "--import", str(plugin), "--no-report", "--threads", "1", *extra], gate, out)


def test_two_runners_on_one_folder_never_run_a_job_twice(tmp_path):
    """Runner A holds job s0 (its gate is closed); runner B, started then, skips s0 and takes s1; once the gate
    opens A finishes s0 and skips s1. Every job starts exactly once, and each runner says what it skipped."""
    cmd, gate, out = gate_suite(tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = []
    try:
        a = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(a)
        wait_for(lambda: started(out, "gate__synthetic__s0") == 1, 300, "runner A to start job s0", procs)
        b = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(b)
        wait_for(lambda: started(out, "gate__synthetic__s1") or started(out, "gate__synthetic__s0") > 1, 300,
                 "runner B to start a job", procs)
        assert started(out, "gate__synthetic__s0") == 1, "runner B started job s0 while runner A held it"
        gate.unlink()
        out_a, out_b = a.communicate(timeout=300)[0], b.communicate(timeout=300)[0]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert a.returncode == 0 and b.returncode == 0, (out_a, out_b)
    assert re.search(rf"gate__synthetic__s0: skipped: another runner is running it: \S+ pid {a.pid} since", out_b)
    assert "gate__synthetic__s1: skipped: another runner" in out_a, out_a
    assert "1 job(s) left to another runner that holds them" in out_b and "run_suite.py status` follows" in out_b
    for job_id in ("gate__synthetic__s0", "gate__synthetic__s1"):
        assert started(out, job_id) == 1
        assert json.loads((out / "records" / f"{job_id}.json").read_text())["status"] == "done"


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    from runner.locks import job_lock

    code = ("import sys, time; from runner.locks import job_lock\n"
            "with job_lock(sys.argv[1], 'j'):\n    print('held', flush=True); time.sleep(600)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with job_lock(tmp_path, "j") as other:
            assert other is not None and f"pid {holder.pid} since" in other
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with job_lock(tmp_path, "j") as other:
        assert other is None


def test_sigterm_stops_the_runner_and_its_workers(tmp_path):
    """Two local workers hold their jobs at a closed gate; SIGTERM to the runner alone (not its group) ends it
    with one line and exit 130, and the workers with it: once the gate opens, no job finishes without a runner."""
    cmd, gate, out = gate_suite(tmp_path, "--jobs", "2")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        wait_for(lambda: started(out, "gate__synthetic__s0") and started(out, "gate__synthetic__s1"), 300,
                 "both workers to start their jobs", [proc])
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        gate.unlink()
        time.sleep(3)  # a surviving worker would now finish its job and write its record
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130 and one_line(err) and "interrupted: finished records are kept" in err, err
    assert not list((out / "records").glob("*.json")), "a worker kept running after its runner was stopped"
    # (the same command then resumes: tests/test_runner.py and tests/test_executors.py rerun killed suites)


# ---------------------------------------------------------------------------------------------------- 5. storage
def test_a_full_disk_gives_one_line_and_leaves_finished_records_intact(tmp_path, monkeypatch):
    out = tmp_path / "res"
    assert noop_run(tmp_path, out, seeds=(0, 1))[0] == 0
    before = {p.name: p.read_bytes() for p in (out / "records").iterdir()}
    replace = os.replace

    def full(src, dst, *args, **kwargs):
        if str(dst).endswith(".json") and Path(dst).parent.name == "records":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", full)
    rc, _, err = noop_run(tmp_path, out, "--force", seeds=(0, 1))
    assert rc == 2 and one_line(err), err
    assert f"results folder {out}" in err and "No space left on device" in err
    assert {p.name: p.read_bytes() for p in (out / "records").iterdir()} == before
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_a_read_only_results_folder_stops_before_any_job(tmp_path, monkeypatch):
    def read_only(src, dst, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(os, "replace", read_only)
    out = tmp_path / "res"
    rc, stdout, err = noop_run(tmp_path, out)
    assert rc == 2 and one_line(err) and f"results folder {out}" in err and "Read-only file system" in err, err
    assert not [p for p in out.rglob("*") if p.is_file()]  # no log, no record, no lock, no temporary file
    assert "to run" not in stdout


def test_an_unwritable_folder_stops_a_suite_with_a_recipe_rule_before_its_selection_trains(tmp_path, monkeypatch):
    from runner import recipe

    monkeypatch.setattr(recipe, "select", lambda *a, **k: pytest.fail("the rule's selection ran"))
    suite = suite_file(tmp_path, {"full_ft": {}})
    data = yaml.safe_load(suite.read_text())
    data["recipe"] = {"validation": 0.5, "seed": 0, "grid": {"lr": [0.01, 0.1]}, "families": {"full": ["full_ft"]}}
    suite.write_text(yaml.safe_dump(data))
    rc, stdout, _ = main("--suite", suite, "--dry-run", "--results-dir", tmp_path / "dry")  # a grid of lr alone
    assert rc == 0 and "recipe rule: lr in [0.01, 0.1] per family" in stdout and "2 validation runs" in stdout
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder\n")
    rc, stdout, err = main("--suite", suite, "--results-dir", blocker / "res", "--no-report")
    assert rc == 2 and one_line(err) and f"results folder {blocker / 'res'}" in err, err
    assert "give a writable --results-dir" in err and "free space" not in err  # not a full disk
    assert blocker.read_text() == "not a folder\n" and sorted(tmp_path.iterdir()) == [blocker, suite]


@pytest.mark.parametrize("argv", [
    ["--out", "{file}/out"],                        # the report, a folder under a file
    ["--out", "{tmp}/out", "--reference-method", "sd_lroa"],   # a method with no record
    ["landscape", "--job", "m__b__s0", "--out", "{file}/out"],  # the weight-space commands check before computing
])
def test_analysis_commands_refuse_an_unwritable_output_or_unknown_method_before_writing(tmp_path, monkeypatch, argv):
    import importlib.util

    import analysis.__main__ as cli
    import analysis.landscape

    spec = importlib.util.spec_from_file_location("fixture_make", REPO / "tests" / "fixtures" / "records" / "make.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    results = make.write_records(tmp_path / "res")
    monkeypatch.setattr(analysis.landscape, "compute_landscape", lambda *a, **k: pytest.fail("computed first"))
    monkeypatch.setattr("runner.reload.load_record", lambda *a, **k: {"job_id": "m__b__s0"})
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    before = sorted(tmp_path.rglob("*"))
    argv = [a.format(file=blocker, tmp=tmp_path) for a in argv]
    command, rest = (argv[:1], argv[1:]) if argv[0] == "landscape" else ([], argv)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = cli.main([*command, "--results-dir", str(results), *rest])
    assert rc == 2 and one_line(err.getvalue()), err.getvalue()
    assert ("--out" in err.getvalue() and "not a folder" in err.getvalue()) or "pick one of" in err.getvalue()
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, no probe left behind


def test_an_unknown_method_names_the_plugin_option():
    from methods import METHODS

    with pytest.raises(UserError, match=r"valid names are: .*run_suite\.py --import FILE"):
        METHODS.get("no_such_method")


# ---------------------------------------------------------------------------------------------------- 6. fuzzing
hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies
FUZZ = hypothesis.settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "150")), deadline=None, derandomize=True,
                           suppress_health_check=list(hypothesis.HealthCheck))
SCALARS = (st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats() | st.text(max_size=12))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6) | st.integers(), inner, max_size=3), max_leaves=6)
BASE = {"name": "fuzz", "seeds": [0], "backbones": {"tiny": dict(TINY)},
        "benchmarks": {"synthetic": {"n_tasks": 3, "n_classes": 6}}, "methods": {"full_ft": {}}}


def all_fields() -> list[tuple[str, str, str]]:
    """(kind, registry name, field) for every field of every registered config, and the backbone's."""
    import benchmarks
    import methods
    from benchmarks.backbones import BackboneConfig

    out = [("backbone", "tiny", f) for f in BackboneConfig.field_names()]
    for kind, registry in (("method", methods.METHODS), ("benchmark", benchmarks.BENCHMARKS)):
        out += [(kind, name, f) for name in registry.names() if "<" not in name
                for f in registry.get(name).config_cls.field_names()]
    return out


def with_field(kind: str, name: str, field: str, value) -> dict:
    data = json.loads(json.dumps(BASE))
    if kind == "method":
        data["methods"] = {"m": {"method": name, field: value}}
    elif kind == "benchmark":
        data["benchmarks"] = {"b": {"benchmark": name, field: value}}
    else:
        data["backbones"]["tiny"][field] = value
    return data


def exits_cleanly(folder: Path, document: str) -> None:
    """Exit 0 (a valid suite) or exit 2 with one line: never a traceback, never another code."""
    path = folder / "fuzz.yaml"
    path.write_text(document)
    rc, _, err = main("--suite", path, "--dry-run", "--results-dir", folder / "res")
    assert rc in (0, 2), err
    assert rc == 0 or one_line(err), err
    assert not (folder / "res").exists()


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def test_every_config_field_with_a_wrong_type_exits_2_with_one_line(fuzz_dir):
    fields = all_fields()
    assert len(fields) > 300  # every method, benchmark and backbone field
    for kind, name, field in fields:
        for wrong in ({"nested": [1]}, [[1, 2]]):
            path = fuzz_dir / "field.yaml"
            path.write_text(yaml.safe_dump(with_field(kind, name, field, wrong)))
            rc, _, err = main("--suite", path, "--dry-run", "--results-dir", fuzz_dir / "res")
            assert rc == 2 and one_line(err), (kind, name, field, wrong, err)


@FUZZ
@hypothesis.given(data=st.data())
def test_fuzzed_field_values_never_give_a_traceback(fuzz_dir, data):
    kind, name, field = data.draw(st.sampled_from(all_fields()))
    value = data.draw(VALUES)
    exits_cleanly(fuzz_dir, yaml.safe_dump(with_field(kind, name, field, value)))


TOP = ["name", "description", "extends", "seeds", "backbones", "benchmarks", "methods", "defaults", "overrides",
       "experiments", "executor", "slurm"]


@FUZZ
@hypothesis.given(data=st.data())
def test_malformed_suite_documents_never_give_a_traceback(fuzz_dir, data):
    kind = data.draw(st.sampled_from(["text", "keys", "valid-but-one", "slurm"]))
    if kind == "text":  # anything at all, YAML or not
        document = data.draw(st.text(max_size=80))
    elif kind == "keys":  # the suite's own keys holding anything
        document = yaml.safe_dump(data.draw(st.dictionaries(st.sampled_from(TOP), VALUES, max_size=5)))
    elif kind == "slurm":  # the executor's settings holding anything
        from runner.slurm import SlurmSettings

        suite = json.loads(json.dumps(BASE))
        fields = st.sampled_from([f.name for f in dataclasses.fields(SlurmSettings)])
        suite["slurm"] = data.draw(st.dictionaries(fields, VALUES, max_size=3))
        document = yaml.safe_dump(suite)
    else:  # a valid suite with one top-level key replaced
        suite = json.loads(json.dumps(BASE))
        suite[data.draw(st.sampled_from(TOP))] = data.draw(VALUES)
        document = yaml.safe_dump(suite)
    exits_cleanly(fuzz_dir, document)
