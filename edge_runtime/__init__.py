"""The edge node daemon: a small ONNX model served over the node protocol."""
