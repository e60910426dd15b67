import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from commandhelp import run_predict
from kxnet import KXNet
from kxnet.checkpoint import load_model, save_weights
from kxnet.config import project_root
from kxnet.predict.png import PngStreamWriter
from kxnet.predict.prediction import PredictError, PredictOptions, predict_image
from test_atomic import dead_pid
from test_atomic import leftover as killed_writers


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
    return run_predict(overrides)


def test_scale_and_stages_come_from_the_checkpoint(images, weights, tmp_path, capsys):
    out = tmp_path / "out"
    status = _run([f"ckpt_path={weights}", f"input={images}", f"output={out}", "save_stages=true"])
    assert status == 0
    assert f"Wrote 2 of 2 images to {out}" in capsys.readouterr().out
    with Image.open(out / "a.png") as sr:
        assert sr.size == (30, 24)
    assert sorted(p.name for p in (out / "b_stages").iterdir())[-2:] == ["x_00.png", "x_01.png"]


@pytest.mark.slow
def test_compiled_stages_give_the_eager_images(images, weights, tmp_path, monkeypatch):
    """``model.net.compile=true``: the checkpoint's network with each stage compiled (traced
    once, about 20 s on 2 cores) writes the images the eager network writes."""
    compiled = []
    original = KXNet.compile_stages

    def record(self, compile=True):
        original(self, compile)
        compiled.append(compile)

    monkeypatch.setattr(KXNet, "compile_stages", record)
    outs = {}
    for flag in ("false", "true"):
        outs[flag] = tmp_path / f"out_{flag}"
        args = [f"ckpt_path={weights}", f"input={images}", f"output={outs[flag]}"]
        assert _run([*args, f"model.net.compile={flag}"]) == 0
    assert [c for c in compiled if c] == [True], "compiled once: for the run that asked"
    for name in ("a.png", "b.png"):
        eager = np.asarray(Image.open(outs["false"] / name), dtype=np.int16)
        traced = np.asarray(Image.open(outs["true"] / name), dtype=np.int16)
        assert np.abs(eager - traced).max() <= 1, "equal up to the rounding of fused operations"


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["scale=4"], "checkpoint has scale=2 but scale=4 was asked for"),
        (["model.net.stages=19"], "but model.net.stages=19 was asked for"),
        (["setting=iso"], "but setting=iso was asked for"),
        (["tile.size=20"], "tile.size=20 leaves a core of -12 LR pixels"),
        (["tile.overlap=wide"], "tile.overlap=wide must be a number of LR pixels or auto"),
        (["kernel_crop=0"], "kernel_crop=0 must be an integer >= 1"),
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


def _exif(kind: int, payload: bytes, count: int = 1) -> bytes:
    """A TIFF (EXIF) block with one Orientation entry of TIFF type ``kind`` holding ``payload``:
    what a camera, an editor or a forger can put there (12: a double, 2: text)."""
    entry = struct.pack("<HHII", 0x0112, kind, count, 26)
    return b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + entry + b"\0" * 4 + payload


def _png_with_exif(path: Path, png: bytes, exif: bytes) -> None:
    """``png`` with an eXIf chunk right after its header chunk."""
    chunk = struct.pack(">I", len(exif)) + b"eXIf" + exif
    chunk += struct.pack(">I", zlib.crc32(b"eXIf" + exif))
    path.write_bytes(png[:33] + chunk + png[33:])


def _messy_inputs(folder: Path, elsewhere: Path) -> list[Path]:
    """Inputs whose outputs would collide, bad EXIF of three kinds, a linked image; the good."""
    folder.mkdir()
    elsewhere.mkdir()
    rng = np.random.default_rng(7)

    def pixels(dtype=np.uint8, top=256):
        return rng.integers(0, top, (12, 15, 3), dtype=dtype)

    for name in ("a.png", "a.jpg", "a_png.tif", "A.PNG", "b.png", "b_kernel.png"):
        Image.fromarray(pixels()).save(folder / name)
    infinite = _exif(12, struct.pack("<d", float("inf")))
    Image.fromarray(pixels()).save(folder / "nan.jpg", exif=b"Exif\0\0" + _exif(12, b"\xff" * 8))
    Image.fromarray(pixels()).save(folder / "text.png", exif=_exif(2, b"rotate!\0", 8))
    deep = folder / "deep.png"
    with open(deep, "wb") as f:
        writer = PngStreamWriter(f, 15, 12, bit_depth=16)
        writer.write(pixels(np.uint16, 65536))
        writer.close()
    _png_with_exif(deep, deep.read_bytes(), infinite)
    Image.fromarray(pixels()).save(elsewhere / "real.png")
    (folder / "link.png").symlink_to(elsewhere / "real.png")
    with Image.open(deep) as img:
        assert img.getexif().get(0x0112) == float("inf")
    return sorted(folder.iterdir())


def _state(root: Path) -> dict:
    return {
        str(p): (p.is_symlink() and os.readlink(p), p.is_file() and p.read_bytes())
        for p in sorted(root.rglob("*"))
    }


def test_a_messy_folder_gives_every_good_image_its_own_outputs_and_touches_nothing(
    weights, tmp_path, monkeypatch, capfd
):
    inputs = _messy_inputs(tmp_path / "in", tmp_path / "elsewhere")
    (tmp_path / "in" / "broken.png").write_bytes(inputs[0].read_bytes()[:70])
    out = tmp_path / "out"
    (out / "b_stages").mkdir(parents=True)
    (out / "b_stages" / "mine.txt").write_text("the user's notes")
    (out / "a_png.png").write_bytes(b"the user's own a_png.png")
    (out / "notes.txt").write_text("keep")
    (out / ".hidden").write_text("keep")
    (tmp_path / "elsewhere" / "keep.png").write_bytes(b"kept")
    (out / "c.png").symlink_to(tmp_path / "elsewhere" / "keep.png")
    leftover = killed_writers(out, "a_jpg.png", dead_pid())  # a SIGKILLed run's
    running = killed_writers(out, "b.png", os.getppid())  # a live writer's: kept
    users = _state(out) | _state(tmp_path / "in") | _state(tmp_path / "elsewhere")
    del users[str(leftover)]
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    args = [f"ckpt_path={weights}", f"input={tmp_path / 'in'}", f"output={out}", "save_stages=true"]
    monkeypatch.setattr(sys, "argv", ["kxnet.predict", *args, f"hydra.run.dir={tmp_path / 'h'}"])
    from kxnet.predict.__main__ import main

    with pytest.raises(SystemExit) as stop:
        main()
    captured = capfd.readouterr()
    assert stop.value.code == 1, captured.err
    assert "Traceback" not in captured.out + captured.err
    good = [p for p in inputs if p.name != "broken.png"]
    assert f"Wrote {len(good)} of {len(good) + 1} images to {out}" in captured.out
    assert f"1 failed:\n  {tmp_path / 'in' / 'broken.png'}: not a readable image" in captured.out
    # Nothing of the user's was touched; the killed run's leftover is gone.
    after = _state(out) | _state(tmp_path / "in") | _state(tmp_path / "elsewhere")
    assert {k: v for k, v in after.items() if k in users} == users
    assert not leftover.exists() and running.exists()
    assert sorted(p.name for p in (out / "b_stages").iterdir()) == ["mine.txt"]
    # Every good image has its own complete outputs: its SR image (as it alone gives it), its
    # kernels and its stages, under a name of its own.
    model = load_model(weights)
    options = PredictOptions(save_stages=True)
    written = {p.name for p in out.iterdir() if str(p) not in users}
    sr_files = {n for n in written if n.endswith(".png") and f"{n[:-4]}_kernel.npy" in written}
    assert len(sr_files) == len(good), sorted(written)
    for i, path in enumerate(good):
        alone = predict_image(model, path, tmp_path / "alone" / str(i), "x", options)
        expected = (alone.outputs[0].parent / "x.png").read_bytes()
        mine = [n for n in sr_files if (out / n).read_bytes() == expected]
        assert len(mine) == 1, f"{path.name}: {mine}"
        stem = mine[0].removesuffix(".png")
        assert {f"{stem}_kernel.npy", f"{stem}_kernel.png", f"{stem}_stages"} <= written
        stages = sorted(p.name for p in (out / f"{stem}_stages").iterdir())
        assert stages == [
            "k_00.png",
            "k_01.png",
            "kernels.npy",
            "kernels.png",
            "x_00.png",
            "x_01.png",
        ]
    assert len(written) == 4 * len(good)
    assert not [n for n in written if n.startswith(".")]


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


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_pixel_is_reported_for_its_image_and_nothing_of_it_written(
    images, weights, tmp_path, capsys, value
):
    pixels = np.full((12, 15), 0.25, np.float32)
    pixels[5, 5] = value
    Image.fromarray(pixels, mode="F").save(images / "c.tif")
    out = tmp_path / "out"
    assert _run([f"ckpt_path={weights}", f"input={images}", f"output={out}"]) == 1
    report = capsys.readouterr().out
    assert "Wrote 2 of 3 images" in report
    assert "c.tif: 1 float pixel(s) are NaN or inf" in report
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("c")) == []
    assert (out / "a.png").is_file() and (out / "a_kernel.npy").is_file()


def test_a_non_finite_network_output_is_reported_for_its_image(images, weights, tmp_path):
    model = load_model(weights)
    with torch.no_grad():
        model.stages[0].knet.gamma.fill_(float("nan"))
    with pytest.raises(ArithmeticError, match="kernel estimate is not finite"):
        predict_image(model, images / "a.png", tmp_path, "a", PredictOptions())
    assert not any(p.name.startswith(("a.", "a_", ".a")) for p in tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("rename", [6, 7, 8])  # b's journal is the 5th rename, b.png the 6th
def test_sigkill_among_an_images_renames_leaves_all_its_files_after_the_next_run(
    images, weights, tmp_path, rename
):
    """Killed as b's outputs are renamed into place (b.png there, its kernels not yet, …): the
    next run completes b's set from its journal before planning names."""
    Image.open(images / "a.png").save(images / "c.png")
    out = tmp_path / "out"
    tests = Path(__file__).parent
    env = dict(
        os.environ,
        PYTHONPATH=str(tests),
        KXNET_TEST_COMMAND="predict",
        KXNET_TEST_KILL_IN_COMMIT=str(rename),
    )
    args = [f"ckpt_path={weights}", f"input={images}", f"output={out}", "device=cpu"]
    args.append(f"hydra.run.dir={tmp_path / 'run'}")
    killed = subprocess.run(
        [sys.executable, str(tests / "faultinject.py"), *args], env=env, capture_output=True
    )
    assert killed.returncode == -9, killed.stderr.decode()[-2000:]
    assert list(out.glob(".b*.commit"))  # b's commit was under way
    assert run_predict(args[:-1]) == 0  # the next run (in this process)
    names = sorted(p.name for p in out.iterdir())
    stems = [n[: -len(".png")] for n in names if n.endswith(".png") and "_kernel" not in n]
    assert stems == ["a", "a_2", "b", "b_2", "c"]  # b completed, then all three run again
    for stem in stems:
        assert {f"{stem}.png", f"{stem}_kernel.npy", f"{stem}_kernel.png"} <= set(names), names
        assert np.load(out / f"{stem}_kernel.npy").shape == (11, 11)
        with Image.open(out / f"{stem}.png") as sr:
            assert sr.size == (30, 24)
    assert not [n for n in names if n.startswith(".")]  # no journal, no temporary file
