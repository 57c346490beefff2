"""Deployment: ONNX export with a parity check, and ONNX Runtime sessions set up for fair timing.

onnx and onnxruntime are imported inside the functions that use them, so importing this package is cheap.

Example:
    from tinyfm.deploy import OrtModel, check_parity, export_onnx
    path = export_onnx(model, torch.zeros(1, 1, 28, 28), "runs/a/model.onnx")
    print(check_parity(model, path, x_test[:1000]), OrtModel(path)(x_test[:8].numpy()).shape)
"""

from tinyfm.deploy.onnx import check_parity, export_onnx, exporter_used
from tinyfm.deploy.runtime import OrtModel, create_session

__all__ = ["OrtModel", "check_parity", "create_session", "export_onnx", "exporter_used"]
