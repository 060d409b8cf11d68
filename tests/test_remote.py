"""Profiling on a device over SSH, against a real OpenSSH server on 127.0.0.1 (tests/sshd.py).

CI installs Debian's openssh-server and sets DFKD_REQUIRE_SSHD=1, so there these tests cannot
skip; elsewhere they skip with a message when sshd is missing."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from dfkd_edge.errors import UserError
from dfkd_edge.export.onnx_export import export_onnx
from dfkd_edge.models import create_student
from dfkd_edge.models.students import WIDTHS
from dfkd_edge.student_choice import DeviceTimer, choose_for_latency
from dfkd_edge.targets.profile import load_profile
from dfkd_edge.targets.remote import Remote, profile_remote, trtexec_command
from tests.sshd import LoopbackSSHD, sshd_available


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if not sshd_available():
        if os.environ.get("DFKD_REQUIRE_SSHD"):
            pytest.fail("DFKD_REQUIRE_SSHD is set but sshd is missing: apt-get install openssh-server")
        pytest.skip("OpenSSH server not installed (apt-get install openssh-server)")
    server = LoopbackSSHD(tmp_path_factory.mktemp("sshd") / "ssh")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    m, _ = create_student("conv2d", (1, 8, 8), 10, 90_000, 8)
    path = tmp_path_factory.mktemp("m") / "student_fp32.onnx"
    export_onnx(m, (1, 8, 8), path)
    return path


def _remote_tmp_dirs() -> set[str]:
    return {p for p in os.listdir("/tmp") if p.startswith("dfkd-edge.")}


def test_profile_over_ssh_returns_measured_remote_rows(sshd, model):
    before = _remote_tmp_dirs()
    rows = profile_remote(model, load_profile("raspberry-pi-5"), Remote("dfkd-device", str(sshd.config)), "fp32",
                          batches=(1, 4), budget_s=0.1, python=sys.executable)
    assert [r["batch"] for r in rows] == [1, 4]
    for r in rows:
        assert r["kind"] == "measured-remote" and r["device"] == "raspberry-pi-5 (dfkd-device)"
        assert r["backend"] == "onnxruntime-cpu" and r["runs"] >= 30
        assert 0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] and r["throughput_qps"] > 0
    assert not _remote_tmp_dirs() - before  # the remote working directory is removed (others may come and go)


def test_profile_cli_over_ssh_updates_a_report(sshd, model, cli, tmp_path, digits_teacher):
    from tests.conftest import FAST, read_json

    out = tmp_path / "run"
    code, _, err = cli("convert", digits_teacher, *FAST, "--target", "raspberry-pi-5", "--out", out)
    assert code == 0, err
    rec = {r["target"]: r for r in read_json(out / "report.json")["recommended"]}
    assert rec["raspberry-pi-5"]["kind"] == "estimated"
    code, stdout, err = cli("profile", out / "student_int8.onnx", "--target", "raspberry-pi-5", "--remote",
                            "dfkd-device", "--ssh-config", sshd.config, "--remote-python", sys.executable,
                            "--budget", "0.1", "--report", out)
    assert code == 0, err
    assert '"measured-remote"' in stdout
    r = read_json(out / "report.json")
    remote = [x for x in r["latency"] if x["kind"] == "measured-remote"]
    assert {x["precision"] for x in remote} == {"int8"} and {x["batch"] for x in remote} == {1, 32}
    rec = {x["target"]: x for x in r["recommended"]}
    assert rec["raspberry-pi-5"]["kind"] == "measured-remote" and rec["raspberry-pi-5"]["precision"] == "int8"
    assert "measured on the device over SSH" in (out / "report.md").read_text()
    assert "measured on the device over SSH" in (out / "report.html").read_text()


def test_host_keys_are_checked(sshd, model, tmp_path):
    cfg = tmp_path / "ssh_config"
    wrong = tmp_path / "known_hosts"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    pub = (tmp_path / "other.pub").read_text().split()
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {pub[0]} {pub[1]}\n")  # a different host key
    cfg.write_text(sshd.config.read_text().replace(str(sshd.root / "known_hosts"), str(wrong)))
    with pytest.raises(UserError, match="ssh dfkd-device failed"):
        profile_remote(model, load_profile("raspberry-pi-5"), Remote("dfkd-device", str(cfg)), "fp32",
                       batches=(1,), budget_s=0.1, python=sys.executable)


@pytest.mark.parametrize("dest", ["-oProxyCommand=touch /tmp/pwned", "host;touch /tmp/pwned", "a b", "$(id)",
                                  "user@host`id`", ""])
def test_hostile_destinations_are_refused(dest):
    with pytest.raises(UserError, match="not a valid"):
        Remote(dest)


def test_remote_words_are_quoted_not_interpreted(sshd, tmp_path):
    marker = tmp_path / "pwned"
    r = Remote("dfkd-device", str(sshd.config))
    p = r.run(["echo", f"; touch {marker}", f"$(touch {marker})"])
    assert p.stdout.strip() == f"; touch {marker} $(touch {marker})"
    assert not marker.exists()


def test_a_device_without_onnxruntime_is_a_clear_error(sshd, model, tmp_path):
    bare = tmp_path / "bare-python"  # a Python without site-packages: no numpy, no onnxruntime
    bare.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    bare.chmod(0o755)
    with pytest.raises(UserError, match="lacks (numpy|onnxruntime)"):
        profile_remote(model, load_profile("raspberry-pi-5"), Remote("dfkd-device", str(sshd.config)), "fp32",
                       batches=(1,), budget_s=0.1, python=str(bare))


def test_trtexec_command_for_engines_and_onnx():
    c = trtexec_command("/tmp/d/s.engine", "input", (1, 8, 8), 32)
    assert c[1] == "--loadEngine=/tmp/d/s.engine" and "--shapes=input:32x1x8x8" in c and "--int8" not in c
    c = trtexec_command("/tmp/d/s.onnx", "input", (30,), 1, precision="int8")
    assert "--onnx=/tmp/d/s.onnx" in c and "--shapes=input:1x30" in c and "--int8" in c
    np.testing.assert_equal(len(trtexec_command("/tmp/d/s.onnx", "input", (30,), 1, precision="fp32")), 5)


def test_student_candidates_measured_on_the_device(sshd, tmp_path):
    """--latency-remote: each candidate's int8 model timed on the device; the choice records the measurement
    and how far the estimate was from it; each measurement is kept as it is made, so an interrupted choice does
    not time its candidates again."""
    pi = load_profile("raspberry-pi-5")
    memo, made_from = tmp_path / "measured.json", {"limit": 1e6}
    timer = DeviceTimer(pi, Remote("dfkd-device", str(sshd.config)), sys.executable, "trtexec", budget_s=0.1,
                        memo=memo, made_from=made_from)
    choice = choose_for_latency((1, 8, 8), 10, pi, 1e6, families=("conv2d",), timer=timer)
    assert choice["how"] == "measured-remote" and choice["measured_on"]["runner"] == "onnxruntime"
    cs = choice["candidates"]
    assert len(cs) == len(WIDTHS) and all(c["fits"] and c["p50_ms"] > 0 for c in cs)
    assert [c["p50_ms"] for c in cs] != [c["estimated_ms"] for c in cs]  # timed there, not the estimate
    assert choice["chosen"]["width"] == max(WIDTHS) and choice["estimate_vs_measured"]["rows"] == len(cs)
    limit = min(c["p50_ms"] for c in cs) / 10
    with pytest.raises(UserError, match="no student fits .* measures"):
        choose_for_latency((1, 8, 8), 10, pi, limit, families=("conv2d",), timer=timer)
    unreachable = Remote("nowhere.invalid", str(sshd.config))  # never contacted: every candidate is in the memo
    again = choose_for_latency((1, 8, 8), 10, pi, 1e6, families=("conv2d",),
                               timer=DeviceTimer(pi, unreachable, sys.executable, "trtexec", memo=memo,
                                                 made_from=made_from))
    assert again["candidates"] == cs
    with pytest.raises(UserError, match="nowhere.invalid"):  # another choice's memo is not reused
        choose_for_latency((1, 8, 8), 10, pi, 1e6, families=("conv2d",),
                           timer=DeviceTimer(pi, unreachable, sys.executable, "trtexec", memo=memo,
                                             made_from={"limit": 2.0}))


def test_a_tensorrt_target_is_timed_with_trtexec_on_the_device(sshd):
    """No trtexec on this 'device': the run stops with the device's own error, naming trtexec."""
    nano = load_profile("jetson-orin-nano")
    timer = DeviceTimer(nano, Remote("dfkd-device", str(sshd.config)), sys.executable, "trtexec-not-here")
    with pytest.raises(UserError, match="'trtexec-not-here' was not found: .*pass --trtexec"):
        choose_for_latency((1, 8, 8), 10, nano, 1.0, families=("conv2d",), timer=timer)


def test_convert_measures_the_candidates_and_a_resumed_run_keeps_the_choice(sshd, cli, tmp_path, digits_teacher):
    from tests.conftest import FAST, read_json

    out = tmp_path / "run"
    args = ("convert", digits_teacher, "--out", out, "--target", "raspberry-pi-5", "--student", "conv2d",
            "--max-latency-ms", "1000", "--latency-remote", "dfkd-device", "--ssh-config", sshd.config,
            "--remote-python", sys.executable, *FAST)
    code, _, err = cli(*args)
    assert code == 0, err
    c = read_json(out / "report.json")["student"]["chosen_for"]
    assert c["how"] == "measured-remote" and c["measured_on"]["remote"] == "dfkd-device"
    assert "measured on the device over SSH (dfkd-device" in (out / "report.md").read_text()
    kept = read_json(out / "student_choice.json")
    assert kept["choice"] == c
    code, _, err = cli(*args, "--resume")
    assert code == 0, err
    assert "reusing student_choice.json" in err and read_json(out / "report.json")["student"]["chosen_for"] == c
