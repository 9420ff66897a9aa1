"""An ONNX file from a PyTorch module: the one exporter of model.onnx and hf/onnx/model.onnx."""

import io

import torch


def traced_onnx(module: torch.nn.Module, args: tuple, input_names: list[str], output_names: list[str],
                sizes: dict[str, dict[int, str]], opset: int, metadata: dict[str, str] | None = None) -> bytes:
    """The bytes of `module` traced on `args` as ONNX, checked; `sizes` names the dynamic
    dimensions of each input and output (ONNX Runtime and transformers.js read the names), and
    `metadata` goes into the file's metadata_props.

    The TorchScript-based exporter (dynamo=False) takes a small part of the dynamo exporter's
    time, which decomposes the graph again first, for the same logits (docs/exports.md has the
    figures and the two graphs' speed)."""
    import onnx

    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(module, args, buffer, dynamo=False, input_names=input_names, output_names=output_names,
                          dynamic_axes=sizes, opset_version=opset)
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in (metadata or {}).items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto, full_check=True)
    return proto.SerializeToString()
