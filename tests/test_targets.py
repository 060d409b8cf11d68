"""Device profiles, the TensorRT artifacts (Q/DQ rules, calibration cache, build script), the
trtexec parser, the roofline estimate and TensorRT feature detection."""

import json
import os
import stat
import struct
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from dfkd_edge.backends.tensorrt.engine import build_engine, tensorrt_status
from dfkd_edge.backends.tensorrt.qdq import (all_float_violations, calibration_cache_text, parse_calibration_cache,
                                             quantize_for_tensorrt, tensor_amax, tensorrt_qdq_violations, trt_version_tag)
from dfkd_edge.backends.tensorrt.script import write_build_script
from dfkd_edge.backends.tensorrt.trtexec import TrtexecParseError, latency_from_trtexec, parse_trtexec
from dfkd_edge.errors import UserError
from dfkd_edge.export.onnx_export import export_onnx
from dfkd_edge.export.quantize import CalibConfig, quantize_one
from dfkd_edge.models import create_student
from dfkd_edge.targets.estimate import estimate_ms, estimate_rows, layer_costs, load_fit
from dfkd_edge.targets.profile import builtin_names, list_profiles, load_profile


@pytest.fixture(scope="module")
def student_onnx(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("trt")
    m, _ = create_student("conv2d", (1, 8, 8), 10, 90_000, 8)
    export_onnx(m, (1, 8, 8), d / "f.onnx")
    x = np.random.default_rng(0).standard_normal((64, 1, 8, 8)).astype(np.float32)
    return d / "f.onnx", x


# -- profiles ---------------------------------------------------------------------------------------

def test_shipped_profiles_have_the_required_targets_and_cite_every_figure():
    assert {"jetson-orin-nano", "jetson-orin-nx", "jetson-agx-orin", "host-cpu", "raspberry-pi-5"} <= set(builtin_names())
    for p in list_profiles():
        if p.is_host:
            continue
        assert p.can_estimate, p.name
        for key in ("peak_int8_tops", "bandwidth_gbs"):
            assert key in p.sources and len(p.sources[key]) > 20, (p.name, key)
        if p.engine == "tensorrt":
            assert p.tensorrt[0] >= (8 if "xavier" in p.name else 10)  # JetPack 5 is Xavier's last: TensorRT 8.5
            assert p.tensorrt_version and "tensorrt" in p.sources
            assert "int8" in p.precisions and "fp16" in p.precisions


def test_jetson_figures_match_the_data_sheets():
    nano, agx = load_profile("jetson-orin-nano"), load_profile("jetson-agx-orin")
    assert nano.mode == "15W" and nano.peak["int8"] == pytest.approx(20e12, rel=0.03)  # 40 sparse / 20 dense TOPS
    assert nano.bandwidth_gbs == pytest.approx(68, rel=0.01)
    assert agx.bandwidth_gbs == pytest.approx(204.8, rel=0.001) and agx.tensorrt == (10, 11)
    assert agx.peak["int8"] == pytest.approx(85e12, rel=0.01)  # 170 sparse: a batch-1 row uses the dense rate
    assert load_profile("jetson-orin-nx").bandwidth_gbs == 102.4
    sup = load_profile("jetson-orin-nano:MAXN_SUPER")  # JetPack 6.2: 67 sparse TOPS, 102 GB/s
    assert sup.peak["int8"] == pytest.approx(67e12 / 2, rel=0.01) and sup.bandwidth_gbs == 102.4
    assert load_profile("jetson-orin-nano-4gb").peak["int8"] == pytest.approx(nano.peak["int8"] / 2)
    assert load_profile("jetson-agx-orin:15W").peak["int8"] == pytest.approx(85.3e12 * 408 / 1301 * 6 / 16, rel=0.01)


def test_sized_names_and_the_xavier_fleet_are_shipped():
    names = set(builtin_names())
    assert {"jetson-orin-nano-4gb", "jetson-orin-nano-8gb", "jetson-orin-nx-8gb", "jetson-orin-nx-16gb",
            "jetson-agx-orin-32gb", "jetson-agx-orin-64gb", "jetson-xavier-nx", "jetson-agx-xavier"} <= names
    alias = load_profile("jetson-orin-nano-8gb")
    assert alias.name == "jetson-orin-nano-8gb" and alias.peak == load_profile("jetson-orin-nano").peak
    for n in names - {"host-cpu", "raspberry-pi-5"}:
        p = load_profile(n)
        assert p.fit == "jetson-gpu" and p.mode in p.mode_table and p.sms, n
    with pytest.raises(UserError, match="no power mode"):
        load_profile("jetson-orin-nano:BOOST")
    with pytest.raises(UserError, match="no power modes"):
        load_profile("raspberry-pi-5:MAXN")


def test_user_profile_by_path(tmp_path, cli):
    code, toml, _ = cli("targets", "show", "raspberry-pi-5")
    assert code == 0 and "bandwidth_gbs = 17.1" in toml
    mine = tmp_path / "my-board.toml"
    mine.write_text(toml.replace('name = "raspberry-pi-5"', 'name = "my-board"').replace("17.1", "8.5"))
    p = load_profile(str(mine))
    assert p.name == "my-board" and p.bandwidth_gbs == 8.5
    code, out, _ = cli("targets", "show", str(mine), "--json")
    assert code == 0 and '"my-board"' in out


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('kind = "cpu"', 'kind = "phone"'), "'kind'"),
    (lambda t: t.replace("bandwidth_gbs = 17.1", ""), "bandwidth_gbs"),
    (lambda t: t.replace("compute_efficiency = 0.3", "compute_efficiency = 3"), "at most 1"),
    (lambda t: t.replace('name = "raspberry-pi-5"', 'name = "Bad Name"'), "'name'"),
    (lambda t: t + "\n[[[", "not valid TOML"),
])
def test_bad_profiles_are_refused_with_the_field_named(tmp_path, cli, edit, message):
    _, toml, _ = cli("targets", "show", "raspberry-pi-5")
    bad = tmp_path / "bad.toml"
    bad.write_text(edit(toml))
    code, _, err = cli("targets", "show", str(bad))
    assert code == 2 and message in err and "Traceback" not in err


def test_targets_list_and_unknown_target(cli):
    code, out, _ = cli("targets", "list")
    assert code == 0 and all(n in out for n in builtin_names()) and "TensorRT 10.x" in out
    code, _, err = cli("targets", "show", "jetson-orin-nanoo")
    assert code == 2 and "unknown --target" in err and "jetson-orin-nano" in err
    assert "MAXN_SUPER" in out and "15W*" in out  # every profile's power modes, the default marked
    code, out, _ = cli("targets", "show", "jetson-orin-nano:MAXN_SUPER", "--json")
    assert code == 0 and json.loads(out)["mode"] == "MAXN_SUPER"
    code, out, _ = cli("targets", "show", "jetson-orin-nano:MAXN_SUPER")
    assert code == 0 and '[power.mode."MAXN_SUPER"]' in out


# -- TensorRT Q/DQ model ----------------------------------------------------------------------------

def test_tensorrt_qdq_model_follows_the_placement_rules(student_onnx, tmp_path):
    fp32, x = student_onnx
    q = quantize_for_tensorrt(fp32, tmp_path / "q.onnx", x)
    assert tensorrt_qdq_violations(q) == []
    g = onnx.load(str(q)).graph
    assert sum(n.op_type == "QuantizeLinear" for n in g.node) >= 5
    # the fp32 model and ORT's default asymmetric U8S8 model are not what TensorRT takes
    assert any("not explicitly quantized" in v for v in tensorrt_qdq_violations(fp32))
    u8 = tmp_path / "u8.onnx"
    quantize_one(fp32, u8, x, "qdq-u8s8", CalibConfig())
    bad = tensorrt_qdq_violations(u8)
    assert any("zero point" in v for v in bad)


def test_every_layer_left_in_float_by_the_guardrail_is_an_outcome_not_an_error(student_onnx, tmp_path):
    """The guardrail leaving every layer in float (how often depends on the numerics, the thread count among
    them) gives a model without Q/DQ nodes: TensorRT then gets fp16, the run goes on."""
    fp32, x = student_onnx
    every = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    q = quantize_for_tensorrt(fp32, tmp_path / "q.onnx", x, exclude=every)
    found = tensorrt_qdq_violations(q)
    assert found and all_float_violations(found, guard_triggered=True) == ([], True)
    assert all_float_violations(found, guard_triggered=False) == (found, False)  # not the guardrail's: an error
    u8 = tmp_path / "u8.onnx"
    quantize_one(fp32, u8, x, "qdq-u8s8", CalibConfig())
    bad = tensorrt_qdq_violations(u8)
    assert all_float_violations(bad, guard_triggered=True) == (bad, False)  # a real placement error stays one


def test_layers_left_in_float_are_allowed_half_quantized_layers_are_not(student_onnx, tmp_path):
    fp32, x = student_onnx
    conv = next(n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv")
    q = quantize_for_tensorrt(fp32, tmp_path / "q.onnx", x, exclude=[conv])
    assert tensorrt_qdq_violations(q) == []  # the guardrail's float layer is legal
    m = onnx.load(str(q))
    gemm = next(n for n in m.graph.node if n.op_type == "Gemm")
    dq_x = next(n for n in m.graph.node if n.output[0] == gemm.input[0])
    gemm.input[0] = next(n for n in m.graph.node if n.output[0] == dq_x.input[0]).input[0]  # bypass data Q/DQ
    onnx.save(m, str(tmp_path / "half.onnx"))
    assert any("data input" in v for v in tensorrt_qdq_violations(tmp_path / "half.onnx"))


def test_qdq_checker_catches_per_tensor_weights_and_quantized_bias(student_onnx, tmp_path):
    import onnxruntime.quantization as oq

    from dfkd_edge.export.quantize import _Reader, input_name

    fp32, x = student_onnx
    out = tmp_path / "pt.onnx"
    oq.quantize_static(str(fp32), str(out), _Reader(input_name(fp32), x), quant_format=oq.QuantFormat.QDQ,
                       activation_type=oq.QuantType.QInt8, weight_type=oq.QuantType.QInt8, per_channel=False,
                       extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
    v = tensorrt_qdq_violations(out)
    assert any("per channel" in s for s in v) and any("bias is quantized" in s for s in v)


# -- calibration cache ------------------------------------------------------------------------------

def test_calibration_cache_is_in_tensorrt_text_format(student_onnx):
    fp32, x = student_onnx
    assert trt_version_tag("10.3.0") == 100300 and trt_version_tag("8.6.1") == 8601
    amax = tensor_amax(fp32, x)
    text = calibration_cache_text(amax, "10.3.0")
    lines = text.splitlines()
    assert lines[0] == "TRT-100300-EntropyCalibration2"
    tag, scales = parse_calibration_cache(text)
    assert tag == 100300
    g = onnx.load(str(fp32)).graph
    assert {o for n in g.node for o in n.output} | {"input"} == set(scales)
    assert scales["input"] == pytest.approx(float(np.abs(x).max()) / 127, rel=1e-6)
    for ln in lines[1:]:  # name: 8 hex digits, big-endian float bits
        name, hexv = ln.rsplit(": ", 1)
        assert len(hexv) == 8 and struct.unpack(">f", bytes.fromhex(hexv))[0] > 0


# -- build script -----------------------------------------------------------------------------------

def _recording_trtexec(tmp_path: Path, tag: int) -> Path:
    """A stand-in that only records its arguments and prints trtexec's banner: the test checks the
    script's command lines per TensorRT version, not any TensorRT result (none is produced)."""
    f = tmp_path / "trtexec"
    f.write_text(f'#!/bin/sh\necho "$@" >> "{tmp_path}/calls"\n'
                 f'echo "&&&& RUNNING TensorRT.trtexec [TensorRT v{tag}] # trtexec $*"\n')
    f.chmod(f.stat().st_mode | stat.S_IEXEC)
    return f


@pytest.mark.parametrize("tag, expect, absent", [
    (100300, ["--int8 --fp16", "--calib=student_fp32.trt-10.3.0.calib.cache"], ["--stronglyTyped"]),
    (110400, ["--stronglyTyped", "--onnx=student_fp16.onnx"], ["--int8", "--fp16", "--calib"]),
])
def test_build_script_takes_the_path_of_the_installed_tensorrt(tmp_path, tag, expect, absent):
    prof = load_profile("jetson-agx-orin")
    files = {"qdq": "student_trt_qdq.onnx", "fp32": "student_fp32.onnx", "fp16": "student_fp16.onnx",
             "cache": "student_fp32.trt-10.3.0.calib.cache"}
    script = write_build_script(tmp_path / "build_jetson-agx-orin.sh", prof, files, "input", (1, 8, 8))
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert os.access(script, os.X_OK)
    env = {**os.environ, "TRTEXEC": str(_recording_trtexec(tmp_path, tag))}
    p = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    builds = [c for c in calls if "--saveEngine" in c]
    assert all("--timingCacheFile=engines/jetson-agx-orin/timing.cache" in c for c in builds)
    assert all("--minShapes=input:1x1x8x8" in c and "--maxShapes=input:32x1x8x8" in c for c in builds)
    assert any("--onnx=student_trt_qdq.onnx" in c for c in builds)
    joined = "\n".join(builds)
    assert all(e in joined for e in expect) and not any(a in joined for a in absent)
    timings = [c for c in calls if "--loadEngine" in c]
    assert len(timings) == 2 * len(builds) and any("--shapes=input:32x1x8x8" in c for c in timings)


def test_build_script_outside_the_profiles_range_warns(tmp_path):
    prof = load_profile("jetson-orin-nano")
    files = {"qdq": "q.onnx", "fp32": "f.onnx", "fp16": "h.onnx", "cache": "c.cache"}
    script = write_build_script(tmp_path / "b.sh", prof, files, "input", (30,))
    env = {**os.environ, "TRTEXEC": str(_recording_trtexec(tmp_path, 8601))}
    p = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert "outside this profile's range 10..10" in p.stderr
    env["TRTEXEC"] = str(tmp_path / "missing")
    p = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert p.returncode == 2 and "trtexec not found" in p.stderr


# -- trtexec output ---------------------------------------------------------------------------------

TRT10 = """&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec --loadEngine=s.engine --shapes=input:32x1x8x8
[11/20/2026-10:00:01] [I] === Performance summary ===
[11/20/2026-10:00:01] [I] Throughput: 2345.67 qps
[11/20/2026-10:00:01] [I] Latency: min = 0.3901 ms, max = 1.2001 ms, mean = 0.4203 ms, median = 0.4150 ms, percentile(90%) = 0.4400 ms, percentile(95%) = 0.4600 ms, percentile(99%) = 0.6100 ms
[11/20/2026-10:00:01] [I] Enqueue Time: min = 0.0100 ms, max = 0.0900 ms, mean = 0.0200 ms, median = 0.0190 ms, percentile(90%) = 0.0250 ms, percentile(95%) = 0.0300 ms, percentile(99%) = 0.0500 ms
[11/20/2026-10:00:01] [I] H2D Latency: min = 0.0100 ms, max = 0.0300 ms, mean = 0.0150 ms, median = 0.0140 ms, percentile(90%) = 0.0200 ms, percentile(95%) = 0.0220 ms, percentile(99%) = 0.0280 ms
[11/20/2026-10:00:01] [I] GPU Compute Time: min = 0.3500 ms, max = 1.1000 ms, mean = 0.3800 ms, median = 0.3750 ms, percentile(90%) = 0.4000 ms, percentile(95%) = 0.4200 ms, percentile(99%) = 0.5500 ms
[11/20/2026-10:00:01] [I] D2H Latency: min = 0.0050 ms, max = 0.0200 ms, mean = 0.0080 ms, median = 0.0070 ms, percentile(90%) = 0.0100 ms, percentile(95%) = 0.0120 ms, percentile(99%) = 0.0150 ms
[11/20/2026-10:00:01] [I] Total Host Walltime: 3.00 s
&&&& PASSED TensorRT.trtexec [TensorRT v100300]
"""

TRT8_OLD = """&&&& RUNNING TensorRT.trtexec [TensorRT v8201] # trtexec --onnx=m.onnx --int8
[I] === Performance summary ===
[I] Throughput: 812.5 qps
[I] Latency: min = 1.1 ms, max = 2.5 ms, mean = 1.2 ms, median = 1.19 ms, percentile(99%) = 1.9 ms
[I] Enqueue Time: min = 0.2 ms, max = 0.5 ms, mean = 0.3 ms, median = 0.29 ms, percentile(99%) = 0.45 ms
[I] H2D Latency: min = 0.01 ms, max = 0.05 ms, mean = 0.02 ms, median = 0.02 ms, percentile(99%) = 0.04 ms
[I] GPU Compute Time: min = 1.0 ms, max = 2.3 ms, mean = 1.1 ms, median = 1.09 ms, percentile(99%) = 1.7 ms
[I] D2H Latency: min = 0.01 ms, max = 0.03 ms, mean = 0.015 ms, median = 0.015 ms, percentile(99%) = 0.02 ms
"""


def test_trtexec_summary_with_every_percentile():
    p = parse_trtexec(TRT10)
    assert p["version"] == 100300 and p["throughput_qps"] == 2345.67 and p["shapes"] == "input:32x1x8x8"
    assert p["latency"] == {"min": 0.3901, "max": 1.2001, "mean": 0.4203, "median": 0.415, "p90": 0.44,
                            "p95": 0.46, "p99": 0.61}
    assert p["gpu_compute"]["median"] == 0.375 and p["h2d_latency"]["p99"] == 0.028
    assert p["d2h_latency"]["median"] == 0.007 and p["enqueue"]["p90"] == 0.025
    row = latency_from_trtexec(p, 32)
    assert (row["p50_ms"], row["p90_ms"], row["p99_ms"]) == (0.415, 0.44, 0.61)
    assert row["throughput_qps"] == pytest.approx(2345.67 * 32, rel=1e-3) and row["note"] is None


def test_trtexec_summary_with_only_the_99th_percentile():
    p = parse_trtexec(TRT8_OLD)
    assert p["version"] == 8201 and p["latency"]["p99"] == 1.9 and "p90" not in p["latency"]
    assert p["gpu_compute"]["median"] == 1.09
    row = latency_from_trtexec(p, 1)
    assert row["p50_ms"] == 1.19 and row["p90_ms"] == 1.9 and "percentile(90%)" in row["note"]


def test_trtexec_output_without_a_summary_is_an_error():
    with pytest.raises(TrtexecParseError, match="Performance summary"):
        parse_trtexec("&&&& FAILED TensorRT.trtexec [TensorRT v100300]\n[E] Error[4]: ...")
    with pytest.raises(TrtexecParseError, match="Throughput"):
        parse_trtexec("[I] === Performance summary ===\n[I] Latency: median = 1 ms\n")


def test_trtexec_logs_through_the_cli(tmp_path, cli):
    log = tmp_path / "student_int8_qdq.engine.b32.log"
    log.write_text(TRT10)
    code, out, err = cli("profile", "--trtexec-log", log, "--target", "jetson-orin-nano")
    assert code == 0, err
    assert '"kind": "measured-remote"' in out and '"batch": 32' in out and '"backend": "tensorrt"' in out


# -- roofline estimate ------------------------------------------------------------------------------

def test_roofline_counts_flops_and_bytes_of_each_layer(student_onnx):
    fp32, _ = student_onnx
    g = onnx.load(str(fp32)).graph
    costs = layer_costs(fp32, 1, "fp32")
    conv0 = next(c for c in costs if c.op == "Conv")
    w = next(i for i in g.initializer if i.name == next(n for n in g.node if n.op_type == "Conv").input[1])
    cout, cin, kh, kw = w.dims
    assert conv0.flops == 2 * cout * 8 * 8 * cin * kh * kw  # padding 1, stride 1: 8x8 output
    gemm = next(c for c in costs if c.op == "Gemm")
    wg = next(i for i in g.initializer if i.name == next(n for n in g.node if n.op_type == "Gemm").input[1])
    assert gemm.flops == 2 * wg.dims[0] * wg.dims[1]
    b1, b32 = layer_costs(fp32, 1, "int8"), layer_costs(fp32, 32, "int8")
    weighted = lambda cs: sum(c.flops for c in cs if c.op in ("Conv", "Gemm"))  # noqa: E731
    assert weighted(b32) == 32 * weighted(b1)
    assert sum(c.bytes for c in b1) < sum(c.bytes for c in costs)  # int8 moves fewer bytes than fp32


def test_estimated_rows_are_labelled_and_scale_with_the_device(student_onnx):
    fp32, _ = student_onnx
    nano, agx = load_profile("jetson-orin-nano"), load_profile("jetson-agx-orin")
    rows, assumptions = estimate_rows(fp32, nano)
    assert {r["kind"] for r in rows} == {"estimated"} and all(r["p90_ms"] is None for r in rows)
    assert {r["precision"] for r in rows} == {"int8", "fp16", "fp32"} and {r["batch"] for r in rows} == {1, 32}
    fit = load_fit("jetson-gpu")
    assert assumptions["tensor_efficiency"] == fit["params"]["tensor_efficiency"] and assumptions["sources"]
    held = fit["held_out"]  # every row says how wrong the estimate has been measured to be
    assert all(f"{held['median_pct']:.0f}%" in r["error"] and str(held["rows"]) in r["error"] for r in rows)
    big = layer_costs(fp32, 4096, "fp32")
    assert estimate_ms(big, agx, "fp32")["ms"] < estimate_ms(big, nano, "fp32")["ms"]
    assert estimate_ms(big, nano, "int8")["ms"] < estimate_ms(big, nano, "fp32")["ms"]
    one = estimate_ms(layer_costs(fp32, 1, "int8"), nano, "int8")
    assert one["ms"] >= fit["params"]["fixed_us"] / 1e3  # a tiny model is overhead-bound
    pi_rows, pi = estimate_rows(fp32, load_profile("raspberry-pi-5"))  # not fitted: it says so
    assert "roofline" in pi["method"] and "not measured" in pi_rows[0]["error"]


def test_depthwise_convolutions_and_residual_adds_are_told_apart(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1, groups=8), torch.nn.Conv2d(8, 16, 1))
    f = export_onnx(net.eval(), (8, 6, 6), tmp_path / "dw.onnx")
    kinds = [(c.op, c.kind, c.work) for c in layer_costs(f, 2, "fp32") if c.op == "Conv"]
    # work: 64x64 output blocks of the implicit GEMM, rows = batch x positions (2 x 36), columns = channels
    assert kinds == [("Conv", "depthwise", 2), ("Conv", "dense", 2)]
    wide = [c.work for c in layer_costs(f, 64, "fp32") if c.op == "Conv"]
    assert wide == [36, 36]  # 2,304 rows: 36 blocks


def test_profile_estimates_a_device_it_cannot_reach_and_writes_the_rows(student_onnx, tmp_path, cli):
    fp32, _ = student_onnx
    code, out, err = cli("profile", fp32, "--target", "jetson-agx-orin", "--batch", "1", "--json", tmp_path / "r.json")
    assert code == 0, err
    rows = json.loads((tmp_path / "r.json").read_text())
    assert rows == json.loads(out) and {r["kind"] for r in rows} == {"estimated"} and {r["batch"] for r in rows} == {1}
    assert {"model", "precision", "batch", "p50_ms", "kind", "error"} <= set(rows[0])
    code, out, err = cli("profile", fp32, "--target", "jetson-orin-nano:MAXN_SUPER", "--precision", "int8")
    assert code == 0 and {r["precision"] for r in json.loads(out)} == {"int8"}
    h = onnx.helper
    q = h.make_model(h.make_graph(
        [h.make_node("QuantizeLinear", ["x", "s"], ["y"])], "q",
        [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [h.make_tensor_value_info("y", onnx.TensorProto.INT8, [1, 4])],
        [h.make_tensor("s", onnx.TensorProto.FLOAT, [], [0.1])]))
    onnx.save(q, str(tmp_path / "q.onnx"))
    code, _, err = cli("profile", tmp_path / "q.onnx", "--target", "jetson-agx-orin")
    assert code != 0 and "already quantized" in err


# -- TensorRT API -----------------------------------------------------------------------------------

def test_tensorrt_is_feature_detected(student_onnx, tmp_path):
    st = tensorrt_status()
    assert set(st) == {"available", "version", "major", "gpu", "reason"}
    if st["available"]:
        pytest.skip("TensorRT and a GPU are present: the feature-detection refusal does not apply")
    assert st["reason"]
    with pytest.raises(UserError, match="TensorRT cannot run here"):
        build_engine(student_onnx[0], tmp_path / "s.engine", "fp16", (1, 8, 8))
