"""The cosine decay over a step and a time budget (kxnet.train.schedule), and the choice between
the average of the weights and the raw weights (kxnet.train.ema)."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from torch import nn

from faultinject import FinalLR
from kxnet.schema import typed
from kxnet.train import train
from kxnet.train.ema import WeightEMA
from kxnet.train.finish import keep_the_better
from kxnet.train.schedule import BudgetCosineLR, seconds
from trainhelp import QUIET, compose_train

LR, ETA_MIN = 1e-3, 1e-6


class Clock:
    """A clock that advances ``per_step`` seconds each time the test says so."""

    def __init__(self, per_step: float) -> None:
        self.now, self.per_step = 0.0, per_step

    def __call__(self) -> float:
        return self.now

    def tick(self) -> None:
        self.now += self.per_step


def _schedule(clock: Clock, max_steps=1000, max_time="00:00:00:20"):
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=LR)
    return optimizer, BudgetCosineLR(optimizer, max_steps, max_time, ETA_MIN, clock=clock)


def _run(clock: Clock, scheduler, optimizer, steps: int) -> list[float]:
    lrs = []
    for _ in range(steps):
        clock.tick()
        optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    return lrs


def test_on_a_fast_machine_the_decay_ends_at_the_step_budget():
    clock = Clock(per_step=0.001)
    optimizer, scheduler = _schedule(clock)
    lrs = _run(clock, scheduler, optimizer, 1000)
    assert lrs[499] == pytest.approx(ETA_MIN + (LR - ETA_MIN) / 2)
    assert lrs[-1] == pytest.approx(ETA_MIN) and lrs[-2] > ETA_MIN


def test_on_a_slow_machine_the_decay_ends_at_the_time_budget():
    clock = Clock(per_step=2.0)  # 20 s of budget: 10 steps of the 1000
    optimizer, scheduler = _schedule(clock)
    lrs = _run(clock, scheduler, optimizer, 10)
    assert lrs[4] == pytest.approx(ETA_MIN + (LR - ETA_MIN) / 2)
    assert lrs[-1] == pytest.approx(ETA_MIN)
    assert all(a > b for a, b in zip(lrs, lrs[1:-1], strict=False))


def test_a_resumed_schedule_goes_on_from_its_saved_clock():
    clock = Clock(per_step=2.0)
    optimizer, scheduler = _schedule(clock)
    _run(clock, scheduler, optimizer, 3)
    state = scheduler.state_dict()
    assert state["_elapsed_before"] == 6.0
    later = Clock(per_step=2.0)
    later.now = 1000.0  # another process: its clock reads anything
    optimizer2, resumed = _schedule(later)
    resumed.load_state_dict(state)
    assert resumed.elapsed() == 6.0
    lrs = _run(later, resumed, optimizer2, 7)
    assert lrs[1] == pytest.approx(ETA_MIN + (LR - ETA_MIN) / 2)
    assert lrs[-1] == pytest.approx(ETA_MIN)


def test_budgets_in_lightnings_forms():
    assert seconds("01:02:03:04") == ((24 + 2) * 60 + 3) * 60 + 4
    assert seconds({"minutes": 30}) == 1800.0 and seconds(90) == 90.0 and seconds(None) is None
    with pytest.raises(ValueError, match="DD:HH:MM:SS"):
        seconds("30:00")
    with pytest.raises(ValueError, match="needs max_steps or max_time"):
        _schedule(Clock(1.0), max_steps=-1, max_time=None)
    _, only_time = _schedule(Clock(1.0), max_steps=None)
    assert only_time.max_steps is None and math.isclose(only_time.max_time, 20.0)


@pytest.mark.slow
def test_a_slowed_training_run_still_ends_its_decay_when_its_time_is_up(tmp_path, tiny_benchmark):
    """Each step paced to 0.5 s and 4 s of budget: a decay over the 100000 steps alone would
    end near the initial learning rate."""
    cfg = compose_train(
        tmp_path,
        "debug=default",
        "optim=cosine",
        f"optim.optimizer.lr={LR}",
        f"optim.scheduler.eta_min={ETA_MIN}",
        "trainer.detect_anomaly=false",
        "trainer.max_steps=100000",
        "+trainer.max_time=00:00:00:04",
        "trainer.val_check_interval=1000",
        "+callbacks.pace._target_=faultinject.Pace",
        "+callbacks.pace.seconds=0.5",
        "+callbacks.final._target_=faultinject.FinalLR",
        "test=false",
        *tiny_benchmark,
        *QUIET,
    )
    train(typed(cfg, "train"))
    assert 1 <= FinalLR.seen["steps"] < 100
    assert FinalLR.seen["lr"] < ETA_MIN + 0.05 * (LR - ETA_MIN)


class _Validation:
    """A trainer whose validation scores a network by minus the size of its weights."""

    def validate(self, module, datamodule, verbose, weights_only) -> None:
        score = -sum(p.abs().sum() for p in module.parameters())
        self.callback_metrics = {"val/psnr": score}


@pytest.mark.parametrize("raw_scale,kept", [(0.5, "raw"), (2.0, "averaged")])
def test_the_weights_that_validate_better_are_kept(raw_scale, kept):
    module = nn.Linear(4, 4)
    averaged = {k: v.clone() for k, v in module.state_dict().items()}
    ema = WeightEMA(decay=0.9)
    ema.raw_state = {k: v * raw_scale for k, v in averaged.items()}
    assert keep_the_better(_Validation(), module, None, ema, "val/psnr") == kept
    expected = ema.raw_state if kept == "raw" else averaged
    for name, value in module.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0)


@pytest.mark.slow
def test_a_run_with_the_average_exports_the_better_on_validation(tmp_path, tiny_benchmark, caplog):
    """The raw weights are spoiled at the last step: the average is exported instead."""
    cfg = compose_train(
        tmp_path,
        "debug=default",
        "trainer.detect_anomaly=false",
        "trainer.max_steps=6",
        "trainer.val_check_interval=6",
        "+callbacks.ema._target_=kxnet.train.ema.WeightEMA",
        "+callbacks.ema.decay=0.5",
        "+callbacks.spoil._target_=faultinject.SpoilAt",
        "+callbacks.spoil.step=6",
        "+callbacks.spoil.scale=0.5",
        "test=false",
        *tiny_benchmark,
        *QUIET,
    )
    with caplog.at_level(logging.INFO, logger="kxnet.train.finish"):
        train(typed(cfg, "train"))
    weights = torch.load(tmp_path / "weights.pt", weights_only=True)["state_dict"]
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    averaged, raw = last["state_dict"], last["current_model_state"]
    assert all(torch.equal(v, averaged[f"net.{k}"]) for k, v in weights.items())
    assert not all(torch.equal(v, raw[f"net.{k}"]) for k, v in weights.items())
    assert "the averaged weights are kept" in caplog.text
