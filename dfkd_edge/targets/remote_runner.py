"""Times an ONNX model with ONNX Runtime and prints one JSON line. Copied to and run on the device.

Standalone on purpose: it needs only Python 3, numpy and onnxruntime on the device, nothing of
dfkd-edge. ``python3 remote_runner.py MODEL.onnx --batch 1 --budget 1.0 --threads 4 --ep CPUExecutionProvider``
"""

import argparse
import json
import platform
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--budget", type=float, default=1.0, help="seconds of timed runs")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--ep", action="append", default=None, help="execution provider, in preference order")
    a = ap.parse_args(argv)
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError as e:
        print(json.dumps({"error": f"the device's python lacks {e.name}: pip install numpy onnxruntime"}))
        return 3
    so = ort.SessionOptions()
    if a.threads:
        so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    available = ort.get_available_providers()
    providers = [p for p in (a.ep or ["CPUExecutionProvider"]) if p in available] or ["CPUExecutionProvider"]
    sess = ort.InferenceSession(a.model, so, providers=providers)
    inp = sess.get_inputs()[0]
    shape = [a.batch] + [d if isinstance(d, int) else 1 for d in inp.shape[1:]]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(10):
        sess.run(None, {inp.name: x})
    times = []
    start = time.perf_counter()
    while len(times) < 1000 and (len(times) < 30 or time.perf_counter() - start < a.budget):
        t0 = time.perf_counter()
        sess.run(None, {inp.name: x})
        times.append(time.perf_counter() - t0)
    ms = np.asarray(times) * 1000.0
    print(json.dumps({"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
                      "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()), "runs": len(times),
                      "batch": a.batch, "provider": sess.get_providers()[0], "onnxruntime": ort.__version__,
                      "machine": platform.machine(), "node": platform.node()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
