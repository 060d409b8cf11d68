"""``build_<target>.sh``: the trtexec command lines that build (and time) TensorRT engines on the device.

Engines are not portable across GPU models or TensorRT versions, so they are built where they
run. The script reads the TensorRT version from trtexec's banner
(``&&&& RUNNING TensorRT.trtexec [TensorRT v100300]``) and takes the code path for that major:

- TensorRT 8.x-10.x: int8 from the Q/DQ model (``--int8 --fp16``: explicit quantization, float
  layers may fall back to fp16); int8 from the fp32 model plus the calibration cache (implicit
  quantization, deprecated since 10.1); fp16 from the fp32 model (``--fp16``).
- TensorRT 11.x: the precision flags and calibration caches are gone; networks are strongly
  typed, so int8 comes from the Q/DQ model and fp16 from the fp16 ONNX (``--stronglyTyped``).

Every build shares a timing cache (``--timingCacheFile``) so rebuilding is fast, and each engine
is then timed by trtexec at batch 1 and 32, its output kept in ``<engine>.b<N>.log`` (parsed by
``dfkd-edge profile --trtexec-log``). Written against the TensorRT 10 and 11 documentation; not run on a
real TensorRT here (docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from dfkd_edge.io import atomic_write_text
from dfkd_edge.targets.profile import TargetProfile


def _shape(name: str, batch: int, input_shape: tuple[int, ...]) -> str:
    return f"{name}:" + "x".join(str(d) for d in (batch, *input_shape))


def build_script(profile: TargetProfile, files: dict[str, str], input_name: str,
                 input_shape: tuple[int, ...], batches: tuple[int, ...] = (1, 32)) -> str:
    """The bash script for ``profile``; ``files`` maps qdq / fp32 / fp16 / cache to file names
    next to the script, and ``model`` (default ``student``) to the engines' prefix."""
    lo, hi = profile.tensorrt
    q = shlex.quote
    shapes = (f"--minShapes={_shape(input_name, min(batches), input_shape)} "
              f"--optShapes={_shape(input_name, min(batches), input_shape)} "
              f"--maxShapes={_shape(input_name, max(batches), input_shape)}")
    eng = f"engines/{profile.name}"
    common = f'{shapes} --timingCacheFile={q(eng + "/timing.cache")}'

    def build(engine: str, onnx: str, flags: str) -> str:
        return f'build {q(engine)} --onnx={q(onnx)} {flags} {common}'

    m = files.get("model", "student")  # the engines' prefix: the model the run ships
    legacy = [build(f"{eng}/{m}_int8_qdq.engine", files["qdq"], "--int8 --fp16"),
              build(f"{eng}/{m}_int8_calib.engine", files["fp32"], f'--int8 --fp16 --calib={q(files["cache"])}'),
              build(f"{eng}/{m}_fp16.engine", files["fp32"], "--fp16")]
    typed = [build(f"{eng}/{m}_int8_qdq.engine", files["qdq"], "--stronglyTyped"),
             build(f"{eng}/{m}_fp16.engine", files["fp16"], "--stronglyTyped")]
    dla = ""
    if profile.dla_cores:
        dla = ("\n# This board has DLA cores. To try one (int8/fp16 layers only, the rest on the GPU), add:\n"
               "#   --useDLACore=0 --allowGPUFallback\n")
    return f"""#!/usr/bin/env bash
# Build TensorRT engines for {profile.name} ({profile.description}).
# Run this ON the device: engines are not portable across GPU models or TensorRT versions.
# Written by dfkd-edge for TensorRT majors {lo}..{hi}; override the binary with TRTEXEC=/path/to/trtexec.
# Not run on a real TensorRT by dfkd-edge's own tests (no GPU there); its command lines are.
set -euo pipefail
cd "$(dirname "$0")"
TRTEXEC="${{TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}}"
if ! command -v "$TRTEXEC" >/dev/null 2>&1; then
  echo "error: trtexec not found; install TensorRT (JetPack) or set TRTEXEC=/path/to/trtexec" >&2
  exit 2
fi
TAG="$("$TRTEXEC" --help 2>&1 | sed -n 's/.*\\[TensorRT v\\([0-9]*\\)\\].*/\\1/p' | head -n 1)"
if [ -z "$TAG" ]; then
  echo "error: could not read the TensorRT version from '$TRTEXEC --help'" >&2
  exit 2
fi
if [ "$TAG" -ge 10000 ]; then MAJOR=$((TAG / 10000)); else MAJOR=$((TAG / 1000)); fi
if [ "$MAJOR" -lt {lo} ] || [ "$MAJOR" -gt {hi} ]; then
  echo "warning: TensorRT $MAJOR is outside this profile's range {lo}..{hi}; trying anyway" >&2
fi
mkdir -p {q(eng)}

build() {{  # build ENGINE trtexec-args...: build one engine, then time it at each batch size
  local engine="$1"; shift
  echo "== building $engine" >&2
  "$TRTEXEC" "$@" --saveEngine="$engine" --skipInference > "$engine.build.log" 2>&1 \\
    || {{ echo "error: build of $engine failed; see $engine.build.log" >&2; return 1; }}
  for b in {' '.join(str(b) for b in batches)}; do
    "$TRTEXEC" --loadEngine="$engine" --shapes={q(input_name)}:"$b"x{'x'.join(str(d) for d in input_shape)} \\
      --warmUp=500 --duration=10 > "$engine.b$b.log" 2>&1 \\
      || {{ echo "error: timing of $engine failed; see $engine.b$b.log" >&2; return 1; }}
  done
}}

if [ "$MAJOR" -ge 11 ]; then
  # TensorRT 11: strongly typed networks only (no --int8/--fp16, no calibration cache)
  {chr(10).join('  ' + c if i else c for i, c in enumerate(typed))}
else
  # TensorRT {lo}..10: explicit int8 (Q/DQ), implicit int8 (calibration cache), fp16
  {chr(10).join('  ' + c if i else c for i, c in enumerate(legacy))}
fi
{dla}
echo "engines and trtexec logs in {eng}/; read them with: dfkd-edge profile --trtexec-log {eng}/<engine>.b1.log --target {profile.name}" >&2
"""


def write_build_script(path: Path, profile: TargetProfile, files: dict[str, str], input_name: str,
                       input_shape: tuple[int, ...]) -> Path:
    atomic_write_text(path, build_script(profile, files, input_name, input_shape))
    path.chmod(0o755)
    return path
