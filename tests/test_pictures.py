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
from kxnet.pictures import TRUE_KERNEL_COLOUR, comparison_strip, kernel_strip


def _dark_columns(band: torch.Tensor) -> torch.Tensor:
    """Columns of a text band holding some ink."""
    return (band < 0.5).any(0).any(0)


def test_comparison_strip_titles_each_panel_above_the_images():
    lr, big = torch.rand(3, 40, 40), torch.rand(3, 80, 80)
    with_hr = comparison_strip(lr, big, big, big, bicubic_psnr=29.4251, sr_psnr=34.7)
    without = comparison_strip(lr, big, big)
    width = 2 * 80  # panels narrower than min_width=160 are enlarged by pixel repetition
    assert with_hr.shape[-1] == 4 * width + 3 * 4 and without.shape[-1] == 3 * width + 2 * 4
    title = with_hr.shape[1] - 2 * 80
    assert 10 < title < 60
    images = with_hr[:, title:]
    torch.testing.assert_close(images[:, :2, :2], lr[:, :1, :1].expand(3, 2, 2))
    torch.testing.assert_close(images[:, ::2, -width::2], big)
    # Every panel has its title, centred over it; the PSNR makes the titles longer.
    band = with_hr[:, :title]
    ink = _dark_columns(band)
    panels = [ink[i * (width + 4) : i * (width + 4) + width] for i in range(4)]
    assert all(bool(p.any()) for p in panels)
    assert not ink[width : width + 4].any()
    spans = [int(p.nonzero().max() - p.nonzero().min()) for p in panels]
    assert spans[1] > 2 * spans[0] and spans[2] > 2 * spans[3]
    plain_title = without.shape[1] - 2 * 80
    plain = _dark_columns(without[:, :plain_title])[width + 4 : 2 * width + 4]
    assert int(plain.nonzero().max() - plain.nonzero().min()) < spans[1]


def test_comparison_strip_keeps_large_panels_at_their_size():
    lr, big = torch.rand(3, 100, 120), torch.rand(3, 200, 240)
    strip = comparison_strip(lr, big, big, big, sr_psnr=30.0)
    assert strip.shape[-1] == 4 * 240 + 3 * 4
    torch.testing.assert_close(strip[:, -200:, -240:], big)


def test_kernel_strip_numbers_the_stages_and_frames_the_true_kernel():
    weak, strong = torch.full((3, 3), 0.1), torch.full((3, 3), 0.4)
    strip = kernel_strip([weak, strong], zoom=2, min_tile=6)
    tile = 6
    assert strip.shape[-1] == 2 * tile + 2 and strip.shape[1] > tile
    # One intensity scale: white is the largest value among the kernels.
    assert float(strip[0, 0, 0]) == 0.25 and float(strip[0, 0, -1]) == 1.0
    assert bool((_dark_columns(strip[:, tile:])).any())  # the stage numbers under the kernels
    k = torch.zeros(11, 11)
    k[5, 5] = 1.0
    marked = kernel_strip([k, k], true=k, zoom=4)
    side = 11 * 5  # zoom 4 would be 44 < min_tile=48
    assert marked.shape[-1] == 3 * side + 2 * 2
    true_tile = marked[:, :side, -side:]
    green = torch.tensor(TRUE_KERNEL_COLOUR)[:, None]
    torch.testing.assert_close(true_tile[:, 0, :], green.expand(3, side))
    torch.testing.assert_close(true_tile[:, :, 0], green.expand(3, side))
    # Estimates are not framed; the true kernel's label is drawn in its colour.
    assert float(marked[:, 0, :side].max()) == 0.0
    label = marked[:, side:, -side:]
    coloured = (label[1] - label[0]) > 0.3
    assert bool(coloured.any()) and not bool(((marked[1] - marked[0])[side:, :side] > 0.3).any())


def test_realsr_example_script_writes_the_readme_pictures(tmp_path, monkeypatch):
    torch.manual_seed(0)
    weights = save_weights(KXNet(scale=2, stages=2, setting="aniso"), tmp_path / "weights.pt")
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), np.uint8)).save(photo)
    script = project_root() / "experiments" / "realsr_example.py"
    argv = [str(script), str(weights), str(photo), "--crop", "32", "--out", str(tmp_path / "out")]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(script), run_name="__main__")
    strip = Image.open(tmp_path / "out" / "photo.png")
    assert strip.size[0] == 3 * 192 + 2 * 4 and strip.size[1] > 192  # 64 enlarged to >= 160
    kernels = Image.open(tmp_path / "out" / "photo_kernels.png")
    assert kernels.size[0] == 3 * 11 * 6 + 2 * 2 and kernels.size[1] > 66
