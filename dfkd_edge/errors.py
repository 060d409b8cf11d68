"""Errors the CLI turns into exit codes (see docs/ARCHITECTURE.md: 2 bad input, 1 internal)."""


class UserError(Exception):
    """Bad input or usage: the CLI prints one line and exits with code 2.

    The message says what is wrong and what to do about it.
    """


class PipelineError(Exception):
    """A stage failed its own check (e.g. ONNX parity): one clear line, exit code 1."""


def require_positive(options) -> None:
    """``options``: (flag, value) pairs; a value that is not > 0 (NaN included) is a UserError naming the flag."""
    for flag, v in options:
        if not v > 0:
            raise UserError(f"{flag} must be positive, got {v}")


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]
