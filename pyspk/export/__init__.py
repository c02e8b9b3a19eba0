"""Models that leave pyspk: ONNX / TorchScript export and the parity checks against runtimes."""
