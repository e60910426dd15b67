"""An ONNX model written by ``kxnet-export``, run by onnxruntime on the CPU, called as the network
is: ``net(lr)`` → :class:`~kxnet.nn.kxnet.KXNetOutput` holding the final image and kernel."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import onnx
import onnxruntime
import torch
from google.protobuf.message import DecodeError
from torch import Tensor

from kxnet.errors import CheckpointError, PredictError
from kxnet.nn.kxnet import KXNetOutput

__all__ = ["ONNX_FORMAT", "OnnxKXNet"]

# The "format" entry of the metadata of a model written by kxnet-export.
ONNX_FORMAT = "kxnet-onnx"


class OnnxKXNet:
    """The exported network of ``path`` in an onnxruntime session (CPU, ``threads`` intra-op
    threads, onnxruntime's default if None). ``scale``, ``num_stages``, ``kernel_size`` and
    ``setting`` come from the model's metadata."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(path, "no such ONNX model (write one with kxnet-export)")
        try:
            model = onnx.load(path, load_external_data=False)
            props = {p.key: p.value for p in model.metadata_props}
        except (DecodeError, OSError, ValueError) as err:
            raise CheckpointError(path, f"not an ONNX model ({err})") from err
        if props.get("format") != ONNX_FORMAT:
            raise CheckpointError(path, "is not a model written by kxnet-export (write it again)")
        self.path = path
        self.scale = int(props["scale"])
        self.num_stages = int(props["stages"])
        self.kernel_size = int(props["kernel_size"])
        self.setting = props["setting"]
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )

    def __call__(
        self,
        lr: Tensor,
        stage_kernels: Sequence[Tensor] | None = None,
        keep_stages: bool = True,
    ) -> KXNetOutput:
        """lr: B×3×h×w → the final image B×3×h·s×w·s and kernel B×p×p (``keep_stages`` has no
        effect: the model returns the final estimates only)."""
        if stage_kernels is not None:
            raise PredictError(
                "backend=onnx restores an image in one piece: raise tile.size and kernel_crop "
                "above its sides, or use backend=torch for tiles"
            )
        sr, kernel = self.session.run(None, {"lr": lr.detach().float().cpu().numpy()})
        return KXNetOutput([torch.from_numpy(sr)], [torch.from_numpy(kernel)])
