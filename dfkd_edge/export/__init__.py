"""Builders: ONNX export with parity, int8 calibration (ONNX Runtime quantization)."""
