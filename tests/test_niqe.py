import pytest
import torch
import torch.nn.functional as F

from kxnet import kernels
from kxnet.config import project_root
from kxnet.data.images import read_image
from kxnet.niqe import matlab_downscale_matrix, niqe

BABOON = project_root() / "data" / "benchmarks" / "Set14" / "baboon.png"
# The MATLAB release of NIQE (R2021a) on BasicSR's tests/data/baboon.png, as BasicSR's
# calculate_niqe documents it (Y of YCbCr, no border cropped). That file is the first 492 of the
# 500 columns of Set14's baboon, and NIQE reads only the top-left 480×480 of either.
MATLAB_BABOON = 5.72957338


@pytest.fixture(scope="module")
def baboon():
    return read_image(BABOON)


@pytest.fixture(scope="module")
def baboon_niqe(baboon):
    return niqe(baboon)


def test_niqe_matches_the_matlab_release_on_baboon(baboon_niqe):
    assert abs(baboon_niqe - MATLAB_BABOON) < 0.01


def test_niqe_reads_only_whole_blocks_from_the_top_left(baboon, baboon_niqe):
    assert niqe(baboon[:, :, :480]) == pytest.approx(baboon_niqe, abs=1e-9)
    assert niqe(baboon[:, :, 8:488]) != pytest.approx(baboon_niqe, abs=1e-3)


def test_blur_raises_niqe(baboon, baboon_niqe):
    k = kernels.isotropic_gaussian(torch.tensor([1.5], dtype=torch.float64), 9).float()
    blurred = F.conv2d(F.pad(baboon[:, None], [4] * 4, mode="reflect"), k[:, None])[:, 0]
    assert niqe(blurred) > baboon_niqe + 0.3


def test_matlab_downscale_matrix_averages_and_mirrors():
    matrix = matlab_downscale_matrix(10, 0.5)
    assert matrix.shape == (5, 10)
    assert torch.allclose(matrix.sum(1), torch.ones(5, dtype=torch.float64))
    # symmetric: the first output row mirrors the last one
    assert torch.allclose(matrix[0], matrix[-1].flip(0))
    # antialiasing widens the cubic kernel to 8 taps, so even the middle row reaches 4 pixels a side
    assert (matrix[2] != 0).sum() == 8


def test_niqe_refuses_an_image_smaller_than_a_block():
    with pytest.raises(ValueError, match="at least 96×96"):
        niqe(torch.rand(3, 95, 200))
