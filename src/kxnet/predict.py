"""``python -m kxnet.predict ckpt_path=… input=FILE_OR_DIR output=DIR``: SR of real LR images.

Exit status: 0 when every image was written, 1 when some could not be (they are listed at the
end; the others are written), 2 when nothing could start (one line says why; set
``HYDRA_FULL_ERROR=1`` for the traceback).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig
from rich.console import Console

from kxnet.checkpoint import CheckpointError, load_model
from kxnet.checks import report_error
from kxnet.config import CONFIG_DIR
from kxnet.nn.kxnet import KXNet
from kxnet.prediction import (
    PredictError,
    PredictOptions,
    check_output_dir,
    find_inputs,
    predict_images,
    summary,
)

__all__ = ["main", "run"]

# Command-line keys that ask for a checkpoint property, and the property.
_ASKS = {
    "scale": "scale",
    "model.stages": "stages",
    "model.kernel_size": "kernel_size",
    "setting.kernel_size": "kernel_size",
    "setting": "setting",
    "setting.name": "setting",
}


def _asked(cfg: DictConfig, overrides: Sequence[str]) -> dict:
    """The checkpoint properties set on the command line, with their configured values."""
    keys = {o.key_or_group for o in OverridesParser.create().parse_overrides(list(overrides))}
    values = {
        "scale": cfg.scale,
        "stages": cfg.model.stages,
        "kernel_size": cfg.model.kernel_size,
        "setting": cfg.setting.name,
    }
    return {prop: values[prop] for key, prop in _ASKS.items() if key in keys}


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as err:
        raise PredictError(f"device={name} is not a device: use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PredictError(f"device={name} but no CUDA device is available: use device=cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise PredictError(
            f"device={name} but there are {torch.cuda.device_count()} CUDA devices: use cuda:0"
        )
    return device


def _model(cfg: DictConfig, overrides: Sequence[str], device: torch.device) -> KXNet:
    if cfg.ckpt_path:
        path = Path(str(cfg.ckpt_path)).expanduser().absolute()
        model = load_model(path, map_location=device, **_asked(cfg, overrides))
    elif cfg.model.stages == 0:
        model = KXNet(cfg.scale, 0, kernel_size=cfg.model.kernel_size, setting=cfg.setting.name)
    else:
        raise PredictError(
            "ckpt_path is not set: pass a checkpoint (ckpt_path=…) or model.stages=0 for the "
            "bicubic baseline"
        )
    return model.to(device).eval()


def _options(cfg: DictConfig) -> PredictOptions:
    overlap = cfg.tile.overlap
    if overlap != "auto" and not isinstance(overlap, int):
        raise PredictError(f"tile.overlap={overlap} must be a number of LR pixels or auto")
    for key, value in (("tile.size", cfg.tile.size), ("kernel_crop", cfg.kernel_crop)):
        if not isinstance(value, int) or value < 1:
            raise PredictError(f"{key}={value} must be a positive number of LR pixels")
    return PredictOptions(
        tile_size=cfg.tile.size,
        overlap=None if overlap == "auto" else overlap,
        kernel_crop=cfg.kernel_crop,
        save_stages=bool(cfg.save_stages),
    )


def run(cfg: DictConfig, overrides: Sequence[str] = ()) -> int:
    """Check everything that can be checked, then restore each input; returns the exit status."""
    console = Console(stderr=True)
    try:
        device = _device(str(cfg.device))
        model = _model(cfg, overrides, device)
        options = _options(cfg)
        options.check(model)
        inputs = find_inputs(Path(str(cfg.input)).expanduser().absolute())
        output_dir = Path(str(cfg.output)).expanduser().absolute()
        check_output_dir(output_dir, inputs, options.save_stages)
    except (PredictError, CheckpointError) as err:
        return report_error(err)
    console.print(
        f"Restoring {len(inputs)} image(s) at x{model.scale} with {model.num_stages} stages "
        f"on {device}",
        markup=False,
    )
    results, failures = predict_images(model, inputs, output_dir, options, console=console)
    print(summary(results, failures, output_dir))
    return 1 if failures else 0


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    sys.exit(run(cfg, HydraConfig.get().overrides.task))


if __name__ == "__main__":
    main()
