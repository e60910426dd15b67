"""The LightningModule: KXNet, its loss (paper Eq. 12), optimiser and schedule, and what the
dashboards show (PSNR/SSIM-Y of the final and of every stage, kernel error, pictures, and
histograms of every parameter the training degradation drew)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from importlib.resources import files
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor, nn
from torchmetrics import MetricCollection

from kxnet.data.synthesis import drawn_parameters
from kxnet.instantiation import build
from kxnet.loss import StageLoss
from kxnet.metrics import psnr
from kxnet.nn.kxnet import KXNet, KXNetOutput
from kxnet.pictures import comparison_strip, kernel_strip
from kxnet.train import rng
from kxnet.train.loggers import log_histograms, log_picture
from kxnet.train.metrics import PSNR, SSIM, KernelL1, KernelPSNR

__all__ = ["KXNetModule", "SplitMetrics", "set_label"]

log = logging.getLogger(__name__)

NET_TARGET = "kxnet.nn.KXNet"


def paper_optim() -> dict[str, Any]:
    """The paper's optimiser and schedule, ``{"optimizer": …, "scheduler": …}``, as the
    ``optim=paper`` preset states them (``kxnet/conf/train/optim/paper.yaml``)."""
    preset = files("kxnet.conf.train").joinpath("optim", "paper.yaml").read_text()
    return OmegaConf.to_container(OmegaConf.create(preset))


def _plain(value: Any) -> Any:
    """OmegaConf nodes → plain dicts and lists (checkpoints then hold plain data)."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return dict(value) if isinstance(value, Mapping) else value


def _rounded(values: Any) -> Any:
    """Nested lists of floats rounded to 4 decimals, for log lines."""
    if isinstance(values, list):
        return [_rounded(v) for v in values]
    return round(float(values), 4)


def set_label(dataset: str, noise: float) -> str:
    """A benchmark set with its noise level where there is noise: Set5, Set5_noise15."""
    return str(dataset) + (f"_noise{float(noise):g}" if noise else "")


def _images(crop: int, prefix: str, postfix: str | None = None, stage: bool = False):
    names = ("stage_psnr", "stage_ssim") if stage else ("psnr", "ssim")
    metrics = {names[0]: PSNR(crop), names[1]: SSIM(crop)}
    return MetricCollection(metrics, prefix=prefix, postfix=postfix, compute_groups=False)


class SplitMetrics(nn.Module):
    """The metrics of a validation or test split, as torchmetrics collections.

    ``final``: PSNR/SSIM-Y of the final image over every set (``val/psnr``, ``val/ssim``);
    ``sets``: the same per benchmark set and noise level (``val/Set5/psnr``, …); with
    ``stages``, per stage t = 0 … T: PSNR/SSIM-Y of X⁽ᵗ⁾ (``val/stage_psnr/TT``) and the error of
    K⁽ᵗ⁾ (``val/kernel_l1/TT``, ``val/kernel_psnr/TT``).
    """

    def __init__(self, split: str, crop: int, labels: Sequence[str], stages: int | None) -> None:
        super().__init__()
        self.final = _images(crop, f"{split}/")
        self.sets = nn.ModuleList(_images(crop, f"{split}/{label}/") for label in labels)
        self.index = {label: i for i, label in enumerate(labels)}
        count = 0 if stages is None else stages + 1
        self.images = nn.ModuleList(
            _images(crop, f"{split}/", f"/{t:02d}", stage=True) for t in range(count)
        )
        self.kernels = nn.ModuleList(
            MetricCollection(
                {"kernel_l1": KernelL1(), "kernel_psnr": KernelPSNR()},
                prefix=f"{split}/",
                postfix=f"/{t:02d}",
                compute_groups=False,
            )
            for t in range(count)
        )

    def update(self, output: KXNetOutput, batch: Mapping[str, Any]) -> None:
        """The network's output on a benchmark batch ``{"hr", "kernel", "dataset", "noise", …}``."""
        hr, kernel = batch["hr"], batch["kernel"]
        self.final.update(output.sr, hr)
        for i in range(hr.shape[0]):
            noise = float(batch["noise"][i]) if "noise" in batch else 0.0
            index = self.index.get(set_label(batch.get("dataset", [""] * len(hr))[i], noise))
            if index is not None:
                self.sets[index].update(output.sr[i : i + 1], hr[i : i + 1])
        for t, (images, kernels) in enumerate(zip(self.images, self.kernels, strict=True)):
            images.update(output.images[t], hr)
            kernels.update(output.kernels[t], kernel)

    def collections(self) -> Iterator[MetricCollection]:
        yield self.final
        yield from self.sets
        yield from self.images
        yield from self.kernels


class KXNetModule(pl.LightningModule):
    """Trains ``self.net`` (a :class:`~kxnet.KXNet`) on batches ``{"lr", "hr", "kernel", …}``.

    Args:
        net: the network's arguments (:class:`~kxnet.KXNet`: scale, stages, kernel_size,
            setting and the speed options), with an optional ``_target_`` (default
            ``kxnet.nn.KXNet``).
        loss: weights of :class:`~kxnet.loss.StageLoss` (α_t, β_t; paper: 0.1 before the last
            stage, 1 at the last).
        optimizer: a ``_target_`` mapping called with ``params=``; None: the paper's, with its
            schedule (:func:`paper_optim`).
        scheduler: a ``_target_`` mapping called with ``optimizer=`` and stepped every training
            step, ``"paper"`` (the paper's, :func:`paper_optim`) or None (none).
        images_to_log: validation/test samples per epoch whose pictures go to the loggers.
        stage_metrics: also measure every stage (PSNR/SSIM-Y, kernel L1 and PSNR).

    The metrics (:class:`SplitMetrics`) are built in :meth:`setup` from the data module's
    ``val_sets`` and ``test_sets`` (each set at each of its noise levels).
    """

    def __init__(
        self,
        net: Mapping[str, Any],
        loss: Mapping[str, float] | None = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | str | None = "paper",
        images_to_log: int = 2,
        stage_metrics: bool = True,
    ) -> None:
        super().__init__()
        config = {"_target_": NET_TARGET, **_plain(net)}
        self.net: KXNet = instantiate(config)
        self.save_hyperparameters(
            {
                "net": config | {"kernel_size": self.net.kernel_size},
                "loss": _plain(loss) or {},
                "optimizer": _plain(optimizer) or paper_optim()["optimizer"],
                "scheduler": paper_optim()["scheduler"]
                if scheduler == "paper"
                else _plain(scheduler),
                "images_to_log": images_to_log,
                "stage_metrics": stage_metrics,
            },
            logger=False,
        )
        self._check_optim()
        self.loss = StageLoss(**self.hparams.loss)
        self.metrics = nn.ModuleDict()
        self._resumed_rng_states: dict[str, Any] | None = None
        self._drop_update = False

    def setup(self, stage: str) -> None:
        """Build the metrics of the splits that ``stage`` runs, from the data module's sets."""
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        splits = {"fit": ("val",), "validate": ("val",), "test": ("test",)}.get(stage, ())
        for split in splits:
            sets = getattr(datamodule, f"{split}_sets", None) or []
            labels = [set_label(ds.name, noise) for ds in sets for noise in ds.noise]
            stages = self.net.num_stages if self.hparams.stage_metrics else None
            self.metrics[split] = SplitMetrics(split, self.net.scale, labels, stages)

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
        self._log_degradation(batch)
        return {"loss": loss.total, "kernel": output.kernel.detach(), "skipped": False}

    def _log_degradation(self, batch: dict[str, Tensor]) -> None:
        """Every ``trainer.log_every_n_steps`` steps, on rank 0: histograms of what the batch's
        degradation drew (kernel σx, σy, θ, noise σ, JPEG quality, …; samples where an operator
        was not applied are left out) as ``train/degradation/<name>``."""
        every = self.trainer.log_every_n_steps
        if self.global_rank or not self.loggers or not every or self.global_step % every:
            return
        log_histograms(self.loggers, "train/degradation", drawn_parameters(batch), self.global_step)

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

    def _evaluate(self, split: str, batch: dict[str, Any], batch_idx: int, loader: int) -> None:
        """Benchmark batches: ``{"lr", "hr", "kernel", "dataset", "noise", …}``."""
        output = self.net(batch["lr"])
        self.metrics[split].update(output, batch)
        if (
            loader == 0
            and batch_idx < self.hparams.images_to_log
            and self.global_rank == 0
            and self.loggers
            and not self.trainer.sanity_checking
        ):
            self._log_pictures(split, batch, output, batch_idx)

    def _log_metrics(self, split: str) -> None:
        """Log every collection of the split that some rank updated (Lightning reduces the
        metrics across ranks, then resets them)."""
        strategy = self.trainer.strategy
        for collection in self.metrics[split].collections():
            updated = any(metric.update_count for metric in collection.values())
            if strategy.reduce_boolean_decision(updated, all=False):
                self.log_dict(collection)

    def _log_pictures(
        self, split: str, batch: dict[str, Any], output: KXNetOutput, index: int
    ) -> None:
        caption = "/".join(
            str(batch[key][0]) for key in ("dataset", "image", "kernel_index") if key in batch
        )
        hr, bicubic, sr = batch["hr"][:1], output.images[0][:1], output.sr[:1]
        strip = comparison_strip(
            batch["lr"][0],
            bicubic[0],
            sr[0],
            hr[0],
            bicubic_psnr=float(psnr(bicubic, hr, self.net.scale)[0]),
            sr_psnr=float(psnr(sr, hr, self.net.scale)[0]),
        )
        kernels_row = kernel_strip([k[0] for k in output.kernels], batch["kernel"][0])
        step = self.global_step
        log_picture(self.loggers, f"{split}/pictures/{index}", strip, step, caption)
        log_picture(self.loggers, f"{split}/kernels/{index}", kernels_row, step, caption)

    def _check_optim(self) -> None:
        """The optimiser and its schedule build on a stand-in parameter: a value they refuse
        (``optim.optimizer.lr=-1``) is one line when the module is built, not a traceback once
        the Trainer starts."""
        stand_in = [nn.Parameter(torch.zeros(1))]
        optimizer = build(
            self.hparams.optimizer, "optim.optimizer", params=stand_in, _convert_="all"
        )
        if self.hparams.scheduler:
            build(self.hparams.scheduler, "optim.scheduler", optimizer=optimizer, _convert_="all")

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
