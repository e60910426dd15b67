"""kxnet-export (an ONNX model of a trained network) and predict's backend=onnx."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from kxnet import KXNet
from kxnet.checkpoint import save_weights
from kxnet.config import project_root
from kxnet.data.images import read_image
from kxnet.export import main as export_main
from kxnet.onnx_network import OnnxKXNet

SET5 = project_root() / "data" / "benchmarks" / "Set5"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A trained-looking x2 network (random weights, S = 2), its weights file and its ONNX."""
    folder = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    net = KXNet(scale=2, stages=2, setting="iso").eval()
    save_weights(net, folder / "weights.pt")
    assert export_main([str(folder / "weights.pt"), str(folder / "model.onnx")]) == 0
    return net, folder


@pytest.mark.slow
def test_the_onnx_model_equals_torch_on_a_set5_image_of_any_size(exported):
    net, folder = exported
    onnx_net = OnnxKXNet(folder / "model.onnx")
    assert (onnx_net.scale, onnx_net.num_stages, onnx_net.kernel_size) == (2, 2, 21)
    image = read_image(SET5 / "bird.png").unsqueeze(0)
    for lr in (image[..., :96, :128], image[..., 5:78, 3:150]):
        with torch.inference_mode():
            ours = net(lr, keep_stages=False)
        theirs = onnx_net(lr)
        torch.testing.assert_close(theirs.sr, ours.sr, rtol=0, atol=1e-4)
        torch.testing.assert_close(theirs.kernel, ours.kernel, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_predict_with_backend_onnx_writes_what_the_torch_backend_writes(exported, tmp_path):
    _, folder = exported
    Image.open(SET5 / "head.png").crop((0, 0, 120, 100)).save(tmp_path / "head.png")
    for backend, ckpt in (("torch", "weights.pt"), ("onnx", "model.onnx")):
        args = [
            f"backend={backend}",
            f"ckpt_path={folder / ckpt}",
            f"input={tmp_path / 'head.png'}",
            f"output={tmp_path / backend}",
            f"hydra.run.dir={tmp_path / 'run' / backend}",  # not the checkout's outputs/
            "scale=2",
            "setting=iso",
        ]
        assert _predict(args) == 0
    torch_sr = np.asarray(Image.open(tmp_path / "torch" / "head.png"), dtype=np.int16)
    onnx_sr = np.asarray(Image.open(tmp_path / "onnx" / "head.png"), dtype=np.int16)
    assert np.abs(torch_sr - onnx_sr).max() <= 1
    kernels = [np.load(tmp_path / b / "head_kernel.npy") for b in ("torch", "onnx")]
    np.testing.assert_allclose(kernels[1], kernels[0], atol=1e-5)


def _predict(args: list[str]) -> int:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "kxnet.predict", *args], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.returncode


def test_export_refuses_a_bad_output_or_checkpoint_in_one_line(tmp_path, capsys):
    assert export_main([str(tmp_path / "missing.pt"), str(tmp_path / "m.onnx")]) == 2
    assert export_main([str(tmp_path / "missing.pt"), str(tmp_path / "m.txt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "missing.pt" in err[0] and "must end in .onnx" in err[1]
    assert not list(tmp_path.iterdir())


def test_an_onnx_file_not_written_by_kxnet_export_is_refused(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.onnx"):
        OnnxKXNet(tmp_path / "junk.onnx")
