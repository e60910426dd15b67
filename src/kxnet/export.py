"""``kxnet-export`` (``python -m kxnet.export``): a trained network as an ONNX model, for CPU
inference with onnxruntime.

    kxnet-export CHECKPOINT OUTPUT.onnx

The model takes ``lr`` (1×3×h×w, float32 in [0, 1], any h and w from the smallest input the
kernel's padding allows) and returns ``sr`` (1×3×h·s×w·s, the final stage) and ``kernel``
(1×p×p, the final kernel estimate). The network's configuration
(scale, stages, kernel size, setting) is stored in the model's metadata, where
:class:`kxnet.onnx_network.OnnxKXNet` reads it.

Exit status: 0 on success; 2 for a checkpoint that cannot be read or an output that cannot be
written (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import onnx
import torch
from torch import Tensor, nn

from kxnet.atomic import atomic_path
from kxnet.checkpoint import load_model
from kxnet.errors import USER_ERRORS, StartupError, report_error
from kxnet.nn.kxnet import KXNet
from kxnet.onnx_network import ONNX_FORMAT
from kxnet.predict.tiling import min_input_size

__all__ = ["export_onnx", "main"]

# The largest LR side the exported model accepts.
_MAX_SIDE = 16384


class _Final(nn.Module):
    """KXNet with only the final estimates as outputs: lr → (sr, kernel)."""

    def __init__(self, net: KXNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, lr: Tensor) -> tuple[Tensor, Tensor]:
        out = self.net(lr, keep_stages=False)
        return out.sr, out.kernel


def export_onnx(model: KXNet, path: str | Path) -> Path:
    """Write ``model`` to ``path`` as ONNX (dynamic height and width; outputs ``sr`` and
    ``kernel``), atomically; returns ``path``."""
    twin = KXNet(
        scale=model.scale,
        stages=model.num_stages,
        kernel_size=model.kernel_size,
        setting=model.setting,
    )
    twin.load_state_dict(model.state_dict())
    smallest = min_input_size(model.scale, model.kernel_size, model.num_stages)
    side = max(smallest, 2 * model.kernel_size)
    example = torch.rand(1, 3, side, side + 1)
    dims = {
        2: torch.export.Dim("height", min=smallest, max=_MAX_SIDE),
        3: torch.export.Dim("width", min=smallest, max=_MAX_SIDE),
    }
    program = torch.onnx.export(
        _Final(twin).eval(),
        (example,),
        dynamo=True,
        dynamic_shapes={"lr": dims},
        input_names=["lr"],
        output_names=["sr", "kernel"],
        verbose=False,
    )
    proto = program.model_proto
    config = {
        "format": ONNX_FORMAT,
        "scale": model.scale,
        "stages": model.num_stages,
        "kernel_size": model.kernel_size,
        "setting": model.setting,
    }
    onnx.helper.set_model_props(proto, {key: str(value) for key, value in config.items()})
    path = Path(path)
    with atomic_path(path) as tmp:
        onnx.save(proto, tmp)
    return path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kxnet-export",
        description="Write a trained KXNet as an ONNX model (lr → sr, kernel) for onnxruntime.",
    )
    parser.add_argument("checkpoint", type=Path, help="a kxnet-weights file or a Lightning .ckpt")
    parser.add_argument("output", type=Path, help="the ONNX file to write (.onnx)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.output.suffix != ".onnx":
            raise StartupError(f"output: {args.output} must end in .onnx")
        if args.output.exists():
            raise StartupError(f"output: {args.output} exists; name a new file")
        model = load_model(args.checkpoint.expanduser().absolute())
    except USER_ERRORS as err:
        return report_error(err)
    out = export_onnx(model, args.output)
    print(f"wrote {out} (x{model.scale}, {model.num_stages} stages, p={model.kernel_size})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
