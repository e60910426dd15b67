"""The LightningModule: loss of Eq. 12, optimiser and schedules, hyper-parameters, bare weights,
per-stage metrics, generator states; a tiny model overfits a batch."""

from __future__ import annotations

import random
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from torch.utils.data import DataLoader

from kxnet import KXNet, KXNetOutput, kernels, metrics, physics
from kxnet.checkpoint import save_weights
from kxnet.loss import StageLoss
from kxnet.train import rng
from kxnet.train.module import KXNetModule
from trainhelp import compose_train

TINY = {"scale": 2, "stages": 2, "kernel_size": 11, "setting": "aniso"}


def test_loss_weights_stages_as_eq_12():
    hr, kernel = torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 3)
    # stage t has image error t and kernel error 10·t (stage 0 is not in the loss)
    out = KXNetOutput(
        images=[hr + t for t in range(4)], kernels=[kernel + 10 * t for t in range(4)]
    )
    value = StageLoss(0.1, 1.0, 0.2, 2.0)(out, hr, kernel)
    expected = 0.1 * (10 + 20) + 1.0 * 30 + 0.2 * (1 + 2) + 2.0 * 3
    assert value.total.item() == pytest.approx(expected)
    assert [v.item() for v in value.image] == [1, 2, 3]
    assert [v.item() for v in value.kernel] == [10, 20, 30]


def test_loss_refuses_a_network_without_stages():
    out = KXNetOutput(images=[torch.zeros(1, 3, 4, 4)], kernels=[torch.zeros(1, 3, 3)])
    with pytest.raises(ValueError, match="model.net.stages >= 1"):
        StageLoss()(out, torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 3))


def test_hyperparameters_and_exported_weights(tmp_path):
    module = KXNetModule(net={**TINY, "kernel_size": None})
    assert module.hparams.net == {"_target_": "kxnet.nn.KXNet", **TINY}
    weights = torch.load(save_weights(module.net, tmp_path / "weights.pt"), weights_only=True)
    assert weights["format"] == "kxnet-weights"
    assert weights["config"] == TINY
    net = KXNet(**weights["config"])
    net.load_state_dict(weights["state_dict"])
    lr = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(lr).sr, module.net.eval()(lr).sr)
    assert all(key.startswith("net.") for key in module.state_dict())


def test_paper_optimiser_halves_the_lr_every_2e5_steps():
    module = KXNetModule(net=TINY)
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.defaults["betas"] == (0.9, 0.99) and optimizer.defaults["lr"] == 2e-4
    assert config["lr_scheduler"]["interval"] == "step"
    scheduler.last_epoch = 200_000 - 1
    scheduler.step()
    assert scheduler.get_last_lr()[0] == pytest.approx(1e-4)


@pytest.mark.parametrize("optim", ["cosine", "onecycle"])
def test_short_budget_schedules_end_at_max_steps(tmp_path, optim):
    cfg = compose_train(tmp_path, f"optim={optim}", "model.net.stages=1", "trainer.max_steps=50")
    module = instantiate(cfg.model, _recursive_=False)
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    peak = max(optimizer.param_groups[0]["lr"], cfg.optim.optimizer.lr)
    lrs = []
    for _ in range(50):
        optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    assert lrs[-1] < 0.01 * peak
    assert optimizer.defaults["betas"] == (0.9, 0.99)


def test_stage_metrics_measure_every_stage():
    module = KXNetModule(net=TINY).eval()
    module.setup("validate")
    group = module.metrics["val"]
    assert len(group.images) == len(group.kernels) == 3
    hr = torch.rand(2, 3, 16, 16)
    kernel = torch.softmax(torch.rand(2, 121), 1).view(2, 11, 11)
    with torch.no_grad():
        out = module(torch.rand(2, 3, 8, 8))
    group.update(out, {"hr": hr, "kernel": kernel})
    results = {k: v for c in group.collections() for k, v in c.compute().items()}
    assert results["val/psnr"] == results["val/stage_psnr/02"]
    assert results["val/stage_psnr/00"] != results["val/stage_psnr/02"]
    assert set(results) >= {
        "val/ssim",
        "val/stage_ssim/01",
        "val/kernel_l1/00",
        "val/kernel_psnr/02",
    }


def test_set_metrics_are_built_from_the_datamodule_sets():
    sets = [
        SimpleNamespace(name="Set5", noise=(0.0, 15.0)),
        SimpleNamespace(name="B", noise=(0.0,)),
    ]
    trainer = SimpleNamespace(datamodule=SimpleNamespace(val_sets=sets, test_sets=sets[1:]))
    module = KXNetModule(net=TINY, stage_metrics=False).eval()
    module._trainer = trainer
    module.setup("fit")
    group = module.metrics["val"]
    assert list(group.index) == ["Set5", "Set5_noise15", "B"] and not group.images
    hr = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        out = module(torch.rand(2, 3, 8, 8))
    batch = {
        "hr": hr,
        "kernel": out.kernel,
        "dataset": ["Set5", "B"],
        "noise": torch.tensor([15.0, 0]),
    }
    group.update(out, batch)
    counts = [c["psnr"].update_count for c in group.sets]
    assert counts == [0, 1, 1]
    assert group.sets[1].compute()["val/Set5_noise15/psnr"] == metrics.psnr(out.sr[:1], hr[:1], 2)
    module.setup("test")
    assert list(module.metrics["test"].index) == ["B"]


def test_generator_states_round_trip():
    states = rng.get_states()
    drawn = (random.random(), np.random.rand(), torch.rand(()).item())  # noqa: NPY002
    rng.set_states(states)
    assert (random.random(), np.random.rand(), torch.rand(()).item()) == drawn  # noqa: NPY002


class _Losses(pl.Callback):
    def __init__(self) -> None:
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.values.append(outputs["loss"].item())


def test_loss_falls_on_a_tiny_overfit_run():
    g = torch.Generator().manual_seed(0)
    hr = torch.nn.functional.avg_pool2d(torch.rand(2, 3, 24, 24, generator=g), 3, 1, 1)
    kernel, _ = kernels.random_anisotropic(2, 11, (0.6, 5.0), generator=g)
    batch = {"lr": physics.blur_downsample(hr, kernel, 2), "hr": hr, "kernel": kernel}
    module = KXNetModule(
        net={**TINY, "stages": 1},
        optimizer={"_target_": "torch.optim.Adam", "lr": 3e-3},
        scheduler=None,
    )
    losses = _Losses()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=30,
        callbacks=[losses],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, train_dataloaders=DataLoader([batch] * 30, batch_size=None))
    assert len(losses.values) == 30
    assert np.mean(losses.values[-3:]) < 0.75 * np.mean(losses.values[:3])
