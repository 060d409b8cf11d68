"""TensorRT, in one folder: the engine's loader and runner through TensorRT's Python API (engine.py), the
explicitly quantized (Q/DQ) ONNX and calibration cache it takes (qdq.py), the build script that makes engines
on the device with trtexec (script.py), and trtexec's performance summary read into latency rows
(trtexec.py). TensorRT itself is imported only inside the functions that need it."""
