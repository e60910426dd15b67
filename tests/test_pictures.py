"""The dashboard pictures: strips of images and kernels, with or without the ground truth."""

from __future__ import annotations

import runpy
import sys

import numpy as np
import torch
from PIL import Image

from kxnet import KXNet
from kxnet.checkpoint import save_weights
from kxnet.config import project_root
from kxnet.pictures import comparison_strip, kernel_strip


def test_comparison_strip_with_and_without_the_hr_image():
    lr, big = torch.rand(3, 8, 8), torch.rand(3, 16, 16)
    with_hr = comparison_strip(lr, big, big, big)
    without = comparison_strip(lr, big, big)
    assert with_hr.shape == (3, 16, 4 * 16 + 3 * 4)
    assert without.shape == (3, 16, 3 * 16 + 2 * 4)
    torch.testing.assert_close(without[:, :2, :2], lr[:, :1, :1].expand(3, 2, 2))
    torch.testing.assert_close(without[:, :, -16:], big)


def test_kernel_strip_puts_every_kernel_on_one_intensity_scale():
    weak, strong = torch.full((3, 3), 0.1), torch.full((3, 3), 0.4)
    strip = kernel_strip([weak, strong], zoom=2)
    assert strip.shape == (3, 6, 2 * 6 + 2)
    assert float(strip[0, 0, 0]) == 0.25 and float(strip[0, 0, -1]) == 1.0
    assert kernel_strip([weak], true=strong, zoom=1).shape == (3, 3, 2 * 3 + 2)


def test_realsr_example_script_writes_the_readme_pictures(tmp_path, monkeypatch):
    torch.manual_seed(0)
    weights = save_weights(KXNet(scale=2, stages=2, setting="aniso"), tmp_path / "weights.pt")
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), np.uint8)).save(photo)
    script = project_root() / "experiments" / "realsr_example.py"
    argv = [str(script), str(weights), str(photo), "--crop", "32", "--out", str(tmp_path / "out")]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(script), run_name="__main__")
    assert Image.open(tmp_path / "out" / "photo.png").size == (3 * 64 + 2 * 4, 64)
    assert Image.open(tmp_path / "out" / "photo_kernels.png").size == (3 * 11 * 6 + 2 * 2, 66)
