"""The LightningModule: KXNet, its loss (paper Eq. 12), optimiser and schedule, and what the
dashboards show (PSNR/SSIM-Y of the final and of every stage, kernel error, pictures)."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor, nn
from torchmetrics import Metric

from kxnet import kernels, rng
from kxnet.loss import StageLoss
from kxnet.metrics import PSNR, SSIM, KernelL1, KernelPSNR
from kxnet.nn.kxnet import KXNet, KXNetOutput
from kxnet.pictures import comparison_strip, kernel_strip, log_picture

__all__ = ["KXNetModule"]

log = logging.getLogger(__name__)

PAPER_OPTIMIZER = {"_target_": "torch.optim.Adam", "lr": 2e-4, "betas": [0.9, 0.99]}
PAPER_SCHEDULER = {
    "_target_": "torch.optim.lr_scheduler.StepLR",
    "step_size": 200_000,
    "gamma": 0.5,
}


def _plain(value: Any) -> Any:
    """OmegaConf nodes → plain dicts and lists (checkpoints then hold plain data)."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return dict(value) if isinstance(value, Mapping) else value


class _FinalMetrics(nn.Module):
    """PSNR/SSIM-Y of the final stage on one benchmark set (at one noise level)."""

    def __init__(self, crop: int) -> None:
        super().__init__()
        self.psnr, self.ssim = PSNR(crop), SSIM(crop)

    def update(self, sr: Tensor, hr: Tensor) -> None:
        self.psnr.update(sr, hr)
        self.ssim.update(sr, hr)

    def named_results(self) -> dict[str, Metric]:
        return {"psnr": self.psnr, "ssim": self.ssim}


class _StageMetrics(_FinalMetrics):
    """Over all benchmark sets of a split: PSNR/SSIM-Y of the final stage, and of every stage
    0 … T with the kernel error (L1, PSNR) when ``per_stage``."""

    def __init__(self, stages: int, crop: int, per_stage: bool) -> None:
        super().__init__(crop)
        count = stages + 1 if per_stage else 0
        self.stage_psnr = nn.ModuleList(PSNR(crop) for _ in range(count))
        self.stage_ssim = nn.ModuleList(SSIM(crop) for _ in range(count))
        self.kernel_l1 = nn.ModuleList(KernelL1() for _ in range(count))
        self.kernel_psnr = nn.ModuleList(KernelPSNR() for _ in range(count))

    def update_stages(self, output: KXNetOutput, hr: Tensor, kernel: Tensor) -> None:
        self.update(output.sr, hr)
        for t in range(len(self.stage_psnr)):
            self.stage_psnr[t].update(output.images[t], hr)
            self.stage_ssim[t].update(output.images[t], hr)
            self.kernel_l1[t].update(output.kernels[t], kernel)
            self.kernel_psnr[t].update(output.kernels[t], kernel)

    def named_results(self) -> dict[str, Metric]:
        named = super().named_results()
        for t in range(len(self.stage_psnr)):
            named[f"stage_psnr/{t:02d}"] = self.stage_psnr[t]
            named[f"stage_ssim/{t:02d}"] = self.stage_ssim[t]
            named[f"kernel_l1/{t:02d}"] = self.kernel_l1[t]
            named[f"kernel_psnr/{t:02d}"] = self.kernel_psnr[t]
        return named


def _rounded(values: Any) -> Any:
    """Nested lists of floats rounded to 4 decimals, for log lines."""
    if isinstance(values, list):
        return [_rounded(v) for v in values]
    return round(float(values), 4)


def _set_label(batch: dict[str, Any], i: int) -> str:
    """Item i's benchmark set, with the noise level where there is noise: Set5, Set5_noise15."""
    noise = float(batch["noise"][i]) if "noise" in batch else 0.0
    return str(batch["dataset"][i]) + (f"_noise{noise:g}" if noise else "")


class KXNetModule(pl.LightningModule):
    """Trains ``self.net`` (a :class:`~kxnet.KXNet`) on batches ``{"lr", "hr", "kernel", …}``.

    Args:
        model: ``{scale, stages, kernel_size, setting, checkpoint_stages}`` of the network, and
            optionally its speed options ``recompute_data_terms``, ``channels_last``, ``compile``
            (see :class:`~kxnet.KXNet`).
        loss: weights of :class:`~kxnet.loss.StageLoss` (α_t, β_t; paper: 0.1 before the last
            stage, 1 at the last).
        optimizer: a ``_target_`` mapping called with ``params=`` (paper: Adam, lr 2e-4,
            β = (0.9, 0.99)).
        scheduler: a ``_target_`` mapping called with ``optimizer=`` and stepped every training
            step, or None (paper: halve the lr every 2·10⁵ steps).
        images_to_log: validation/test samples per epoch whose pictures go to the loggers.
        stage_metrics: also measure every stage (PSNR/SSIM-Y, kernel L1 and PSNR).
    """

    def __init__(
        self,
        model: Mapping[str, Any],
        loss: Mapping[str, float] | None = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = PAPER_SCHEDULER,
        images_to_log: int = 2,
        stage_metrics: bool = True,
    ) -> None:
        super().__init__()
        model = _plain(model)
        model["kernel_size"] = model.get("kernel_size") or kernels.kernel_size(
            model["setting"], model["scale"]
        )
        model.setdefault("checkpoint_stages", False)
        self.save_hyperparameters(
            {
                "model": model,
                "loss": _plain(loss) or {},
                "optimizer": _plain(optimizer) or dict(PAPER_OPTIMIZER),
                "scheduler": _plain(scheduler),
                "images_to_log": images_to_log,
                "stage_metrics": stage_metrics,
            },
            logger=False,
        )
        self.net = KXNet(**model)
        self.loss = StageLoss(**self.hparams.loss)
        crop = model["scale"]
        self.metrics = nn.ModuleDict(
            {
                split: _StageMetrics(model["stages"], crop, stage_metrics)
                for split in ("val", "test")
            }
        )
        self.set_metrics = nn.ModuleDict()
        self._set_labels: dict[str, dict[str, str]] = {"val": {}, "test": {}}
        self._resumed_rng_states: dict[str, Any] | None = None
        self._drop_update = False

    def forward(self, lr: Tensor) -> KXNetOutput:
        return self.net(lr)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Any]:
        """Returns the loss, the batch's final kernel estimate and ``skipped=False`` (for
        callbacks that watch the step in ``on_train_batch_end``).

        When the loss or the kernel estimate is not finite on any rank
        (:meth:`_finite_everywhere`), returns ``{"loss": 0 · Σ parameters, "skipped": True}``
        instead: the backward pass (and under DDP its all-reduce) runs as usual with zero
        gradients, which :meth:`on_before_optimizer_step` then drops, so that the optimiser
        leaves the weights and its own state as they were.
        """
        output = self.net(batch["lr"])
        loss = self.loss(output, batch["hr"], batch["kernel"])
        if not self._finite_everywhere(loss.total, output.kernel, batch):
            self._drop_update = True
            params = [p for p in self.net.parameters() if p.requires_grad]
            return {"loss": torch.stack([p.sum() for p in params]).sum() * 0.0, "skipped": True}
        size = batch["lr"].shape[0]
        self.log("train/loss", loss.total, prog_bar=True, batch_size=size)
        self.log("train/loss_image", loss.image[-1], batch_size=size)
        self.log("train/loss_kernel", loss.kernel[-1], batch_size=size)
        return {"loss": loss.total, "kernel": output.kernel.detach(), "skipped": False}

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """After a skipped step: drop the gradients, so that the optimiser changes nothing
        (a parameter without a gradient is left alone, its optimiser state too; under 16-bit
        mixed precision the grad scaler has unscaled the zero gradients already)."""
        if not self._drop_update:
            return
        self._drop_update = False
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None

    def _finite_everywhere(self, loss: Tensor, kernel: Tensor, batch: dict[str, Tensor]) -> bool:
        """Whether the loss and every kernel estimate (B×p×p) are finite on every rank.

        The ranks agree (one all-reduce), so that under DDP all of them skip a step or none
        does. A rank whose own values are not finite logs the step, what was not finite and the
        batch's degradation: kernel parameters (σx, σy, θ) and noise σ of each sample.
        """
        kernel_ok = torch.isfinite(kernel.detach().flatten(1)).all(1)
        flags = torch.cat([torch.isfinite(loss.detach()).reshape(1), kernel_ok]).cpu()
        here = bool(flags.all())
        if self.trainer.strategy.reduce_boolean_decision(here, all=True):
            return True
        step = self.global_step
        if here:
            log.warning(
                "training step %d skipped: non-finite values on another rank (this rank, %d, "
                "had finite ones)",
                step,
                self.global_rank,
            )
            return False
        bad = [i for i, ok in enumerate(flags[1:].tolist()) if not ok]
        params = batch.get("kernel_params")
        noise = batch.get("noise")
        log.warning(
            "training step %d skipped (not applied): loss=%s, non-finite kernel estimate in "
            "samples %s of %d%s; the batch's kernels (sigma_x, sigma_y, theta): %s, noise "
            "sigma: %s",
            step,
            f"{float(loss.detach()):g}",
            bad,
            len(kernel_ok),
            f" (rank {self.global_rank})" if self.trainer.world_size > 1 else "",
            _rounded(params.tolist()) if params is not None else "unknown",
            _rounded(noise.tolist()) if noise is not None else "unknown",
        )
        return False

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0):
        self._evaluate("val", batch, batch_idx, dataloader_idx)

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0):
        self._evaluate("test", batch, batch_idx, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def _set_metrics(self, split: str, label: str) -> _FinalMetrics:
        key = f"{split}__{re.sub(r'[^A-Za-z0-9_]', '_', label)}"
        if key not in self.set_metrics:
            self.set_metrics[key] = _FinalMetrics(self.hparams.model["scale"]).to(self.device)
            self._set_labels[split][label] = key
        return self.set_metrics[key]

    def _evaluate(self, split: str, batch: dict[str, Any], batch_idx: int, loader: int) -> None:
        """Benchmark batches: ``{"lr", "hr", "kernel", "dataset", "noise", …}``."""
        output = self.net(batch["lr"])
        self.metrics[split].update_stages(output, batch["hr"], batch["kernel"])
        for i in range(batch["lr"].shape[0]):
            label = _set_label(batch, i)
            self._set_metrics(split, label).update(output.sr[i : i + 1], batch["hr"][i : i + 1])
        if (
            loader == 0
            and batch_idx < self.hparams.images_to_log
            and self.global_rank == 0
            and self.loggers
            and not self.trainer.sanity_checking
        ):
            self._log_pictures(split, batch, output, batch_idx)

    def _log_metrics(self, split: str) -> None:
        """Log the split's metric objects (Lightning reduces them across ranks, then resets
        them): ``{split}/psnr``, ``{split}/ssim``, per stage ``{split}/stage_psnr/TT``, …, and
        per benchmark set ``{split}/Set5/psnr``, …"""
        seen = self._set_labels[split].items()
        labels = [""] * bool(self.metrics[split].psnr.update_count) + [
            label for label, key in seen if self.set_metrics[key].psnr.update_count
        ]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, labels)
            labels = sorted({label for rank_labels in gathered for label in rank_labels})
        names = {id(m): n for n, m in self.named_modules() if isinstance(m, Metric)}
        for label in labels:
            group = self._set_metrics(split, label) if label else self.metrics[split]
            prefix = f"{split}/{label}/" if label else f"{split}/"
            for name, metric in group.named_results().items():
                self.log(prefix + name, metric, metric_attribute=names.get(id(metric)))

    def _log_pictures(
        self, split: str, batch: dict[str, Any], output: KXNetOutput, index: int
    ) -> None:
        caption = "/".join(
            str(batch[key][0]) for key in ("dataset", "image", "kernel_index") if key in batch
        )
        strip = comparison_strip(batch["lr"][0], output.images[0][0], output.sr[0], batch["hr"][0])
        kernels_row = kernel_strip([k[0] for k in output.kernels], batch["kernel"][0])
        step = self.global_step
        log_picture(self.loggers, f"{split}/pictures/{index}", strip, step, caption)
        log_picture(self.loggers, f"{split}/kernels/{index}", kernels_row, step, caption)

    def configure_optimizers(self) -> Any:
        optimizer = instantiate(
            self.hparams.optimizer, params=self.net.parameters(), _convert_="all"
        )
        if not self.hparams.scheduler:
            return optimizer
        scheduler = instantiate(self.hparams.scheduler, optimizer=optimizer, _convert_="all")
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store every rank's random-number-generator states (for an exact resume)."""
        states = rng.get_states()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, states)
            checkpoint["rng_states"] = gathered
        else:
            checkpoint["rng_states"] = [states]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep this rank's saved generator states for :meth:`on_train_start`."""
        states = checkpoint.get("rng_states")
        if self._trainer is not None and states and len(states) == self.trainer.world_size:
            self._resumed_rng_states = states[self.global_rank]

    def on_train_start(self) -> None:
        """Restore the generators of a resumed run here, after the sanity check and before the
        first training batch is drawn, where the uninterrupted run had them."""
        if self._resumed_rng_states is not None:
            rng.set_states(self._resumed_rng_states)
            self._resumed_rng_states = None
