"""Stages side by side (bnconvert.schedule): results in order, a failure cancels the others and
kills their children, an interrupt too, and a conversion reports the same with one job or two."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from bnconvert import isolate, schedule
from bnconvert.errors import BNConvertError, InputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "fixtures", "contrib_fused_dense.pb")


def _sleepers(tag: str) -> list[int]:
    """pids of live processes running ``sleep <tag>``."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if argv[:2] == [b"sleep", tag.encode()] and state != "Z":
            out.append(int(pid))
    return out


def _stage_sleep(tag: str):
    # a real child stage (forkserver, own process group) whose work is a `sleep` grandchild
    return isolate.run_stage(f"sleep {tag}", "subprocess:call", {"args": ["sleep", tag]}, tf=False)


def _wait_gone(tag: str, seconds: float = 10.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while _sleepers(tag) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _sleepers(tag)


def test_results_come_back_in_call_order():
    calls = [lambda: isolate.run_stage("one", "subprocess:call", {"args": ["sleep", "0.6"]}, tf=False),
             lambda: isolate.run_stage("two", "subprocess:call", {"args": ["false"]}, tf=False),
             lambda: isolate.run_stage("three", "subprocess:call", {"args": ["true"]}, tf=False)]
    assert schedule.parallel(calls, jobs=2) == [0, 1, 0]
    assert schedule.parallel(calls, jobs=1) == [0, 1, 0]


@pytest.mark.parametrize("jobs", [1, 2])
def test_kept_errors_take_their_place(jobs):
    def bad():
        raise InputError("kept")

    out = schedule.parallel([lambda: 1, bad, lambda: 3], jobs=jobs, keep=lambda e: isinstance(e, InputError))
    assert out[0] == 1 and isinstance(out[1], InputError) and out[2] == 3


def test_a_failure_cancels_the_stage_beside_it_and_kills_its_child():
    tag = "31.4159"
    t = time.monotonic()
    with pytest.raises(BNConvertError) as e:
        schedule.parallel([lambda: (time.sleep(1.5), isolate.run_stage("failing", "subprocess:check_call",
                                                                       {"args": ["false"]}, tf=False)),
                           lambda: _stage_sleep(tag)],
                          jobs=2)
    assert "failing" in str(e.value)  # the failure itself is reported, not the cancellation
    assert time.monotonic() - t < 20  # not the sleeper's 31 s
    assert _wait_gone(tag) == []  # the cancelled stage's whole process group is gone
    assert not [th for th in threading.enumerate() if th.name.startswith("bnconvert-stage")]


def test_the_first_failure_in_call_order_is_raised_whatever_fails_first():
    """What one job at a time would say: the earlier call's error, even when a later call fails sooner."""
    def slow_fail():
        time.sleep(1.0)
        return isolate.run_stage("slow failing", "subprocess:check_call", {"args": ["false"]}, tf=False)

    def fast_fail():
        return isolate.run_stage("fast failing", "subprocess:check_call", {"args": ["false"]}, tf=False)

    for jobs in (1, 2):
        with pytest.raises(BNConvertError) as e:
            schedule.parallel([slow_fail, fast_fail], jobs=jobs)
        assert "slow failing" in str(e.value), (jobs, str(e.value))


def test_no_more_stages_start_after_a_failure():
    started = []

    def fail():
        raise InputError("first")

    def later():
        started.append(1)
        return 1

    with pytest.raises(InputError):
        schedule.parallel([fail, lambda: (time.sleep(0.5), later())[1]], jobs=1)
    assert started == []


def test_interrupt_kills_the_stages_running_side_by_side():
    """SIGINT to a library caller running two stages at once: KeyboardInterrupt, both children gone."""
    tag = "27.1828"
    code = f"""
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # a shell's background job starts with it ignored
sys.path.insert(0, {ROOT!r})
from bnconvert import isolate, schedule
def s():
    return isolate.run_stage("sleep", "subprocess:call", {{"args": ["sleep", "{tag}"]}}, tf=False)
try:
    schedule.parallel([s, s], jobs=2)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
"""
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(_sleepers(tag)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(_sleepers(tag)) == 2, "the two stages did not start"
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=30)
    assert p.returncode == 130 and "interrupted" in out
    assert _wait_gone(tag) == []


def test_jobs_choice():
    big = 10 ** 15  # no machine has memory for two stages of a petabyte graph
    assert schedule.jobs(None, big, budget_set=False) == 1
    assert schedule.jobs(None, 1000, budget_set=True) == 1  # a memory budget: one stage at a time
    assert schedule.jobs(3, big, budget_set=True) == 3  # asked for: given
    assert 1 <= schedule.jobs(None, 1000, budget_set=False) <= min(schedule.AUTO_MAX, schedule.cpus())


def test_jobs_option_is_checked(tmp_path):
    import bnconvert

    for bad in (0, -1, True, 1.5, "2"):
        with pytest.raises(InputError, match="jobs"):
            bnconvert.convert(FIXTURE, str(tmp_path), jobs=bad, verify=False)
    assert not os.listdir(tmp_path)


def test_cli_rejects_bad_jobs(cli):
    r = cli("fold", FIXTURE, "--jobs", "0")
    assert r.returncode == 2 and "--jobs" in r.stderr and "positive integer" in r.stderr


def _strip(report: dict) -> dict:
    out = dict(report)
    for k in ("timings", "memory_mib", "jobs", "files"):
        out.pop(k)
    for v in out["verification"].values():
        v.pop("seconds", None)
    return out


def test_one_job_and_two_give_the_same_report(tmp_path):
    """Same verification verdicts, errors and power check whether the stages run in turn or side by side."""
    import bnconvert

    reports = {}
    for jobs in (1, 2):
        r = bnconvert.convert(FIXTURE, str(tmp_path / f"j{jobs}"), jobs=jobs)
        assert r.jobs == jobs
        reports[jobs] = json.loads(r.to_json())
        assert set(reports[jobs]["verification"]) == {"tf:folded", "onnx:CPUExecutionProvider", "tflite"}
        assert reports[jobs]["verification_power"]["caught_1pct"] is True
        for fmt in ("onnx", "tflite"):
            assert f"export_{fmt}" in reports[jobs]["timings"]
    assert _strip(reports[1]) == _strip(reports[2])
    with open(tmp_path / "j1" / "contrib_fused_dense.onnx", "rb") as a, \
            open(tmp_path / "j2" / "contrib_fused_dense.onnx", "rb") as b:
        assert a.read() == b.read()


def test_a_converter_failure_beside_the_other_is_one_line(tmp_path, cli):
    """An explicitly requested format whose converter fails while the other runs: one line, exit 2,
    nothing left in the output folder (the other converter's child is cancelled)."""
    # opset 6 is below what tf2onnx supports: the ONNX export fails, the TFLite export runs beside it
    r = cli("fold", FIXTURE, "-o", str(tmp_path), "--to", "onnx,tflite", "--opset", "1", "--jobs", "2")
    assert r.returncode == 2, r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1, r.stderr
    assert os.listdir(tmp_path) == []
