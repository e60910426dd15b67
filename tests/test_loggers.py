import math

import torch
import wandb
from lightning.pytorch.loggers import CSVLogger, WandbLogger

from kxnet.train.loggers import log_histograms


class _Run:
    """Stands for a W&B run: records what is logged."""

    def __init__(self):
        self.logged = []

    def log(self, data):
        self.logged.append(data)


def test_histograms_go_to_wandb_without_the_samples_an_operator_skipped(tmp_path):
    wandb_logger = WandbLogger(save_dir=tmp_path, offline=True)
    wandb_logger._experiment = _Run()
    values = {
        "kernel_sigma_x": torch.tensor([0.5, 1.0, 1.5]),
        "jpeg_quality": torch.tensor([40.0, math.nan, 90.0]),
        "motion_angle": torch.full((3,), math.nan),
    }
    csv = CSVLogger(tmp_path)
    log_histograms([csv, wandb_logger], "train/degradation", values, step=7)
    (logged,) = wandb_logger._experiment.logged
    assert logged["trainer/global_step"] == 7
    assert set(logged) == {
        "trainer/global_step",
        "train/degradation/kernel_sigma_x",
        "train/degradation/jpeg_quality",
    }
    histogram = logged["train/degradation/jpeg_quality"]
    assert isinstance(histogram, wandb.Histogram) and sum(histogram.histogram) == 2
    assert not list(tmp_path.glob("lightning_logs/*/metrics.csv"))
