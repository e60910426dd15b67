import io

import numpy as np
import pytest
import torch
from kornia.io import ImageLoadType, load_image
from PIL import Image

from kxnet.predict.png import PngStreamWriter


def _encode(pixels, strips, **kwargs):
    buf = io.BytesIO()
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    png = PngStreamWriter(buf, width, height, channels=channels, **kwargs)
    bounds = [0, *strips, height]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        png.write(pixels[a:b])
    png.close()
    return buf.getvalue()


@pytest.mark.parametrize("shape", [(37, 29, 3), (1, 1, 3), (130, 7, 3), (19, 23), (600, 700, 3)])
def test_8_bit_round_trip(shape):
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    pixels[: shape[0] // 2] //= 7  # smooth part, where the filter matters
    data = _encode(pixels, strips=[s for s in (1, 5, 70) if s < shape[0]])
    with Image.open(io.BytesIO(data)) as img:
        assert img.mode == ("RGB" if len(shape) == 3 else "L")
        np.testing.assert_array_equal(np.asarray(img), pixels)


def test_16_bit_rgb_round_trip(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 65536, (21, 17, 3), dtype=np.uint16)
    path = tmp_path / "deep.png"
    path.write_bytes(_encode(pixels, strips=[3, 4], bit_depth=16))
    decoded = load_image(path, ImageLoadType.UNCHANGED, device="cpu")
    assert decoded.dtype == torch.uint16
    np.testing.assert_array_equal(decoded.permute(1, 2, 0).numpy(), pixels)


def test_16_bit_gray_round_trip():
    pixels = np.random.default_rng(2).integers(0, 65536, (9, 11), dtype=np.uint16)
    with Image.open(io.BytesIO(_encode(pixels, strips=[2], bit_depth=16))) as img:
        assert img.mode.startswith("I;16")
        np.testing.assert_array_equal(np.asarray(img).astype(np.uint16), pixels)


def test_misuse_is_refused():
    buf = io.BytesIO()
    png = PngStreamWriter(buf, 4, 2)
    with pytest.raises(ValueError, match="n×4×3 uint8"):
        png.write(np.zeros((1, 4, 3), dtype=np.uint16))
    png.write(np.zeros((1, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="1 of 2 rows"):
        png.close()
    with pytest.raises(ValueError, match="more than the 2 rows"):
        png.write(np.zeros((2, 4, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="bit_depth"):
        PngStreamWriter(buf, 4, 2, bit_depth=12)
