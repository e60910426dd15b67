"""The training run's callbacks on their own, in a real Lightning Trainer with a one-weight model:
the seed per rank, the perf/ figures, the learning-rate scaling of a roll-back, the roll-back's
refusals, messages and state (the NaN policy end to end is ``test_faults.py``'s)."""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import Logger

from kxnet.errors import DivergedError
from kxnet.train.callbacks import (
    NonFiniteRollback,
    RankSeed,
    ResourceMonitor,
    peak_memory_gib,
    scale_learning_rate,
)

SLEEP = 0.1


class Recorder(Logger):
    """Keeps every logged metric: ``metrics[step] = {name: value}``."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: dict[int, dict[str, float]] = {}

    @property
    def name(self) -> str:
        return "recorder"

    @property
    def version(self) -> str:
        return "0"

    def log_metrics(self, metrics, step=None) -> None:
        self.metrics.setdefault(step, {}).update(metrics)

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass


class OneWeight(pl.LightningModule):
    """loss = (w - 1)²; each step sleeps ``sleep`` seconds; the steps in ``skip`` report
    ``skipped`` and apply nothing, as KXNetModule does for a non-finite step."""

    def __init__(self, sleep: float = 0.0, skip: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.sleep, self.skip = sleep, set(skip)

    def training_step(self, batch, batch_idx):
        time.sleep(self.sleep)
        if self.global_step in self.skip:
            return {"loss": self.w.sum() * 0.0, "skipped": True}
        return {"loss": ((self.w - 1) ** 2).sum(), "skipped": False}

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.global_step in self.skip:
            self.w.grad = None

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(64, 1), batch_size=1)


def fit(module: pl.LightningModule, callbacks: list, steps: int, every: int = 2) -> Recorder:
    recorder = Recorder()
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=recorder,
        callbacks=callbacks,
        log_every_n_steps=every,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module)
    return recorder


def test_rank_seed_seeds_seed_plus_rank_for_fit_only(caplog):
    caplog.set_level(logging.INFO)
    callback = RankSeed(7)
    torch.manual_seed(123)
    callback.setup(SimpleNamespace(global_rank=3), None, "validate")
    assert torch.initial_seed() == 123
    callback.setup(SimpleNamespace(global_rank=3), None, "fit")
    assert torch.initial_seed() == 10
    assert os.environ["PL_GLOBAL_SEED"] == "10" and os.environ["PL_SEED_WORKERS"] == "1"
    assert not any("Seed set to" in r.getMessage() for r in caplog.records)


def test_resource_monitor_logs_wall_time_step_time_and_peak_memory():
    monitor = ResourceMonitor()
    recorder = fit(OneWeight(sleep=SLEEP), [monitor], steps=6, every=2)
    perf = {
        s: {k: v for k, v in m.items() if k.startswith("perf/")}
        for s, m in recorder.metrics.items()
    }
    logged = {s: m for s, m in perf.items() if m}
    assert sorted(logged) == [1, 3, 5], "Lightning's step index of global steps 2, 4, 6"
    before = 0.0
    for step, values in sorted(logged.items()):
        assert set(values) == {"perf/wall_time_s", "perf/step_time_s", "perf/peak_memory_gib"}
        # The mean of the two steps since the last log, on the clock of the wall time (a pause
        # of the machine moves both alike).
        mean = (values["perf/wall_time_s"] - before) / 2
        assert values["perf/step_time_s"] >= SLEEP
        assert values["perf/step_time_s"] == pytest.approx(mean, abs=0.01), (step, values)
        assert (step + 1) * SLEEP <= values["perf/wall_time_s"] < (step + 1) * SLEEP + 2.0
        before = values["perf/wall_time_s"]
        assert values["perf/peak_memory_gib"] == pytest.approx(
            peak_memory_gib(torch.device("cpu")), rel=0.2
        )
    assert logged[5]["perf/wall_time_s"] > logged[3]["perf/wall_time_s"] + 2 * SLEEP


def test_resource_monitor_carries_the_wall_time_across_a_resume(caplog):
    caplog.set_level(logging.INFO)
    monitor = ResourceMonitor()
    monitor.load_state_dict({"wall_time_s": 100.0})
    assert monitor.state_dict() == {"wall_time_s": 100.0}, "before training starts again"
    recorder = fit(OneWeight(sleep=SLEEP), [monitor], steps=2, every=2)
    assert 100.0 + 2 * SLEEP <= recorder.metrics[1]["perf/wall_time_s"] < 101.0
    assert 100.0 + 2 * SLEEP <= monitor.state_dict()["wall_time_s"] < 101.0
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("Trained"))
    assert line.startswith("Trained 2 steps in 100 s, peak memory ") and line.endswith(
        " GiB (rank 0)"
    )
    assert ResourceMonitor().state_dict() == {"wall_time_s": 0.0}


def test_peak_memory_is_the_peak_resident_size_in_gib(monkeypatch):
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert peak_memory_gib(torch.device("cpu")) == pytest.approx(kib * 1024 / 2**30, rel=0.05)
    monkeypatch.setattr(sys, "platform", "darwin")
    assert peak_memory_gib(torch.device("cpu")) == pytest.approx(kib / 2**30, rel=0.05), "bytes"


def _trainer_of(optimizer, scheduler=None) -> SimpleNamespace:
    configs = [SimpleNamespace(scheduler=scheduler)] if scheduler is not None else []
    return SimpleNamespace(optimizers=[optimizer], lr_scheduler_configs=configs)


def test_scale_learning_rate_scales_what_the_schedule_computes_from():
    w = torch.nn.Parameter(torch.zeros(1))
    adam = torch.optim.Adam([w], lr=0.1)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(adam, T_max=10)
    assert scale_learning_rate(_trainer_of(adam, cosine), 0.5) == [pytest.approx(0.05)]
    assert cosine.base_lrs == [pytest.approx(0.05)]
    adam.step()
    cosine.step()
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(torch.optim.Adam([w], lr=0.05), T_max=10)
    reference.optimizer.step()
    reference.step()
    assert adam.param_groups[0]["lr"] == pytest.approx(reference.optimizer.param_groups[0]["lr"])

    sgd = torch.optim.SGD([w], lr=0.1)
    one_cycle = torch.optim.lr_scheduler.OneCycleLR(sgd, max_lr=1.0, total_steps=10)
    group = dict(sgd.param_groups[0])
    scale_learning_rate(_trainer_of(sgd, one_cycle), 0.25)
    for key in ("lr", "initial_lr", "max_lr", "min_lr"):
        assert sgd.param_groups[0][key] == pytest.approx(group[key] * 0.25), key


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_skipped": 0},
        {"window": 0},
        {"max_rollbacks": -1},
        {"lr_factor": 0.0},
        {"lr_factor": 1.0},
        {"lr_factor": 1.5},
    ],
)
def test_rollback_refuses_options_out_of_range(kwargs):
    options = {"max_skipped": 3, "window": 100, "max_rollbacks": 5, "lr_factor": 0.5} | kwargs
    message = (
        "^NonFiniteRollback needs max_skipped >= 1, window >= 1, max_rollbacks >= 0 and "
        "0 < lr_factor < 1, got {max_skipped}, {window}, {max_rollbacks}, {lr_factor}$"
    ).format(**options)
    with pytest.raises(ValueError, match=message):
        NonFiniteRollback(**kwargs)


def test_rollback_takes_the_smallest_options_in_range():
    callback = NonFiniteRollback(max_skipped=1, window=1, max_rollbacks=0, lr_factor=0.999)
    assert (callback.max_skipped, callback.window, callback.max_rollbacks) == (1, 1, 0)


def test_rollback_defaults_are_the_shipped_policy():
    from omegaconf import OmegaConf

    from kxnet.config import project_root

    shipped = OmegaConf.load(project_root() / "conf/train/callbacks/nonfinite_rollback.yaml")
    options = {k: v for k, v in shipped.nonfinite_rollback.items() if k != "_target_"}
    default = NonFiniteRollback()
    assert {k: getattr(default, k) for k in options} == options


def test_rollback_counts_skipped_steps_by_their_index_and_logs_them():
    callback = NonFiniteRollback(max_skipped=3, window=3)
    recorder = fit(OneWeight(skip=(1, 3, 6)), [callback], steps=8, every=1)
    assert callback.skipped == 3 and callback.rollbacks == 0
    assert callback.recent == [6], "step 3 left the window of steps 5 to 7"
    first = {}
    for step in sorted(recorder.metrics):
        if "train/skipped_steps" in recorder.metrics[step]:
            first.setdefault(recorder.metrics[step]["train/skipped_steps"], step)
    assert first == {1.0: 1, 2.0: 3, 3.0: 6}, "the count, first logged at the skipped step"
    assert not any("train/rollbacks" in m for m in recorder.metrics.values())


def test_rollback_restores_the_kept_weights_scales_the_rate_and_says_so(caplog):
    caplog.set_level(logging.WARNING)
    callback = NonFiniteRollback(max_skipped=2, window=10, lr_factor=0.5, max_rollbacks=1)
    module = OneWeight(skip=(3, 4))
    recorder = fit(module, [callback], steps=6, every=1)
    assert callback.rollbacks == 1 and callback.recent == [] and callback.skipped == 2
    assert recorder.metrics[4]["train/rollbacks"] == 1.0
    line = next(r.getMessage() for r in caplog.records if "rolled back" in r.getMessage())
    assert line == (
        "step 4: 2 non-finite steps within 10 steps: rolled back to the weights and optimiser "
        "state of step 0, learning rate x0.5 -> 0.05 (roll-back 1 of 1)"
    )
    assert module.trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.05)
    # Back to w = 0 at step 4, then step 5 applied at the halved rate: w = 0.05 · 2 · (1 - 0).
    assert module.w.item() == pytest.approx(0.1)


def test_rollback_beyond_the_limit_stops_with_a_message_naming_the_options():
    callback = NonFiniteRollback(max_skipped=1, window=5, max_rollbacks=0)
    with pytest.raises(DivergedError) as error:
        fit(OneWeight(skip=(2,)), [callback], steps=4, every=1)
    assert str(error.value) == (
        "training diverged: 1 non-finite steps within 5 steps (the last at step 2) after 0 "
        "roll-backs; the warnings above name the steps and their kernels: lower "
        "optim.optimizer.lr, or raise callbacks.nonfinite_rollback.max_rollbacks"
    )


def test_rollback_keeps_the_raw_weights_of_a_checkpoint_with_an_average():
    """With WeightEMA, a checkpoint's ``state_dict`` holds the average and
    ``current_model_state`` the raw weights: a roll-back puts back the raw ones."""
    module = OneWeight()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    callback = NonFiniteRollback(max_skipped=1)
    checkpoint = {
        "global_step": 7,
        "state_dict": {"w": torch.tensor([5.0])},
        "current_model_state": {"w": torch.tensor([2.0])},
        "optimizer_states": [optimizer.state_dict()],
    }
    callback.on_save_checkpoint(None, module, checkpoint)
    callback.recent = [8]
    callback._roll_back(_trainer_of(optimizer), module, step=8)
    assert module.w.item() == 2.0


def test_rollback_state_round_trips():
    callback = NonFiniteRollback()
    callback.load_state_dict({"recent": (4, 9), "skipped": 7.0, "rollbacks": 2.0})
    state = callback.state_dict()
    assert state == {"recent": [4, 9], "skipped": 7, "rollbacks": 2}
    assert type(state["recent"]) is list and type(state["skipped"]) is int
    assert type(state["rollbacks"]) is int
    again = NonFiniteRollback()
    again.load_state_dict(state)
    assert again.state_dict() == state


def test_scale_learning_rate_of_a_schedule_without_base_rates_and_of_two_groups():
    """ReduceLROnPlateau keeps no base_lrs: the rates alone are scaled; every group is."""
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    sgd = torch.optim.SGD([{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.02}])
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(sgd)
    assert scale_learning_rate(_trainer_of(sgd, plateau), 0.5) == [
        pytest.approx(0.05),
        pytest.approx(0.01),
    ]
