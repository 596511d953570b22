"""The embedded Triton tier: launcher for the nvidia-pytriton tritonserver and our Python-based onnxruntime backend."""
