import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from PIL import Image

from kxnet import KXNet
from kxnet.checkpoint import save_weights
from kxnet.config import project_root
from kxnet.predict.prediction import PredictError, run


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg"):
        Image.fromarray(rng.integers(0, 256, (12, 15, 3), dtype=np.uint8)).save(folder / name)
    return folder


@pytest.fixture
def weights(tmp_path):
    torch.manual_seed(0)
    return save_weights(KXNet(2, 1, setting="aniso"), tmp_path / "kxnet_x2.pt")


def _run(overrides):
    with initialize_config_module("kxnet.conf.predict", version_base="1.3"):
        cfg = compose("predict", overrides=overrides)
    return run(cfg, overrides)


def test_scale_and_stages_come_from_the_checkpoint(images, weights, tmp_path, capsys):
    out = tmp_path / "out"
    status = _run([f"ckpt_path={weights}", f"input={images}", f"output={out}", "save_stages=true"])
    assert status == 0
    assert f"Wrote 2 of 2 images to {out}" in capsys.readouterr().out
    with Image.open(out / "a.png") as sr:
        assert sr.size == (30, 24)
    assert sorted(p.name for p in (out / "b_stages").iterdir())[-2:] == ["x_00.png", "x_01.png"]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["scale=4"], "checkpoint has scale=2 but scale=4 was asked for"),
        (["model.net.stages=19"], "but model.net.stages=19 was asked for"),
        (["setting=iso"], "but setting=iso was asked for"),
        (["tile.size=20"], "tile.size=20 leaves a core of -12 LR pixels"),
        (["tile.overlap=wide"], "tile.overlap=wide must be a number of LR pixels or auto"),
        (["kernel_crop=0"], "kernel_crop=0 must be a positive number"),
        (["device=cuda:7"], "device=cuda:7"),
        (["device=gpu"], "device=gpu is not a device"),
        (["output=INPUT"], "is the folder of the input images"),
        (["input=MISSING"], "does not exist"),
    ],
)
def test_start_up_errors_are_one_line(images, weights, tmp_path, capsys, overrides, message):
    if "device=cuda:7" in overrides and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    base = {"ckpt_path": str(weights), "input": str(images), "output": str(tmp_path / "out")}
    for item in overrides:
        key, value = item.split("=", 1)
        base[key] = {"INPUT": str(images), "MISSING": str(tmp_path / "nope")}.get(value, value)
    status = _run([f"{k}={v}" for k, v in base.items()])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_is_needed_unless_stages_is_zero(images, tmp_path, capsys):
    assert _run([f"input={images}", f"output={tmp_path / 'a'}"]) == 2
    assert "ckpt_path is not set" in capsys.readouterr().err
    assert (
        _run([f"input={images}", f"output={tmp_path / 'b'}", "model.net.stages=0", "scale=3"]) == 0
    )
    with Image.open(tmp_path / "b" / "a.png") as sr:
        assert sr.size == (45, 36)


def test_hydra_full_error_raises_instead(images, tmp_path, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(PredictError, match="ckpt_path is not set"):
        _run([f"input={images}", f"output={tmp_path / 'a'}"])


def _cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "kxnet.predict", *args],
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_cli_mixed_folder_exits_non_zero_and_lists_the_bad_files(images, tmp_path):
    (images / "broken.png").write_bytes((images / "a.png").read_bytes()[:60])
    (images / "empty.jpg").write_bytes(b"")
    out = tmp_path / "out"
    proc = _cli(
        "model.net.stages=0", f"input={images}", f"output={out}", f"hydra.run.dir={tmp_path}/h"
    )
    assert proc.returncode == 1, proc.stderr
    assert f"Wrote 2 of 4 images to {out}" in proc.stdout
    assert f"2 failed:\n  {images / 'broken.png'}: not a readable image" in proc.stdout
    assert f"  {images / 'empty.jpg'}: empty file (0 bytes)" in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "a.png",
        "a_kernel.npy",
        "a_kernel.png",
        "b.png",
        "b_kernel.npy",
        "b_kernel.png",
    ]


def test_cli_mismatch_is_one_line_without_traceback(images, weights, tmp_path):
    proc = _cli(f"ckpt_path={weights}", f"input={images}", "scale=3", f"hydra.run.dir={tmp_path}/h")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        f"error: {Path(weights)}: checkpoint has scale=2 but scale=3 was asked for: drop the "
        "scale override (the checkpoint's value is used) or pass a checkpoint with scale=3"
    ]


def _peak_rss_mb(image, out, tmp_path):
    """Peak RSS (MiB) of a bicubic x4 prediction of ``image`` in a fresh process.

    VmHWM is the peak of the process's own memory; ``ru_maxrss`` would also count the parent's
    memory at the fork.
    """
    script = (
        "import re, runpy, sys\n"
        "sys.argv = ['kxnet.predict', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('kxnet.predict', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "status = open('/proc/self/status').read()\n"
        "print('PEAK', re.search(r'VmHWM:\\s*(\\d+) kB', status).group(1))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, "model.net.stages=0", "scale=4", "tile.size=512"]
        + [f"input={image}", f"output={out}", f"hydra.run.dir={tmp_path}/h"],
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout.split("PEAK")[-1]) / 1024


@pytest.mark.slow
def test_memory_does_not_grow_with_the_output(tmp_path):
    """A 5× taller LR image adds much less memory than its output's bytes: rows are streamed.

    Same width, so that the strips (one row of tiles across the image) are the same size; what
    grows is only the decoded input (about 13 bytes per LR pixel while reading, 3 after), while
    an output held in memory would add 48 bytes per LR pixel at x4 even as 8-bit. Measured:
    +29 to +52 MiB (allocator timing varies) against +183 MiB of output.
    """
    peaks, outputs = [], []
    for height in (1000, 5000):
        y, x = np.mgrid[0:height, 0:1000]
        pixels = np.stack([(x * 7 + y * 3) % 256, (x * y) % 256, (x ^ y) % 256], -1)
        path = tmp_path / f"lr{height}.png"
        Image.fromarray(pixels.astype(np.uint8)).save(path, compress_level=1)
        peaks.append(_peak_rss_mb(path, tmp_path / f"out{height}", tmp_path))
        outputs.append(3 * 4000 * 4 * height / 2**20)
        with Image.open(tmp_path / f"out{height}" / f"lr{height}.png") as sr:
            assert sr.size == (4000, 4 * height)
    assert peaks[1] - peaks[0] < 0.5 * (outputs[1] - outputs[0]), (peaks, outputs)
