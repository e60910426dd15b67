"""Training progress: plain log lines where stdout is not a terminal, the rich bar over the run's
steps on one (no "Epoch 181/-2"), and the final table in Hydra's train.log."""

from __future__ import annotations

import io
import logging
import re
import time

import lightning.pytorch as pl
import pytest
from lightning.pytorch.demos.boring_classes import BoringModel

from kxnet.train import progress
from kxnet.train.progress import LogProgress, StepProgressBar, format_duration, report
from trainhelp import run_train

LINE = re.compile(
    r"step (\d+)/(\d+) \((\d+)%\) \| loss [0-9.e+-]+ \| [0-9.e+]+ it/s \| ETA (\w+)"
    r"( \(time budget\))?"
    r"(?: \| val/psnr ([0-9.]+) \(step (\d+)\))?$"
)

# A frame of the rich bar: "Epoch 1    ━━━━━━━━━━╸      10/12 0:00:00 • …".
FRAME = re.compile(r"Epoch (\d+)\s+[━╸╺\s]*\s(\d+)/(\d+) ")


class _Model(BoringModel):
    """BoringModel whose validation logs a "val/psnr" that grows with the step."""

    def validation_step(self, batch, batch_idx):
        self.log("val/psnr", 20.0 + self.global_step)
        return super().validation_step(batch, batch_idx)


def _fit(
    tmp_path, callbacks, model: pl.LightningModule | None = None, **trainer_args
) -> pl.Trainer:
    args = dict(
        max_steps=12,
        max_epochs=-1,
        limit_train_batches=5,
        limit_val_batches=1,
        val_check_interval=5,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=callbacks,
    )
    trainer = pl.Trainer(**(args | trainer_args))
    trainer.fit(model or _Model())
    return trainer


def _progress_records(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "kxnet.train.progress"]


def test_log_progress_writes_a_line_every_n_steps(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="kxnet.train.progress")
    _fit(tmp_path, [LogProgress(every_n_steps=4, when="always")], enable_progress_bar=False)
    messages = _progress_records(caplog)
    lines = [LINE.match(m) for m in messages if m.startswith("step ")]
    assert all(lines), messages
    assert not any(m[5] for m in lines), messages
    assert [(int(m[1]), int(m[2])) for m in lines] == [(4, 12), (8, 12), (12, 12)]
    assert [int(m[3]) for m in lines] == [33, 67, 100]
    # The last validation before each line (epochs of 5 steps: validations at 5 and 10).
    assert [m[6] and (float(m[6]), int(m[7])) for m in lines] == [None, (25.0, 5), (30.0, 10)]
    assert "validation at step 5: val/psnr 25.0000" in messages
    assert messages[0] == "training from step 0 to 12, a progress line every 4 steps"


def test_log_progress_closes_with_the_last_step_and_stays_off_on_a_terminal(
    tmp_path, caplog, monkeypatch
):
    caplog.set_level(logging.INFO, logger="kxnet.train.progress")
    _fit(tmp_path, [LogProgress(every_n_steps=5, when="auto")], enable_progress_bar=False)
    steps = [m.split(" |")[0] for m in _progress_records(caplog) if m.startswith("step ")]
    assert steps == ["step 5/12 (42%)", "step 10/12 (83%)", "step 12/12 (100%)"]
    caplog.clear()
    monkeypatch.setattr(progress, "_stdout_is_terminal", lambda: True)
    _fit(tmp_path, [LogProgress(every_n_steps=5, when="auto")], enable_progress_bar=False)
    assert _progress_records(caplog) == []


class _PacedModel(_Model):
    """Training steps of at least 20 ms, so that a time budget of seconds ends the run."""

    def training_step(self, batch, batch_idx):
        time.sleep(0.02)
        return super().training_step(batch, batch_idx)


def test_the_time_left_is_the_time_budgets_when_that_ends_the_run_first(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="kxnet.train.progress")
    trainer = _fit(
        tmp_path,
        [LogProgress(every_n_steps=5, when="always")],
        _PacedModel(),
        max_steps=100_000,
        max_time={"seconds": 3},
        enable_progress_bar=False,
    )
    messages = _progress_records(caplog)
    assert messages[0] == (
        "training from step 0 to 100000 or for 3s (trainer.max_time), whichever ends first, "
        "a progress line every 5 steps"
    )
    lines = [LINE.match(m) for m in messages if m.startswith("step ")]
    assert len(lines) >= 2 and all(lines), messages
    assert all(m[5] for m in lines), messages
    assert all(m[4].endswith("s") and "m" not in m[4] and int(m[4][:-1]) <= 3 for m in lines)
    assert 10 <= trainer.global_step < 150


def test_log_progress_refuses_bad_settings():
    with pytest.raises(ValueError, match="every_n_steps"):
        LogProgress(every_n_steps=0)
    with pytest.raises(ValueError, match="when="):
        LogProgress(when="sometimes")


def test_durations_read_as_hours_minutes_seconds():
    assert [format_duration(s) for s in (0.4, 42, 187, 3725)] == ["0s", "42s", "3m07s", "1h02m"]


def test_rich_bar_counts_the_runs_steps_and_shows_the_epoch(tmp_path):
    screen = io.StringIO()
    console = {"force_terminal": True, "file": screen, "width": 140, "color_system": None}
    bar = StepProgressBar(console_kwargs=console)
    trainer = _fit(tmp_path, [bar])
    assert trainer.global_step == 12
    text = screen.getvalue()
    assert "Epoch 2" in text and "12/12" in text
    assert "/-2" not in text and "/-1" not in text
    # Across epochs the bar goes on counting the run's steps (epoch 1: steps 6 to 10).
    counts = [(int(e), int(n), int(t)) for e, n, t in FRAME.findall(text)]
    assert {total for _, _, total in counts} == {12}
    assert any(epoch == 1 and 5 < n <= 10 for epoch, n, _ in counts), counts


# The time column of a frame: "0:00:01 • 0:00:02 (time budget)" (elapsed • time left).
TIME = re.compile(r"(\d+):(\d\d):(\d\d) • (\d+):(\d\d):(\d\d)( \(time budget\))?")


def _seconds(h: str, m: str, s: str) -> int:
    return (int(h) * 60 + int(m)) * 60 + int(s)


def test_the_rich_bars_time_left_is_the_time_budgets_when_that_ends_the_run_first(tmp_path):
    def frames(**trainer_args) -> list[tuple[int, int, bool]]:
        screen = io.StringIO()
        console = {"force_terminal": True, "file": screen, "width": 160, "color_system": None}
        _fit(tmp_path, [StepProgressBar(console_kwargs=console)], _PacedModel(), **trainer_args)
        return [
            (_seconds(*t[:3]), _seconds(*t[3:6]), bool(t[6]))
            for t in TIME.findall(screen.getvalue())
        ]

    # 100000 steps of 20 ms and more: the 3 s budget ends the run, and the bar says so.
    budgeted = frames(max_steps=100_000, max_time={"seconds": 3}, limit_train_batches=50)
    late = [(left, flag) for elapsed, left, flag in budgeted if elapsed >= 1]
    assert late and all(flag and left <= 2 for left, flag in late), budgeted
    # Without a budget (or with one that the steps end first) the bar's time left is the steps'.
    unbounded = frames(max_steps=60, limit_train_batches=50)
    generous = frames(max_steps=60, max_time={"minutes": 30}, limit_train_batches=50)
    assert unbounded and generous
    assert not any(flag for *_, flag in unbounded + generous)


def test_report_prints_where_no_handler_shows_the_log(capsys, caplog):
    log = logging.getLogger("kxnet.test.report")
    report(log, "the table")
    assert capsys.readouterr().out == "the table\n"
    handler = logging.StreamHandler(progress.sys.stdout)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        report(log, "once")
    finally:
        log.removeHandler(handler)
    assert capsys.readouterr().out == "once\n"  # by the handler, not printed a second time


def test_piped_training_writes_progress_and_the_final_table_to_train_log(tmp_path, tiny_benchmark):
    eval_cfg = "eval={datasets: [Tiny], noise: [0], device: cpu, num_workers: 0}"
    result = run_train(
        [
            *tiny_benchmark,
            "debug=default",
            "test=false",
            "trainer.max_steps=6",
            "trainer.val_check_interval=3",
            "trainer.detect_anomaly=false",
            "callbacks.log_progress.every_n_steps=2",
            eval_cfg,
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log = (tmp_path / "train.log").read_text()
    lines = [m for m in map(LINE.search, log.splitlines()) if m]
    assert [(int(m[1]), int(m[2])) for m in lines] == [(2, 6), (4, 6), (6, 6)], log
    assert lines[0][6] is None and float(lines[-1][6]) > 20  # the last validation's PSNR
    assert "validation at step 3: val/psnr" in log and "Trained 6 steps in" in log
    table = "Tiny x2 Setting 1, noise 0:"
    assert table in log and "KXNet (this run, S = 2)" in log and " dB" in log
    assert table in result.stdout  # and on the console
