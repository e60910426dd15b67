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
from omegaconf import DictConfig
from rich.console import Console

from kxnet.checkpoint import CheckpointError, load_model
from kxnet.checks import StartupError, asked_properties, check_device, report_error
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


def _model(cfg: DictConfig, overrides: Sequence[str], device: torch.device) -> KXNet:
    if cfg.ckpt_path:
        path = Path(str(cfg.ckpt_path)).expanduser().absolute()
        model = load_model(path, map_location=device, **asked_properties(cfg, overrides))
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
        device = check_device(str(cfg.device), "device")
        model = _model(cfg, overrides, device)
        options = _options(cfg)
        options.check(model)
        inputs = find_inputs(Path(str(cfg.input)).expanduser().absolute())
        output_dir = Path(str(cfg.output)).expanduser().absolute()
        check_output_dir(output_dir, inputs, options.save_stages)
    except (StartupError, CheckpointError) as err:
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
