"""The files of a prediction run on their own (:mod:`kxnet.predict.files`): the names planned,
the refusals' messages, the pixels written (SR strips, kernel pictures) and their titles."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kxnet.atomic import AtomicFiles
from kxnet.errors import PredictError
from kxnet.predict.files import (
    Strips,
    check_output_dir,
    find_inputs,
    kernel_picture,
    output_names,
    quantise,
    to_image,
    write_kernels,
)


def test_a_folder_without_images_is_refused_naming_the_suffixes(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    message = (
        f"input={tmp_path} holds no image files (.png, .jpg, .jpeg, .bmp, .tif, .tiff, .webp): "
        "point input at an image or a folder of images"
    )
    with pytest.raises(PredictError) as err:
        find_inputs(tmp_path)
    assert str(err.value) == message


def test_the_stages_folder_is_planned_only_with_save_stages():
    inputs = [Path("in/a.png")]
    assert output_names(inputs, existing=["a_stages"]) == {inputs[0]: "a"}
    assert output_names(inputs, existing=["a_stages"], save_stages=True) == {inputs[0]: "a_2"}


def test_taken_names_are_numbered_from_2_upwards():
    inputs = [Path("in/a.png")]
    assert output_names(inputs, existing=["a.png"]) == {inputs[0]: "a_2"}
    taken = ["a.png", "a_2_kernel.npy", "A_3_KERNEL.PNG"]
    assert output_names(inputs, existing=taken) == {inputs[0]: "a_4"}
    taken = ["a.png", "a_2_kernel.npy", "A_4_KERNEL.PNG"]
    assert output_names(inputs, existing=taken) == {inputs[0]: "a_3"}, "the first free number"


def test_output_folder_messages_in_full(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    photo = images / "a.png"
    photo.write_bytes(b"")
    with pytest.raises(PredictError) as err:
        check_output_dir(images, [photo])
    assert str(err.value) == (
        f"output={images} is the folder of the input images ({photo}): choose another output "
        "folder, so that no input can be overwritten"
    )
    with pytest.raises(PredictError) as err:
        check_output_dir(tmp_path, [photo])
    assert str(err.value) == (
        f"input {photo} lies inside output={tmp_path}: choose an output folder that holds no input"
    )


def test_quantise_clamps_rounds_and_keeps_the_bit_depth():
    x = torch.tensor([-0.5, 0.0, 0.5, 0.2, 1.0, 1.5]).reshape(1, 1, 1, 6).expand(1, 3, 1, 6)
    eight = quantise(x, 8)
    assert eight.dtype == np.uint8 and eight.shape == (1, 6, 3)
    assert eight[0, :, 0].tolist() == [0, 0, 128, 51, 255, 255]
    sixteen = quantise(x, 16)
    assert sixteen.dtype == np.uint16
    assert sixteen[0, :, 1].tolist() == [0, 0, 32768, 13107, 65535, 65535]


def test_to_image_clamps_to_8_bits():
    picture = torch.tensor([-0.2, 0.0, 0.5, 1.0, 1.3]).reshape(1, 1, 5).expand(3, 1, 5)
    image = to_image(picture)
    assert image.mode == "RGB" and image.size == (5, 1)
    assert [image.getpixel((i, 0))[0] for i in range(5)] == [0, 0, 128, 255, 255]


def _kernel(p: int) -> torch.Tensor:
    k = torch.zeros(p, p)
    k[p // 2, p // 2], k[0, 0], k[-1, -1] = 0.5, 0.2, 0.3
    return k


@pytest.mark.parametrize("p", [11, 131])
def test_a_kernel_picture_is_scaled_to_its_maximum_and_enlarged(p):
    picture = np.asarray(kernel_picture(_kernel(p), "a title"))
    factor = max(1, 256 // p)
    side = p * factor
    assert picture.shape[1] == side and picture.dtype == np.uint8
    top = picture[:side]
    centre = (p // 2) * factor
    assert top[centre, centre] == 255, "the maximum is white"
    assert top[0, 0] == 102 and top[-1, -1] == 153, "0.2 and 0.3 of a maximum of 0.5"
    assert top[factor - 1, factor - 1] == 102 and top[factor, factor] == 0
    band = picture[side:]
    assert band.shape[0] > 0 and band.min() < 128, "a dark title"
    assert (band == 255).mean() > 0.5, "on white"


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_strips_assemble_the_rows_and_columns_of_tiles():
    """An LR image of 10×7 in cores of 4×4 (the last row and column run past the image, as a
    padded image's do), x2: every HR pixel lands once, where it belongs."""
    scale, lr_height, lr_width = 2, 10, 7
    hr = torch.rand(1, 3, 12 * scale, 8 * scale, generator=torch.Generator().manual_seed(0))
    out = io.BytesIO()
    strips = Strips([out], lr_width * scale, lr_height * scale, scale, 8)
    for top in (0, 4, 8):
        strips.start((top, 0, top + 4, 4))
        for left in (0, 4):
            part = hr[..., top * scale : (top + 4) * scale, left * scale : (left + 4) * scale]
            strips.paste([part], left)
        strips.finish()
    strips.close()
    expected = quantise(hr[..., : lr_height * scale, : lr_width * scale], 8)
    np.testing.assert_array_equal(_png(out.getvalue()), expected)


def test_a_strip_that_is_not_finite_is_refused_in_words():
    strips = Strips([io.BytesIO()], 4, 4, 2, 8)
    strips.start((0, 0, 2, 2))
    with pytest.raises(ArithmeticError) as err:
        strips.paste([torch.full((1, 3, 4, 4), float("nan"))], 0)
    assert str(err.value) == (
        "the network's SR image is not finite (NaN or inf), so nothing of this image was "
        "written: check the checkpoint, or try precision=32"
    )


@pytest.mark.parametrize("save_stages", [False, True])
def test_kernel_files_and_their_titles(tmp_path, save_stages):
    stages = [_kernel(11).unsqueeze(0) * (t + 1) / 3 for t in range(3)]
    with AtomicFiles(tmp_path) as outputs:
        paths = write_kernels(outputs, "x", stages, save_stages)
    final = np.load(tmp_path / "x_kernel.npy")
    np.testing.assert_array_equal(final, stages[-1][0].numpy())
    title = "estimated kernel 11×11, stage 2"
    picture = np.asarray(Image.open(tmp_path / "x_kernel.png"))
    np.testing.assert_array_equal(picture, np.asarray(kernel_picture(stages[-1][0], title)))
    if not save_stages:
        assert paths == [] and not (tmp_path / "x_stages").exists()
        return
    folder = tmp_path / "x_stages"
    # Where the stage images go: in the stages folder while it is still under its temporary name.
    assert [path.name for path in paths] == ["x_00.png", "x_01.png", "x_02.png"]
    assert {path.parent.name.split(".")[1] for path in paths} == {"x_stages"}
    np.testing.assert_array_equal(np.load(folder / "kernels.npy"), torch.cat(stages).numpy())
    for t in range(3):
        shown = np.asarray(Image.open(folder / f"k_{t:02d}.png"))
        expected = kernel_picture(stages[t][0], f"stage {t} of 2")
        np.testing.assert_array_equal(shown, np.asarray(expected))
