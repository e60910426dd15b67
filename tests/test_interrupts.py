"""Ctrl-C (SIGINT) during ``kxnet.train``, ``kxnet.eval`` and ``kxnet.predict``: one line on
stderr saying what was finished, exit status 130, no traceback, nothing half-written.

Each command runs in this process (its Hydra ``main()`` with a patched ``sys.argv``) and sends
itself a real SIGINT at a chosen point of its work; Python turns it into ``KeyboardInterrupt``
there, as it does for Ctrl-C in a terminal.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kxnet import KXNet
from kxnet.checkpoint import save_weights
from trainhelp import QUIET

TINY = [
    "debug=default",
    "trainer.detect_anomaly=false",
    "trainer.limit_val_batches=0",
    "test=false",
    "eval=null",
    "model.net.stages=1",
    "data.lr_patch_size=11",
    "data.samples_per_epoch=6",
    "data.num_workers=0",
    "callbacks.model_checkpoint.monitor=null",
    "callbacks.last_checkpoint.every_n_train_steps=2",
    "trainer.max_steps=6",
]


@pytest.fixture(autouse=True)
def _sigint_restored(monkeypatch):
    """Ctrl-C raises KeyboardInterrupt here, whatever an earlier test left (Lightning ignores
    SIGINT once it has handled one); the handler found is put back afterwards."""
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    yield
    signal.signal(signal.SIGINT, handler)


def _ctrl_c() -> None:
    os.kill(os.getpid(), signal.SIGINT)


def _main(app: str, args: list[str], out: Path, monkeypatch, capfd) -> tuple[int, str, str]:
    module = importlib.import_module(f"kxnet.{app}.__main__")
    monkeypatch.setattr(sys, "argv", [f"kxnet.{app}", *args, f"hydra.run.dir={out}"])
    capfd.readouterr()
    try:
        module.main()
        code = 0
    except SystemExit as stop:
        code = stop.code
    captured = capfd.readouterr()
    return code, captured.out, captured.err


def _one_line(code: int, out: str, err: str) -> str:
    """The interrupt's line: the last on stderr and the only one of its kind (what the command
    printed before it, such as its progress, may come first)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 130, err[-3000:]
    assert lines and lines[-1].startswith("interrupted: "), err[-3000:]
    assert sum(line.startswith(("interrupted", "error")) for line in lines) == 1, err[-3000:]
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err
    return lines[-1]


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png", "c.png"):
        Image.fromarray(rng.integers(0, 256, (12, 15, 3), dtype=np.uint8)).save(folder / name)
    return folder


@pytest.mark.parametrize("where", ["between images", "while writing the kernels"])
def test_ctrl_c_in_predict_keeps_the_finished_images_whole_and_says_so(
    where, images, tmp_path, monkeypatch, capfd
):
    from kxnet.predict import prediction

    torch.manual_seed(0)
    weights = save_weights(KXNet(2, 1, setting="aniso"), tmp_path / "w.pt")
    calls = []
    if where == "between images":
        original = prediction.predict_image

        def predict_image(model, path, *args, **kwargs):
            calls.append(path)
            if len(calls) == 2:
                _ctrl_c()
            return original(model, path, *args, **kwargs)

        monkeypatch.setattr(prediction, "predict_image", predict_image)
    else:
        original = prediction.write_kernels

        def write_kernels(outputs, stem, *args):
            written = original(outputs, stem, *args)
            calls.append(stem)
            if len(calls) == 2:
                _ctrl_c()
            return written

        monkeypatch.setattr(prediction, "write_kernels", write_kernels)
    out = tmp_path / "out"
    args = ["device=cpu", f"ckpt_path={weights}", f"input={images}", f"output={out}"]
    line = _one_line(*_main("predict", args, tmp_path / "run", monkeypatch, capfd))
    assert f"at b.png: 1 of 3 images written to {out}, each with all its files" in line
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "a_kernel.npy", "a_kernel.png"]


def test_ctrl_c_in_eval_writes_nothing_and_says_so(tmp_path, monkeypatch, capfd):
    from kxnet.eval import run as driver

    original = driver._records

    def records(*args, **kwargs):
        _ctrl_c()
        return original(*args, **kwargs)

    monkeypatch.setattr(driver, "_records", records)
    out = tmp_path / "run"
    args = ["model.net.stages=0", "eval.num_workers=0", "eval.progress=false"]
    line = _one_line(*_main("eval", args, out, monkeypatch, capfd))
    assert f"before the evaluation was complete: nothing written to {out}" in line
    assert not [p for p in out.iterdir() if p.name != ".hydra" and p.suffix != ".log"]


def test_ctrl_c_in_training_names_the_checkpoint_to_resume(tmp_path, monkeypatch, capfd):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    out = tmp_path / "run"
    args = [
        *QUIET,
        *TINY,
        "+callbacks.stop._target_=faultinject.InterruptAt",
        "+callbacks.stop.step=3",
    ]
    line = _one_line(*_main("train", args, out, monkeypatch, capfd))
    last = out / "checkpoints" / "last.ckpt"
    assert f"stopped by Ctrl-C at step 3: the newest checkpoint is {last}" in line
    assert f"resume with ckpt_path={last}" in line
    assert torch.load(last, weights_only=False)["global_step"] == 2
    assert not (out / "weights.pt").exists()


def test_ctrl_c_before_training_says_nothing_was_written(tmp_path, monkeypatch, capfd):
    from kxnet.train import run

    def check_train(*args, **kwargs):
        _ctrl_c()

    monkeypatch.setattr(run, "check_train", check_train)
    line = _one_line(*_main("train", [*QUIET, *TINY], tmp_path / "run", monkeypatch, capfd))
    assert line == "interrupted: stopped by Ctrl-C before any result was written"
