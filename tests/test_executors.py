"""Executors at scale: resume inside a job, worker pools, failure isolation, status, GPU slots, a real SLURM.

Cheap jobs use the ``noop`` method of bench/runner_overhead.py (loaded with ``--import``, as a user's plugin
would be): it trains nothing, and can be told to fail or to kill its worker. Resume tests train the real
``sd_lora`` / ``full_ft`` on the synthetic benchmark, because only real training draws from the RNGs.

The SLURM tests need a cluster that answers (``bash .ci/slurm_up.sh`` starts a single-node one; CI does) and
are skipped, with the reason, when none does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

import run_suite

REPO = Path(__file__).resolve().parent.parent
NOOP = str(REPO / "bench" / "runner_overhead.py")
TINY = {"tag": "vit_test_tiny", "pretrained": False}
VOLATILE = ("timings", "provenance", "config")  # wall-clock times, hosts and runtime settings (threads, workers)


def suite_file(tmp_path: Path, methods: dict, seeds=(0,), name: str = "exec", **bench) -> Path:
    data = {"name": name, "seeds": list(seeds), "backbones": {"tiny": TINY},
            "benchmarks": {"synthetic": {"n_tasks": 3, "n_classes": 6, **bench}},
            "defaults": {"epochs": 1, "batch_size": 8, "eval_batch_size": 16}, "methods": methods}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def main(*args) -> int:
    return run_suite.main([str(a) for a in args])


def records(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))}


def stripped(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in VOLATILE}


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def log_has(out: Path, job_id: str, text: str) -> bool:
    path = out / "logs" / f"{job_id}.log"
    return path.exists() and text in path.read_text()


# ---------------------------------------------------------------------------------------------------- resume
class Killed(BaseException):
    """Stands for a SIGKILL: not an Exception, so run_job does not turn it into a failed record."""


@pytest.mark.parametrize("method,kill_after", [("sd_lora", 0), ("full_ft", 1)])
def test_a_job_stopped_after_an_experience_resumes_to_the_same_record(tmp_path, monkeypatch, method, kill_after):
    from runner import resume

    suite = suite_file(tmp_path, {"sd_lora": {"rank": 2}, "full_ft": {}})
    common = ["--suite", suite, "--no-report", "--threads", "1", "--methods", method]
    assert main(*common, "--results-dir", tmp_path / "ref") == 0
    save = resume.save

    def save_then_die(store, job_id, config_hash, finished, *args, **kwargs):
        save(store, job_id, config_hash, finished, *args, **kwargs)
        if finished == kill_after:
            raise Killed

    monkeypatch.setattr(resume, "save", save_then_die)
    with pytest.raises(Killed):
        main(*common, "--results-dir", tmp_path / "res")
    monkeypatch.setattr(resume, "save", save)
    job_id = f"{method}__synthetic__s0"
    assert not (tmp_path / "res" / "records").exists()
    assert main(*common, "--results-dir", tmp_path / "res") == 0
    assert log_has(tmp_path / "res", job_id, f"resumed: experiences 1-{kill_after + 1} of 3 already finished")
    assert stripped(records(tmp_path / "res")[job_id]) == stripped(records(tmp_path / "ref")[job_id])
    # a finished job keeps its per-task checkpoints (analysis tools read them) but not its resume state
    ckpt = tmp_path / "res" / "checkpoints" / job_id
    assert sorted(p.name for p in ckpt.iterdir()) == ["task0.pt", "task1.pt", "task2.pt"]


def test_sigkill_inside_experience_2_loses_nothing_and_resumes_identically(tmp_path, capsys):
    """The runner is SIGKILLed while the second job is inside experience 2 of 3; a rerun skips the first job and
    resumes the second after experience 1: records identical to an uninterrupted run, none lost or doubled."""
    suite = suite_file(tmp_path, {"sd_lora": {"rank": 2, "epochs": 4}}, seeds=(0, 1), train_per_class=48)
    common = ["--suite", suite, "--no-report", "--threads", "1"]
    assert main(*common, "--results-dir", tmp_path / "ref") == 0
    out = tmp_path / "res"
    cmd = [sys.executable, str(REPO / "run_suite.py"), *map(str, common), "--results-dir", str(out)]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: log_has(out, "sd_lora__synthetic__s1", "task 1/3"), 240, "experience 1 of the second job")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not log_has(out, "sd_lora__synthetic__s1", "task 2/3"), "the kill should land inside experience 2"
    first = (out / "records" / "sd_lora__synthetic__s0.json").read_text()
    assert [p.name for p in (out / "records").glob("*.json")] == ["sd_lora__synthetic__s0.json"]
    capsys.readouterr()
    assert main(*common, "--results-dir", out) == 0
    assert "2 jobs, 1 already done, 1 to run (1 resume after their last finished task)" in capsys.readouterr().out
    got, ref = records(out), records(tmp_path / "ref")
    assert sorted(got) == sorted(ref) == ["sd_lora__synthetic__s0", "sd_lora__synthetic__s1"]
    assert (out / "records" / "sd_lora__synthetic__s0.json").read_text() == first  # not rerun, not rewritten
    for job_id in ref:
        assert stripped(got[job_id]) == stripped(ref[job_id])
    log = (out / "logs" / "sd_lora__synthetic__s1.log").read_text()
    assert "resumed: experiences 1-1 of 3" in log
    assert [log.count(f"task {t}/3") for t in (1, 2, 3)] == [1, 1, 1]  # no experience ran twice
    assert "epoch 4/4" in log  # per-epoch progress lines
    assert not (out / "checkpoints" / "sd_lora__synthetic__s1" / "resume.pt").exists()


@pytest.mark.parametrize("saved_by", ["pin", "code"])
def test_a_resume_state_of_other_kernels_or_code_is_not_continued(tmp_path, monkeypatch, capsys, saved_by):
    """A job stopped after experience 1 under one CPU kernel pin (or by other code: an edit of the method between
    the two starts) starts over, since its record would otherwise name one pin (code) for experiences run under
    two: the run does not count it as resuming, the log says why, and the record equals an uninterrupted run's."""
    from runner import resume

    suite = suite_file(tmp_path, {"full_ft": {}})
    common = ["--suite", suite, "--no-report", "--threads", "1"]
    assert main(*common, "--results-dir", tmp_path / "ref") == 0
    save = resume.save

    def save_as_elsewhere_then_die(store, job_id, config_hash, finished, n_tasks, strategy, progress, pin=None,
                                   code_hash=None):
        assert pin and code_hash  # the run's own pin and code reach the resume state
        if saved_by == "pin":
            pin = "baseline"
        else:
            code_hash = "0" * 16
        save(store, job_id, config_hash, finished, n_tasks, strategy, progress, pin, code_hash)
        raise Killed

    monkeypatch.setattr(resume, "save", save_as_elsewhere_then_die)
    with pytest.raises(Killed):
        main(*common, "--results-dir", tmp_path / "res")
    monkeypatch.setattr(resume, "save", save)
    capsys.readouterr()
    assert main(*common, "--results-dir", tmp_path / "res") == 0
    assert "1 to run ->" in capsys.readouterr().out  # not "(1 resume after ...)"
    job_id = "full_ft__synthetic__s0"
    why = "under CPU kernel pin baseline, not " if saved_by == "pin" else "by other code (code 0000000000000000, now "
    assert log_has(tmp_path / "res", job_id, f"was saved {why}")
    assert not log_has(tmp_path / "res", job_id, "resumed:")
    assert stripped(records(tmp_path / "res")[job_id]) == stripped(records(tmp_path / "ref")[job_id])


def test_a_resume_state_of_another_config_is_ignored(tmp_path):
    from runner import resume
    from runner.store import ResultStore

    class Strategy:
        def checkpoint(self):
            return {"tensors": {}, "extra": {}}

    store = ResultStore(tmp_path)
    resume.save(store, "j", "hash-a", 0, 3, Strategy(), {"pooled_acc": [50.0]})
    log = __import__("logging").getLogger("test.resume")
    assert resume.load(store, "j", "hash-a", log)["progress"] == {"pooled_acc": [50.0]}
    assert resume.load(store, "j", "hash-b", log) is None
    assert resume.read_summary(store, "j")["finished_tasks"] == 1
    resume.save(store, "j", "hash-a", 0, 3, Strategy(), {"pooled_acc": [50.0]}, pin="avx2")  # the kernels' pin
    assert resume.load(store, "j", "hash-a", log, pin="avx2") is not None
    assert resume.load(store, "j", "hash-a", log, pin="baseline") is None
    def job(config_hash, code_hash=None):  # what resumes() asks of a job
        return SimpleNamespace(config_hash=lambda: config_hash, code_hash=lambda: code_hash)

    summary = resume.read_summary(store, "j")
    assert resume.resumes(summary, job("hash-a"), "avx2") and not resume.resumes(summary, job("hash-a"), "native")
    assert not resume.resumes(summary, job("hash-b"), "avx2") and not resume.resumes(None, job("hash-a"), "avx2")
    resume.save(store, "j", "hash-a", 0, 3, Strategy(), {}, pin="avx2", code_hash="code-a")  # and the code's hash
    assert resume.load(store, "j", "hash-a", log, "avx2", "code-a") is not None
    assert resume.load(store, "j", "hash-a", log, "avx2", "code-b") is None
    summary = resume.read_summary(store, "j")
    assert resume.resumes(summary, job("hash-a", "code-a"), "avx2")
    assert not resume.resumes(summary, job("hash-a", "code-b"), "avx2")
    resume.clear(store, "j")
    assert resume.load(store, "j", "hash-a", log) is None


# ---------------------------------------------------------------------------------------------------- pools
def test_four_workers_writing_records_at_once_lose_nothing(tmp_path):
    suite = suite_file(tmp_path, {"noop": {}}, seeds=range(8))
    out = tmp_path / "res"
    assert main("--suite", suite, "--results-dir", out, "--no-report", "--import", NOOP, "--jobs", "4") == 0
    got = records(out)
    assert sorted(got) == [f"noop__synthetic__s{s}" for s in range(8)]
    assert all(r["status"] == "done" and r["provenance"]["finished"] for r in got.values())
    assert not [p for p in (out / "records").iterdir() if p.suffix != ".json"]  # no temporary file left over
    assert not (out / ".inflight").exists()


def test_a_failing_job_does_not_stop_the_suite_and_retry_failed_reruns_only_it(tmp_path, capsys):
    flag = tmp_path / "fail-now"
    flag.write_text("")
    suite = suite_file(tmp_path, {"ok": {"method": "noop"},
                                  "bad": {"method": "noop", "fail_if_exists": str(flag), "fail_task": 1}})
    out = tmp_path / "res"
    args = ["--suite", suite, "--results-dir", out, "--no-report", "--import", NOOP]
    assert main(*args) == 1
    text = capsys.readouterr().out
    assert "1 job(s) failed: bad__synthetic__s0" in text and "logs/bad__synthetic__s0.log" in text
    assert "--retry-failed" in text
    bad = records(out)["bad__synthetic__s0"]
    assert bad["status"] == "failed" and "RuntimeError: noop: failing in task 1" in bad["error"]
    assert bad["log_path"] == "logs/bad__synthetic__s0.log"
    ok_text = (out / "records" / "ok__synthetic__s0.json").read_text()
    flag.unlink()  # the cause is gone: a retry of the failed job succeeds, from its resume state after task 0
    assert main(*args, "--retry-failed") == 0
    text = capsys.readouterr().out
    assert "1 already done, 1 to run (failed ones only" in text
    assert records(out)["bad__synthetic__s0"]["status"] == "done"
    assert log_has(out, "bad__synthetic__s0", "resumed: experiences 1-1 of 3")
    assert (out / "records" / "ok__synthetic__s0.json").read_text() == ok_text


@pytest.mark.slow
def test_a_worker_that_dies_fails_only_its_job(tmp_path, capsys):
    flag = tmp_path / "kill-now"
    flag.write_text("")
    suite = suite_file(tmp_path, {"ok": {"method": "noop"}, "killer": {"method": "noop", "kill_if_exists": str(flag)},
                                  "ok_too": {"method": "noop", "lr": 0.02}})
    out = tmp_path / "res"
    code = main("--suite", suite, "--results-dir", out, "--no-report", "--import", NOOP, "--jobs", "2")
    got = records(out)
    assert code == 1
    assert sorted(got) == ["killer__synthetic__s0", "ok__synthetic__s0", "ok_too__synthetic__s0"]
    assert got["ok__synthetic__s0"]["status"] == got["ok_too__synthetic__s0"]["status"] == "done"
    assert got["killer__synthetic__s0"]["status"] == "failed"
    assert "worker process died" in got["killer__synthetic__s0"]["error"]
    assert "1 job(s) failed: killer__synthetic__s0" in capsys.readouterr().out


def test_gpu_slots_pin_each_worker_to_its_gpu(tmp_path):
    """Every loky worker claims one slot in its initializer and sees only that slot's GPU (CUDA_VISIBLE_DEVICES);
    checked on CPU through the environment the workers get (tests/test_executors.py::*gpu* run it on a GPU)."""
    from joblib import Parallel, delayed

    from runner.executors import init_worker, parse_gpus, worker_identity

    gpus = parse_gpus("3,3,5")
    assert gpus == ["3", "3", "5"]
    parallel = Parallel(n_jobs=3, backend="loky", batch_size=1, initializer=init_worker,
                        initargs=(str(tmp_path), gpus, 1, []))
    seen = parallel(delayed(worker_identity)() for _ in range(30))
    by_pid = {}
    for pid, visible in seen:
        assert by_pid.setdefault(pid, visible) == visible  # a worker never changes GPU
    assert set(by_pid.values()) <= {"3", "5"}
    assert sum(v == "5" for v in by_pid.values()) <= 1 and sum(v == "3" for v in by_pid.values()) <= 2
    with pytest.raises(run_suite.UserError):
        parse_gpus(" , ")


def test_bad_executor_settings_exit_2_and_write_nothing(tmp_path, capsys):
    suite = suite_file(tmp_path, {"noop": {}})
    out = tmp_path / "res"
    for extra, message in [(["--executor", "slurm", "--gpus", "0"], "--gpus is for the local executor"),
                           (["--executor", "slurm", "--slurm-time", "soon"], "slurm time 'soon'"),
                           (["--gpus", "0,1", "--jobs", "2"], "either --gpus"),
                           (["--executor", "slurm", "--slurm-cpus", "0"], "slurm cpus")]:
        assert main("--suite", suite, "--results-dir", out, "--import", NOOP, *extra) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    data = yaml.safe_load(suite.read_text())
    data["slurm"] = {"partitoin": "gpu"}
    suite.write_text(yaml.safe_dump(data))
    assert main("--suite", suite, "--results-dir", out, "--import", NOOP) == 2
    assert "unknown key(s) partitoin" in capsys.readouterr().err
    assert not out.exists()


def test_suite_jobs_and_threads_keys_apply_unless_the_flags_are_given(tmp_path, capsys, monkeypatch):
    from runner.plan import plan_execution

    suite = suite_file(tmp_path, {"noop": {}})
    data = yaml.safe_load(suite.read_text())
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    for key, flag, want in [(None, None, 1), (2, None, 2), (16, None, 4), (2, 3, 3), (2, 1, 1)]:
        body = {**data, **({"jobs": key} if key else {})}
        args = run_suite.parse_args(["--suite", "x"] + (["--jobs", str(flag)] if flag else []))
        assert plan_execution(args, {**body, "name": "x"})["jobs"] == want, (key, flag)
    args = run_suite.parse_args(["--suite", "x"])
    assert plan_execution(args, {**data, "name": "x"})["threads"] is None  # the executor's share of the cores
    assert plan_execution(args, {**data, "threads": 1, "name": "x"})["threads"] == 1
    assert plan_execution(run_suite.parse_args(["--suite", "x", "--threads", "2"]),
                          {**data, "threads": 1, "name": "x"})["threads"] == 2
    data["jobs"] = 0
    suite.write_text(yaml.safe_dump(data))
    out = tmp_path / "res"
    assert main("--suite", suite, "--results-dir", out, "--import", NOOP) == 2
    assert "jobs must be an integer >= 1" in capsys.readouterr().err
    assert not out.exists()


def test_pin_kernels_sets_a_levels_variables_and_keeps_the_callers(monkeypatch):
    from core import cpu

    monkeypatch.setattr(cpu.platform, "machine", lambda: "x86_64")
    for var in cpu.VARIABLES:
        monkeypatch.delenv(var, raising=False)
    assert cpu.level_in_force() == "native"
    cpu.pin_kernels("avx2")
    assert {v: os.environ[v] for v in cpu.VARIABLES} == cpu.LEVELS["avx2"] and cpu.level_in_force() == "avx2"
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx512")  # the caller's variable wins over a level
    cpu.pin_kernels("baseline")
    assert os.environ["ATEN_CPU_CAPABILITY"] == "avx512" and os.environ["DNNL_MAX_CPU_ISA"] == "AVX2"
    assert cpu.level_in_force().startswith("ATEN_CPU_CAPABILITY=avx512,")
    for var in cpu.VARIABLES:
        monkeypatch.delenv(var)
    monkeypatch.setattr(cpu.platform, "machine", lambda: "aarch64")  # other levels there: nothing is set
    cpu.pin_kernels("avx2")
    assert cpu.level_in_force() == "native"


@pytest.mark.skipif(os.uname().machine not in ("x86_64", "amd64"), reason="the --cpu-isa levels are x86-64's")
def test_cpu_isa_reaches_the_workers_kernels(tmp_path):
    """A run started with none of the variables set: ``--cpu-isa baseline`` makes every worker's ATen kernels
    the unvectorised ones (each record's ``provenance.cpu`` names the level ATen dispatched to, on any x86 CPU),
    and a run without the flag pins AVX2."""
    suite = suite_file(tmp_path, {"noop": {}}, seeds=(0, 1))
    from core.cpu import unpinned

    env = unpinned(dict(os.environ))
    for flags, level in ((["--cpu-isa", "baseline"], "baseline"), ([], "avx2")):
        out = tmp_path / level
        cmd = [sys.executable, str(REPO / "run_suite.py"), "--suite", str(suite), "--results-dir", str(out),
               "--no-report", "--import", NOOP, "--jobs", "2", *flags]
        subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True, timeout=300)
        provenance = [r["provenance"] for r in records(out).values()]
        assert len(provenance) == 2 and {p["cpu_isa"] for p in provenance} == {level}
    assert all(p["cpu"].endswith("(DEFAULT)") for p in (r["provenance"] for r in records(tmp_path / "baseline")
                                                         .values()))


# ---------------------------------------------------------------------------------------------------- status
def test_status_tells_done_failed_running_pending_and_stale(tmp_path, capsys):
    flag = tmp_path / "fail-now"
    flag.write_text("")
    methods = {"ok": {"method": "noop"}, "bad": {"method": "noop", "fail_if_exists": str(flag)},
               "later": {"method": "noop"}}
    suite = suite_file(tmp_path, methods, seeds=(0, 1))
    out = tmp_path / "res"
    assert main("--suite", suite, "--results-dir", out, "--no-report", "--import", NOOP, "--methods", "ok,bad") == 1
    # a job that is running: its running marker names a live process of this host (this one), written just now
    from runner.status import mark_running
    from runner.store import ResultStore

    mark_running(ResultStore(out), "later__synthetic__s0")
    methods["ok"]["lr"] = 0.02  # an edited hyperparameter: the ok records are now stale
    suite = suite_file(tmp_path, methods, seeds=(0, 1))
    status = ["status", "--suite", suite, "--results-dir", out, "--import", NOOP]
    capsys.readouterr()
    assert main(*status) == 0
    text = capsys.readouterr().out
    assert "6 jobs: 0 done, 1 running, 2 failed, 3 pending (2 with a stale record)" in text
    rows = {line.split()[0]: line for line in text.splitlines()[1:]}
    assert "running" in rows["later__synthetic__s0"]
    assert "pending" in rows["ok__synthetic__s0"] and "STALE" in rows["ok__synthetic__s0"]
    assert "failed" in rows["bad__synthetic__s1"] and "fail-now exists" in rows["bad__synthetic__s1"]
    assert "pending" in rows["later__synthetic__s1"]
    # activity older than --active-minutes without an end line: interrupted, i.e. pending
    assert main(*status, "--active-minutes", "0") == 0
    assert "pending" in capsys.readouterr().out.split("later__synthetic__s0")[1].splitlines()[0]
    # a rerun of the edited suite reruns only the stale method's jobs (and the never-run ones)
    flag.unlink()
    assert main("--suite", suite, "--results-dir", out, "--no-report", "--import", NOOP, "--methods", "ok") == 0
    assert "0 already done, 2 to run" in capsys.readouterr().out
    assert main(*status) == 0
    assert "2 done" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------- SLURM
def _slurm_reason() -> str | None:
    from runner.slurm import available

    if subprocess.run(["which", "sinfo"], capture_output=True, check=False).returncode != 0:
        return "sinfo not found: no SLURM here (bash .ci/slurm_up.sh starts a single-node cluster)"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 20 s"
    if proc.returncode != 0 or not {"idle", "mixed", "allocated"} & set(proc.stdout.split()):
        return f"no SLURM node answers (sinfo: {(proc.stdout + proc.stderr).strip()[:200]!r})"
    return available()


@pytest.fixture(scope="module")
def slurm_cluster():
    reason = _slurm_reason()
    if reason:
        pytest.skip(reason)


SLURM_FLAGS = ["--executor", "slurm", "--slurm-time", "60", "--slurm-cpus", "1", "--slurm-mem-gb", "2",
               "--slurm-poll-s", "0.5"]


@pytest.mark.slurm
def test_slurm_executor_writes_the_records_local_writes(tmp_path, slurm_cluster):
    suite = suite_file(tmp_path, {"sd_lora": {"rank": 2}, "full_ft": {}}, seeds=(0, 1))
    common = ["--suite", suite, "--no-report", "--seeds", "0"]
    assert main(*common, "--results-dir", tmp_path / "local", "--threads", "1") == 0
    assert main(*common, "--results-dir", tmp_path / "slurm", *SLURM_FLAGS) == 0
    local, slurm = records(tmp_path / "local"), records(tmp_path / "slurm")
    assert sorted(slurm) == sorted(local) == ["full_ft__synthetic__s0", "sd_lora__synthetic__s0"]
    for job_id, rec in slurm.items():
        assert rec["config_hash"] == local[job_id]["config_hash"]
        assert rec["acc_matrix"] == local[job_id]["acc_matrix"]
        assert stripped(rec) == stripped(local[job_id])
        assert rec["provenance"]["slurm_job_id"]


@pytest.mark.slurm
def test_slurm_preempted_job_requeues_and_resumes(tmp_path, slurm_cluster):
    """USR2 is what SLURM sends (--signal) before pre-empting or timing out a job: submitit requeues the task,
    which starts again and resumes after its last finished experience."""
    suite = suite_file(tmp_path, {"sd_lora": {"rank": 2, "epochs": 4}}, train_per_class=48)
    common = ["--suite", suite, "--no-report"]
    assert main(*common, "--results-dir", tmp_path / "local", "--threads", "1") == 0
    out = tmp_path / "slurm"
    cmd = [sys.executable, str(REPO / "run_suite.py"), *map(str, common), "--results-dir", str(out), *SLURM_FLAGS]
    runner = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    job_id = "sd_lora__synthetic__s0"
    wait_for(lambda: log_has(out, job_id, "task 1/3") or runner.poll() is not None, 240, "experience 1 on SLURM")
    subprocess.run(["scancel", "--signal=USR2", _slurm_id_of(out)], check=True)
    output, _ = runner.communicate(timeout=300)
    assert runner.returncode == 0, output
    log = (out / "logs" / f"{job_id}.log").read_text()
    assert "resumed: experiences 1-" in log, log
    got, ref = records(out)[job_id], records(tmp_path / "local")[job_id]
    assert stripped(got) == stripped(ref)


def _slurm_id_of(out: Path) -> str:
    """The SLURM id of the (single) task the runner submitted, from submitit's folder ``<results>/slurm/<id>``."""
    ids = [p.name for p in (out / "slurm").iterdir() if p.is_dir() and (p / f"{p.name}_submitted.pkl").exists()]
    assert len(ids) == 1, ids
    return ids[0]


@pytest.mark.slurm
def test_slurm_task_cancelled_is_recorded_as_failed(tmp_path, slurm_cluster, capsys):
    suite = suite_file(tmp_path, {"noop": {"sleep_s": 30}})
    out = tmp_path / "slurm"
    cmd = [sys.executable, str(REPO / "run_suite.py"), "--suite", str(suite), "--results-dir", str(out),
           "--no-report", "--import", NOOP, *SLURM_FLAGS]
    runner = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: log_has(out, "noop__synthetic__s0", "start"), 120, "the task to start")
    subprocess.run(["scancel", _slurm_id_of(out)], check=True)
    output, _ = runner.communicate(timeout=120)
    assert runner.returncode == 1, output
    rec = records(out)["noop__synthetic__s0"]
    assert rec["status"] == "failed" and "CANCELLED" in rec["error"], rec["error"]


@pytest.mark.slurm
def test_a_restarted_runner_waits_for_its_running_slurm_jobs_instead_of_submitting_them_again(tmp_path, slurm_cluster):
    release = tmp_path / "release"  # the task runs until the test creates this file, however slow the machine
    suite = suite_file(tmp_path, {"noop": {"hold_until_exists": str(release)}})
    out = tmp_path / "slurm"
    cmd = [sys.executable, str(REPO / "run_suite.py"), "--suite", str(suite), "--results-dir", str(out),
           "--no-report", "--import", NOOP, *SLURM_FLAGS]
    first = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: log_has(out, "noop__synthetic__s0", "start"), 120, "the task to start")
    first.kill()  # the runner dies; its SLURM task runs on
    first.wait()
    again = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    try:
        for line in again.stdout:  # the second runner, while the task still runs
            seen.append(line)
            if "waiting for" in line:
                break
    finally:
        release.touch()
    rest, _ = again.communicate(timeout=180)
    output = "".join(seen) + rest
    assert again.returncode == 0, output
    assert "waiting for 1 job(s) an earlier runner submitted" in output
    assert "submitted" not in output.replace("earlier runner submitted", "")
    assert records(out)["noop__synthetic__s0"]["status"] == "done"
    assert (out / "logs" / "noop__synthetic__s0.log").read_text().count(" start ") == 1  # it ran once


@pytest.mark.slurm
def test_slurm_executor_runs_the_recipe_rules_validation_as_slurm_tasks(tmp_path, slurm_cluster):
    """With ``--executor slurm`` the rule's grid runs are SLURM tasks too (not processes on the submitting host),
    and they choose what local workers choose: same validation accuracies, same records."""
    suite = suite_file(tmp_path, {"full_ft": {}}, seeds=(0,))
    data = yaml.safe_load(suite.read_text())
    data["recipe"] = {"validation": 0.25, "seed": 0, "grid": {"lr": [0.01, 0.1], "epochs": [1]},
                      "families": {"full": ["full_ft"]}}
    suite.write_text(yaml.safe_dump(data))
    common = ["--suite", suite, "--no-report"]
    assert main(*common, "--results-dir", tmp_path / "local", "--jobs", "1", "--threads", "1") == 0
    assert main(*common, "--results-dir", tmp_path / "slurm", *SLURM_FLAGS) == 0
    local, slurm = (json.loads((tmp_path / d / "recipe.json").read_text()) for d in ("local", "slurm"))
    assert slurm["runs"] == 2 and slurm["choices"] == local["choices"]
    results = list((tmp_path / "slurm" / "slurm" / "recipe").glob("*/*_result.pkl"))
    assert len(results) == 2  # one SLURM task per grid point, each with its submitit result
    assert stripped(records(tmp_path / "slurm")["full_ft__synthetic__s0"]) == stripped(
        records(tmp_path / "local")["full_ft__synthetic__s0"])
    from core.cpu import level_in_force  # the kernels' pin reaches the SLURM tasks with the environment

    assert records(tmp_path / "slurm")["full_ft__synthetic__s0"]["provenance"]["cpu_isa"] == level_in_force()


@pytest.mark.slurm
def test_slurm_calls_return_in_order_and_a_failing_task_names_its_output(tmp_path, slurm_cluster):
    from functools import partial

    from runner.slurm import SlurmSettings, run_calls

    settings = SlurmSettings.build({"time": 10, "cpus": 1, "mem_gb": 1, "poll_s": 0.5}, {})
    assert run_calls([partial(int, "7"), partial(int, "3")], settings, tmp_path / "ok", "t", say=lambda _: None) == [7, 3]
    with pytest.raises(RuntimeError, match=r"SLURM task \S+ failed \(.*invalid literal.*\); its output: "):
        run_calls([partial(int, "7"), partial(int, "x")], settings, tmp_path / "bad", "t", say=lambda _: None)
