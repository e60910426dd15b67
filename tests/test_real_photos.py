"""The real-photo options of the commands: ``kxnet.eval`` with ``eval.self_ensemble`` and
``eval.photos`` (NIQE without ground truth), ``kxnet.predict`` with ``kernel=tiled`` and
``self_ensemble``."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from commandhelp import run_eval, run_predict
from kxnet import KXNet
from kxnet.checkpoint import save_weights
from kxnet.config import project_root
from kxnet.data.images import read_image
from kxnet.niqe import niqe

SET5 = project_root() / "data" / "benchmarks" / "Set5"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    return save_weights(KXNet(2, 1, setting="aniso"), tmp_path_factory.mktemp("w") / "x2.pt")


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    (root / "Tiny").mkdir()
    Image.open(SET5 / "baby.png").convert("RGB").crop((100, 100, 148, 148)).save(
        root / "Tiny" / "baby.png"
    )
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two 100×100 LR crops (SR 200×200: four NIQE blocks) and a 40×40 one (too small)."""
    folder = tmp_path_factory.mktemp("photos")
    for name, box in (("bird", (50, 50, 150, 150)), ("head", (60, 40, 160, 140))):
        Image.open(SET5 / f"{name}.png").convert("RGB").crop(box).save(folder / f"{name}.png")
    Image.open(SET5 / "woman.png").convert("RGB").crop((0, 0, 40, 40)).save(folder / "small.png")
    return folder


def _eval(tmp_path, bench, *extra):
    overrides = [
        f"paths.benchmark_dir={bench}",
        f"paths.cache_dir={bench / 'cache'}",
        f"paths.output_dir={tmp_path}",
        "eval.datasets=[Tiny]",
        "eval.noise=[0]",
        "eval.num_workers=0",
        "eval.device=cpu",
        "eval.progress=false",
        "setting=aniso",
        *extra,
    ]
    assert run_eval(overrides) == 0
    return json.loads((tmp_path / "results.json").read_text())


def _psnr(payload):
    return [r["psnr_y"] for r in payload["records"]]


def test_eval_self_ensemble_runs_the_ensemble(tmp_path, bench, weights):
    """The equivariance itself is tested in test_ensemble.py; here, that the option reaches it."""
    plain = _eval(tmp_path / "plain", bench, f"ckpt_path={weights}")
    ensemble = _eval(tmp_path / "x8", bench, f"ckpt_path={weights}", "eval.self_ensemble=true")
    assert ensemble["method"] == "KXNet (S=1) x8" and ensemble["eval"]["self_ensemble"]
    assert all(abs(a - b) > 1e-4 for a, b in zip(_psnr(plain), _psnr(ensemble), strict=True))


def test_eval_photos_reports_niqe_per_photo_and_on_average(tmp_path, bench, photos, capsys):
    payload = _eval(tmp_path, bench, "model.net.stages=0", "scale=2", f"eval.photos={photos}")
    records = {r["image"]: r for r in payload["records"]}
    assert set(records) == {"bird", "head", "small"}
    assert records["small"]["niqe"] is None  # 80×80: smaller than a block
    sr = KXNet(2, 0).initial_image(read_image(photos / "bird.png")[None])[0]
    assert records["bird"]["niqe_bicubic"] == pytest.approx(niqe(sr), abs=1e-6)
    assert records["bird"]["niqe"] == pytest.approx(records["bird"]["niqe_bicubic"], abs=1e-6)
    mean = (records["bird"]["niqe"] + records["head"]["niqe"]) / 2
    assert payload["summary"]["niqe"] == pytest.approx(mean)
    table = (tmp_path / "table.md").read_text()
    assert "| **average** |" in table and "| bird |" in table
    assert "| **average** |" in capsys.readouterr().out


def test_eval_photos_refuses_a_folder_without_images(tmp_path, bench, capsys):
    overrides = ["model.net.stages=0", f"eval.photos={tmp_path}", f"paths.output_dir={tmp_path}"]
    assert run_eval(overrides) == 2
    assert "eval.photos=" in capsys.readouterr().err


def _predict(*overrides):
    return run_predict(overrides)


def test_predict_tiled_writes_the_image_and_a_kernel_per_tile(tmp_path, photos, weights):
    out = tmp_path / "out"
    args = [f"ckpt_path={weights}", f"input={photos / 'small.png'}", f"output={out}"]
    assert _predict(*args, "kernel=tiled", "tile.size=24", "tile.overlap=4") == 0
    with Image.open(out / "small.png") as sr:
        assert sr.size == (80, 80)
    kernels = np.load(out / "small_kernel.npy")
    assert kernels.shape == (3, 3, 11, 11)
    assert np.allclose(kernels.sum((-2, -1)), 1, atol=1e-4)
    assert not np.allclose(kernels[0, 0], kernels[2, 2], atol=1e-6)
    with Image.open(out / "small_kernel.png") as picture:
        assert min(picture.size) >= 40


def test_predict_self_ensemble_runs_eight_passes(tmp_path, photos, weights):
    args = [f"ckpt_path={weights}", f"input={photos / 'small.png'}"]
    assert _predict(*args, f"output={tmp_path / 'plain'}") == 0
    assert _predict(*args, f"output={tmp_path / 'x8'}", "self_ensemble=true") == 0
    plain = np.load(tmp_path / "plain" / "small_kernel.npy")
    ensemble = np.load(tmp_path / "x8" / "small_kernel.npy")
    assert plain.shape == ensemble.shape and not np.allclose(plain, ensemble, atol=1e-6)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["kernel=local"], "kernel=local is not a kernel mode"),
        (["kernel=tiled", "save_stages=true"], "set save_stages=false"),
        (["self_ensemble=maybe"], "self_ensemble=maybe must be true or false"),
        (["backend=onnx", "kernel=tiled"], "backend=onnx runs one kernel per image"),
    ],
)
def test_predict_refuses_bad_options(tmp_path, photos, weights, capsys, extra, message):
    args = [f"ckpt_path={weights}", f"input={photos}", f"output={tmp_path / 'o'}", *extra]
    assert _predict(*args) == 2
    assert message in capsys.readouterr().err
