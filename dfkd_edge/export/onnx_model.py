"""The user's own ONNX file as quantize's model: recognised, checked for what the int8 path needs, and
taken as it is (the graph the user ships is the one calibrated). Synthesis needs a differentiable
network: the same one in PyTorch, ``--source``. An ONNX file alone would need a converter back to
PyTorch; the maintained one (onnx2torch) imports torchvision, which has no build for the machines this
was developed on, so that path is not offered (README, limits)."""

from __future__ import annotations

from pathlib import Path

from dfkd_edge.errors import UserError

ZIP_MAGIC = b"PK\x03\x04"  # every PyTorch format here (TorchScript, torch.export, torch.save) is a zip


def is_onnx(path: str | Path) -> bool:
    """True for an ONNX model file (a protobuf with a graph), False for anything else, PyTorch's zips included."""
    p = Path(path)
    if not p.is_file() or p.stat().st_size == 0:
        return False
    with p.open("rb") as f:
        if f.read(4) == ZIP_MAGIC:
            return False
    import onnx

    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception:  # not a protobuf at all
        return False
    return len(model.graph.node) > 0 and len(model.graph.output) > 0


def check_onnx_model(path: str | Path, input_shape: tuple[int, ...], num_classes: int) -> None:
    """UserError unless the file is one input of ``input_shape`` (any batch) to one (batch, classes) output,
    with a batch dimension that is not fixed (calibration and latency feed 32 rows at once)."""
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:
        raise UserError(f"{path.name} is not a valid ONNX model ({str(e).splitlines()[0] if str(e) else e})") from None
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise UserError(f"{path.name} has {len(inputs)} input(s) and {len(model.graph.output)} output(s); quantize "
                        "takes a classifier with one input and one logits output")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if tuple(shape[1:]) != tuple(input_shape):
        raise UserError(f"{path.name} takes input {_fmt(shape)} but --source takes (N, {', '.join(map(str, input_shape))}); "
                        "give the ONNX export of the same network")
    if shape and shape[0] is not None:
        raise UserError(f"{path.name} has a fixed batch of {shape[0]}; export it with a dynamic batch dimension "
                        "(torch.onnx.export(..., dynamic_axes={'input': {0: 'batch'}}) or dynamic_shapes)")
    out = model.graph.output[0].type.tensor_type.shape.dim
    if len(out) != 2 or (out[1].HasField("dim_value") and out[1].dim_value != num_classes):
        raise UserError(f"{path.name}'s output is not (N, {num_classes}) logits like --source's")


def _fmt(shape: list) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"
