"""Latency on a device reached over SSH, through the system's OpenSSH client (``ssh`` only: files
travel as ``cat > file`` over the same connection settings, so no sftp subsystem is needed).

The user's ``~/.ssh/config``, keys, agent and known_hosts apply as they do for ``ssh`` itself
(``--ssh-config`` passes another config with ``-F``). Host keys are checked: ``BatchMode=yes``
makes an unknown or changed host key an error instead of a prompt. Nothing the user typed reaches
a shell unquoted: the destination is validated (no leading ``-``, no spaces or shell
characters), every word of the remote command goes through ``shlex.quote``, and the remote
working directory comes from ``mktemp -d`` and is checked before use.

What runs there: ``trtexec`` for a TensorRT target (engine or ONNX), else the bundled
``remote_runner.py`` under the device's Python with ONNX Runtime. Rows are ``measured-remote``.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from dfkd_edge.backends.tensorrt.trtexec import TrtexecParseError, latency_from_trtexec, parse_trtexec
from dfkd_edge.errors import UserError
from dfkd_edge.targets.host import LatencyRow
from dfkd_edge.targets.profile import TargetProfile

log = logging.getLogger(__name__)

_DEST = re.compile(r"^(?:[A-Za-z0-9._][A-Za-z0-9._-]*@)?[A-Za-z0-9._][A-Za-z0-9._:-]*$")
_REMOTE_DIR = re.compile(r"^/[A-Za-z0-9._/-]+$")
RUNNER = Path(__file__).with_name("remote_runner.py")
REMOTE_PYTHON = "python3"  # the device's Python, for the ONNX Runtime runner
TRTEXEC = "trtexec"  # trtexec on the device (JetPack puts it in /usr/src/tensorrt/bin)


@dataclass
class Remote:
    destination: str  # [user@]host, or a Host alias from the ssh config
    ssh_config: str | None = None
    timeout_s: int = 600

    def __post_init__(self) -> None:
        if not _DEST.match(self.destination) or self.destination.startswith("-"):
            raise UserError(f"--remote {self.destination!r} is not a valid [user@]host (letters, digits, '.', '_', "
                            "'-'; use a Host alias from your ssh config for anything else)")
        if self.ssh_config is not None and not Path(self.ssh_config).is_file():
            raise UserError(f"--ssh-config {self.ssh_config} does not exist")

    def _opts(self) -> list[str]:
        opts = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=15"]
        return (["-F", self.ssh_config] if self.ssh_config else []) + opts

    def run(self, words: list[str], check: bool = True) -> subprocess.CompletedProcess:
        """Run a command on the device; each word is shell-quoted for the remote shell."""
        cmd = ["ssh", *self._opts(), "--", self.destination, " ".join(shlex.quote(w) for w in words)]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout_s)
        except subprocess.TimeoutExpired:
            raise UserError(f"ssh {self.destination}: no answer within {self.timeout_s} s") from None
        if check and p.returncode != 0:
            msg = (p.stderr.strip().splitlines() or [f"exit {p.returncode}"])[-1]
            if p.returncode == 255:
                raise UserError(f"ssh {self.destination} failed: {msg}")
            if p.returncode == 127:  # the shell found no such command
                hint = (" (JetPack installs it as /usr/src/tensorrt/bin/trtexec: pass --trtexec with that path)"
                        if "trtexec" in words[0].rsplit("/", 1)[-1] else "")
                raise UserError(f"on {self.destination}, {words[0]!r} was not found: {msg}{hint}")
            raise UserError(f"on {self.destination}, `{' '.join(words[:2])} ...` failed (exit {p.returncode}): {msg}")
        return p

    def put(self, local: Path, remote_dir: str) -> str:
        """Copy a file into ``remote_dir`` over the same ssh connection settings (``cat > path``: no
        scp/sftp subsystem needed on the device); returns its remote path."""
        target = f"{remote_dir}/{local.name}"
        if not _REMOTE_DIR.match(target):
            raise UserError(f"file name {local.name!r} has characters dfkd-edge will not send over ssh")
        cmd = ["ssh", *self._opts(), "--", self.destination, f"cat > {shlex.quote(target)}"]
        with open(local, "rb") as f:
            p = subprocess.run(cmd, stdin=f, capture_output=True, timeout=self.timeout_s)
        if p.returncode != 0:
            raise UserError(f"copying {local.name} to {self.destination} failed: "
                            f"{p.stderr.decode(errors='replace').strip() or p.returncode}")
        return target

    def mkdtemp(self) -> str:
        d = self.run(["mktemp", "-d", "/tmp/dfkd-edge.XXXXXX"]).stdout.strip()
        if not _REMOTE_DIR.match(d):
            raise UserError(f"unexpected remote temporary directory {d!r}")
        return d


def trtexec_command(remote_model: str, input_name: str, input_shape: tuple[int, ...], batch: int,
                    trtexec: str = TRTEXEC, precision: str = "int8", duration_s: int = 3) -> list[str]:
    shapes = f"--shapes={input_name}:" + "x".join(str(d) for d in (batch, *input_shape))
    if remote_model.endswith((".engine", ".plan")):
        return [trtexec, f"--loadEngine={remote_model}", shapes, f"--duration={duration_s}", "--warmUp=200"]
    flags = {"int8": ["--int8", "--fp16"], "fp16": ["--fp16"], "fp32": []}[precision]
    return [trtexec, f"--onnx={remote_model}", shapes, *flags, f"--duration={duration_s}", "--warmUp=200"]


def profile_remote(model: Path, profile: TargetProfile, remote: Remote, precision: str,
                   input_name: str = "input", input_shape: tuple[int, ...] | None = None,
                   batches: tuple[int, ...] = (1, 32), budget_s: float = 1.0, python: str = REMOTE_PYTHON,
                   runner: str = "auto", trtexec: str = TRTEXEC) -> list[dict]:
    """Copy ``model`` to the device, time it there at each batch, return ``measured-remote`` rows."""
    use_trtexec = runner == "trtexec" or (runner == "auto" and (profile.engine == "tensorrt"
                                                                 or model.suffix in (".engine", ".plan")))
    if use_trtexec and input_shape is None:
        raise UserError("trtexec needs the input shape: pass --input-shape")
    if not use_trtexec and model.suffix != ".onnx":
        raise UserError(f"{model.name}: the ONNX Runtime runner takes .onnx models; engines run with trtexec")
    rdir = remote.mkdtemp()
    rows = []
    try:
        rmodel = remote.put(model, rdir)
        if not use_trtexec:
            rrunner = remote.put(RUNNER, rdir)
        for b in batches:
            if use_trtexec:
                p = remote.run(trtexec_command(rmodel, input_name, input_shape, b, trtexec, precision))
                try:
                    lat = latency_from_trtexec(parse_trtexec(p.stdout + p.stderr), b)
                except TrtexecParseError as e:
                    raise UserError(f"could not read trtexec's output on {remote.destination}: {e}") from None
                lat.pop("note")
                backend, runs = "tensorrt", 0
            else:
                words = [python, rrunner, rmodel, "--batch", str(b), "--budget", str(budget_s)]
                if profile.threads:
                    words += ["--threads", str(profile.threads)]
                for ep in profile.onnxruntime_ep:
                    words += ["--ep", ep]
                p = remote.run(words, check=False)
                try:
                    res = json.loads(p.stdout.strip().splitlines()[-1])
                except (ValueError, IndexError):
                    raise UserError(f"the runner on {remote.destination} failed: "
                                    f"{(p.stderr.strip().splitlines() or ['no output'])[-1]}") from None
                if "error" in res:
                    raise UserError(f"on {remote.destination}: {res['error']}")
                lat = {k: round(res[k], 4) for k in ("p50_ms", "p90_ms", "p99_ms")}
                lat["throughput_qps"] = round(b / (res["mean_ms"] / 1e3), 1)
                backend = "onnxruntime-" + res["provider"].replace("ExecutionProvider", "").lower()
                runs = res["runs"]
            rows.append(LatencyRow(model="student", precision=precision, backend=backend,
                                   device=f"{profile.name} ({remote.destination})", kind="measured-remote",
                                   batch=b, runs=runs, **lat).to_dict())
    finally:
        remote.run(["rm", "-rf", "--", rdir], check=False)
    return rows
