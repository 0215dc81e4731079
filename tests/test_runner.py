"""The suite runner end to end on the synthetic benchmark: records, determinism, crashes, bad input."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import run_suite
from runner.metrics import summary

REPO = Path(__file__).resolve().parent.parent

TINY_SUITE = {
    "name": "tiny",
    "seeds": [0],
    "backbones": {"tiny": {"tag": "vit_test_tiny", "pretrained": False}},
    "benchmarks": {"synthetic": {"n_tasks": 3, "n_classes": 6}},
    "defaults": {"epochs": 1, "batch_size": 8, "eval_batch_size": 16},
    "methods": {"sd_lora": {"rank": 2}, "full_ft": {}},
}


def write_suite(tmp_path: Path, suite: dict | None = None, **changes) -> Path:
    data = json.loads(json.dumps(suite or TINY_SUITE))
    data.update(changes)
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def run(args: list[str], capsys=None) -> int:
    return run_suite.main(args)


def test_suite_writes_one_record_per_job_and_skips_on_rerun(tmp_path, capsys):
    suite = write_suite(tmp_path)
    out = tmp_path / "res"
    assert run(["--suite", str(suite), "--results-dir", str(out), "--no-report"]) == 0
    records = sorted(p.name for p in (out / "records").glob("*.json"))
    assert records == ["full_ft__synthetic__s0.json", "sd_lora__synthetic__s0.json"]
    rec = json.loads((out / "records" / "sd_lora__synthetic__s0.json").read_text())
    assert rec["status"] == "done" and len(rec["acc_matrix"]) == 3 and len(rec["acc_matrix"][2]) == 3
    assert rec["provenance"]["backbone_tag"] == "vit_test_tiny"
    assert rec["provenance"]["weights_sha256"] == "random-init"
    assert (out / rec["log_path"]).read_text().count("task 3/3") == 1
    # our pooled accuracy is Avalanche's own stream accuracy on the same run
    assert rec["pooled_acc"] == pytest.approx(rec["avalanche_stream_acc"], abs=1e-9)
    capsys.readouterr()
    assert run(["--suite", str(suite), "--results-dir", str(out), "--no-report"]) == 0
    assert "2 already done, 0 to run" in capsys.readouterr().out
    # a changed hyperparameter changes the config hash: only that method reruns (the dry run says which first)
    changed = json.loads(json.dumps(TINY_SUITE))
    changed["methods"]["sd_lora"]["rank"] = 3
    edited = str(write_suite(tmp_path, changed))
    assert run(["--suite", edited, "--results-dir", str(out), "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert re.search(r"full_ft__synthetic__s0 .* done  ", dry) and re.search(r"sd_lora__synthetic__s0 .* run   ", dry)
    assert f"1 of 2 jobs would run; the 1 marked done have a record for their config in {out}" in dry
    assert run(["--suite", edited, "--results-dir", str(out), "--no-report"]) == 0
    assert "1 already done, 1 to run" in capsys.readouterr().out


def _strip_volatile(record: dict) -> dict:
    record = dict(record)
    for key in ("timings", "provenance", "config"):
        record.pop(key)
    return record


def test_same_job_and_seed_gives_the_same_record(tmp_path):
    suite = write_suite(tmp_path)
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert run(["--suite", str(suite), "--results-dir", str(out), "--no-report", "--methods", "sd_lora"]) == 0
    ra = json.loads((a / "records" / "sd_lora__synthetic__s0.json").read_text())
    rb = json.loads((b / "records" / "sd_lora__synthetic__s0.json").read_text())
    assert _strip_volatile(ra) == _strip_volatile(rb)


def test_a_failing_job_is_recorded_and_the_others_still_run(tmp_path, capsys):
    suite = json.loads(json.dumps(TINY_SUITE))
    suite["benchmarks"]["wide"] = {"benchmark": "synthetic", "n_tasks": 3, "n_classes": 6, "img_size": 24}
    out = tmp_path / "res"
    code = run(["--suite", str(write_suite(tmp_path, suite)), "--results-dir", str(out), "--no-report"])
    assert code == 1  # 24 px images do not fit the 16 px ViT: those jobs fail, the others finish
    recs = {p.stem: json.loads(p.read_text()) for p in (out / "records").glob("*.json")}
    assert recs["sd_lora__synthetic__s0"]["status"] == "done"
    assert recs["sd_lora__wide__s0"]["status"] == "failed"
    assert "Traceback" in recs["sd_lora__wide__s0"]["error"]
    assert "2 job(s) failed" in capsys.readouterr().out


def test_when_every_job_fails_the_run_ends_on_the_failures_not_on_the_report(tmp_path, capsys):
    """No done record: the report is skipped in one line, and the failed jobs and the rerun hint still close the
    run (the report used to end it in a traceback before they were printed)."""
    suite = json.loads(json.dumps(TINY_SUITE))
    suite["benchmarks"] = {"synthetic": {"n_tasks": 3, "n_classes": 6, "img_size": 24}}  # fails in every job
    suite["methods"] = {"full_ft": {}}
    out = tmp_path / "res"
    assert run(["--suite", str(write_suite(tmp_path, suite)), "--results-dir", str(out)]) == 1
    text = capsys.readouterr().out
    assert f"no tables or figures: no job in {out} has finished yet" in text
    assert "1 job(s) failed" in text and "--retry-failed" in text and not (out / "tables").exists()


def test_a_diverged_run_is_flagged_in_its_record_log_and_progress_line(tmp_path, capsys):
    """A training loss that turns NaN or infinite is not forgetting: the record names the first such epoch
    (``nonfinite_loss``, [task, epoch]), the job's log warns there, and the suite's line says DIVERGED."""
    suite = json.loads(json.dumps(TINY_SUITE))
    suite["methods"] = {"full_ft": {"lr": 1.0e12}, "sd_lora": {"rank": 2}}  # SGD at 1e12 overflows at once
    out = tmp_path / "res"
    assert run(["--suite", str(write_suite(tmp_path, suite)), "--results-dir", str(out), "--no-report"]) == 0
    out_text = capsys.readouterr().out
    bad = json.loads((out / "records" / "full_ft__synthetic__s0.json").read_text())
    good = json.loads((out / "records" / "sd_lora__synthetic__s0.json").read_text())
    assert bad["status"] == "done" and bad["nonfinite_loss"] == [1, 1] and good["nonfinite_loss"] is None
    log = (out / bad["log_path"]).read_text()
    assert log.count("the network has diverged") == 1 and "experience 1 of 3, epoch 1: the mean training loss" in log
    line = {name: next(x for x in out_text.splitlines() if f"{name}__synthetic__s0: Acc" in x)
            for name in ("full_ft", "sd_lora")}
    assert line["full_ft"].endswith("DIVERGED: training loss not finite from task 1, epoch 1")
    assert "DIVERGED" not in line["sd_lora"]


BAD_INPUTS = [
    (["--suite", "no_such_suite"], "unknown suite"),
    (["--methods", "nope"], "method 'nope' is not in suite"),
    (["--seeds", "a,b"], "comma-separated"),
]


@pytest.mark.parametrize("extra,message", BAD_INPUTS)
def test_bad_cli_input_exits_2_and_writes_nothing(tmp_path, capsys, extra, message):
    out = tmp_path / "res"
    args = ["--suite", str(write_suite(tmp_path)), "--results-dir", str(out), *extra]
    if extra[0] == "--suite":
        args = [*extra, "--results-dir", str(out)]
    assert run(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_a_reader_that_leaves_the_pipe_ends_the_cli_quietly():
    """``run_suite.py --list | head``: no BrokenPipeError traceback, the shell's status for a pipeline's writer
    (argparse's --help swallows the error itself)."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written: every write fails with EPIPE
    try:
        done = subprocess.run([sys.executable, "run_suite.py", "--list"], cwd=REPO, stdout=write_end,
                              stderr=subprocess.PIPE, text=True, check=False)
    finally:
        os.close(write_end)
    assert done.returncode == 141 and "Traceback" not in done.stderr, done.stderr


def _suite_with(**method_or_bench):
    suite = json.loads(json.dumps(TINY_SUITE))
    for key, value in method_or_bench.items():
        suite[key] = value
    return suite


BAD_SUITES = [
    ({"methods": {"no_such_method": {}}}, "unknown method 'no_such_method'"),
    ({"benchmarks": {"no_such_bench": {}}}, "unknown benchmark 'no_such_bench'"),
    ({"methods": {"sd_lora": {"rank": 0}}}, "rank must be >= 1"),
    ({"methods": {"sd_lora": {"lr": -0.1}}}, "lr must be > 0"),
    ({"methods": {"sd_lora": {"rnak": 4}}}, "unknown key(s) rnak; valid keys are:"),
    ({"benchmarks": {"split_fmnist": {"root": "/nonexistent/fmnist"}}}, "Fashion-MNIST not found"),
    ({"backbones": {"b": {"tag": "vit_test_tiny", "weights": "/nonexistent/w.pth"}}}, "backbone weights not found"),
    ({"backbones": {"b": {"tag": "vit_base_patch16_224.augreg2_in21k_ft_in1k"}}}, "no weights for backbone"),
    ({"seeds": "1993"}, "seeds must be a non-empty list"),
    ({"methods": {"dualprompt": {"pool_size": 2}}}, "3 tasks need pool_size >= 3"),
]


@pytest.mark.parametrize("change,message", BAD_SUITES)
def test_bad_suite_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, change, message):
    out = tmp_path / "res"
    assert run(["--suite", str(write_suite(tmp_path, _suite_with(**change))), "--results-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_malformed_yaml_exits_2(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nmethods: {sd_lora: [unclosed\n")
    assert run(["--suite", str(path), "--results-dir", str(tmp_path / "res")]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert not (tmp_path / "res").exists()


def test_dry_run_and_list(tmp_path, capsys):
    assert run(["--suite", str(write_suite(tmp_path)), "--dry-run", "--results-dir", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 jobs") and "sd_lora__synthetic__s0" in out
    assert not (tmp_path / "r").exists()
    assert run(["--list"]) == 0
    listing = capsys.readouterr().out
    assert "quick" in listing and "sd_lora_kd" in listing and "split_fmnist" in listing


def test_sigkill_mid_suite_loses_no_finished_record(tmp_path):
    suite = json.loads(json.dumps(TINY_SUITE))
    suite["seeds"] = [0, 1, 2, 3]
    suite["methods"] = {"sd_lora": {"rank": 2, "epochs": 3}}
    path = write_suite(tmp_path, suite)
    out = tmp_path / "res"
    cmd = [sys.executable, str(REPO / "run_suite.py"), "--suite", str(path), "--results-dir", str(out), "--no-report"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "records").glob("*.json")):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p.name: p.read_text() for p in (out / "records").glob("*.json")}
    assert 1 <= len(finished) < 4, "the kill should land mid-suite"
    for text in finished.values():
        assert json.loads(text)["status"] == "done"  # every record on disk is whole
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert f"{len(finished)} already done" in done.stdout
    records = sorted((out / "records").glob("*.json"))
    assert [p.stem for p in records] == [f"sd_lora__synthetic__s{s}" for s in range(4)]
    for p in records:  # the finished records were not rewritten
        if p.name in finished:
            assert p.read_text() == finished[p.name]


def test_summary_metrics_by_hand():
    acc = [[90.0], [60.0, 80.0], [50.0, 70.0, 100.0]]
    m = summary(acc, pooled=[90.0, 70.0, 73.3], til_pooled=[90.0, 85.0, 88.0])
    assert m["acc"] == 73.3
    assert m["aaa"] == pytest.approx((90 + 70 + 73.3) / 3)
    assert m["task_mean_acc"] == pytest.approx((50 + 70 + 100) / 3)
    assert m["forgetting"] == pytest.approx(((90 - 50) + (80 - 70)) / 2)
    assert m["til_acc"] == 88.0


def test_eta_divides_the_work_left_by_the_jobs_that_run_at_once():
    """Two workers, jobs of about 40 s: when the first ends (41 left, 40 s elapsed) about 41 x 40 / 2 = 820 s
    remain; elapsed per finished job x jobs left said 1,640 s. Without a slot count (SLURM) that is the estimate."""
    from runner.plan import eta_s

    assert eta_s(40.0, 1, [40.0], 41, slots=2) == 820.0
    assert eta_s(40.0, 1, [40.0], 41, slots=None) == 1640.0
    assert eta_s(40.0, 1, [], 41, slots=2) == 1640.0  # no duration yet (a failed or skipped first job)
    assert eta_s(400.0, 20, [30.0, 50.0], 0, slots=2) == 0.0
