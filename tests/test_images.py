"""Reading image files: every depth and mode, EXIF rotation, malformed files, folder listing."""

import os
import struct
import warnings

import numpy as np
import pytest
import torch
from kornia_rs import io as krs_io
from PIL import Image, ImageOps

from kxnet.data.images import (
    _orient,
    decode_image,
    exif_orientation,
    image_info,
    list_images,
    read_image,
    scan_images,
)
from kxnet.errors import ImageReadError


def _rgb(h=12, w=20, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png(path, arr=None, **save):
    Image.fromarray(_rgb() if arr is None else arr).save(path, **save)
    return path


def _as_hwc(t):
    return t.permute(1, 2, 0).numpy()


# --- malformed files -------------------------------------------------------------------------


def test_zero_byte_file_names_the_file(tmp_path):
    path = tmp_path / "empty.png"
    path.touch()
    for call in (read_image, image_info):
        with pytest.raises(ImageReadError, match=r"empty\.png: empty file"):
            call(path)


def test_text_file_named_png_is_refused(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image\n" * 10)
    with pytest.raises(ImageReadError, match=r"notes\.png: not a readable image"):
        read_image(path)
    with pytest.raises(ImageReadError, match=r"notes\.png"):
        image_info(path, "header")


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(ImageReadError, match=r"gone\.png: no such file"):
        read_image(tmp_path / "gone.png")


def test_truncated_png_passes_the_header_check_only(tmp_path):
    good = _png(tmp_path / "good.png", _rgb(64, 64))
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert image_info(cut, "header").width == 64
    for check in ("verify", "decode"):
        with pytest.raises(ImageReadError, match=r"cut\.png"):
            image_info(cut, check)
    with pytest.raises(ImageReadError, match=r"cut\.png"):
        read_image(cut)


def test_png_with_a_corrupted_byte_fails_verify(tmp_path):
    good = _png(tmp_path / "good.png", _rgb(64, 64))
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside IDAT: the chunk CRC no longer matches
    bad = tmp_path / "flipped.png"
    bad.write_bytes(bytes(data))
    assert image_info(good, "verify").height == 64
    with pytest.raises(ImageReadError, match=r"flipped\.png"):
        image_info(bad, "verify")


def test_truncated_jpeg_fails_verify(tmp_path):
    good = _png(tmp_path / "good.jpg", _rgb(256, 256), quality=95)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert image_info(good, "verify").width == 256
    assert image_info(cut, "header").width == 256
    with pytest.raises(ImageReadError, match=r"cut\.jpg"):
        image_info(cut, "verify")


def test_unknown_check_level_is_refused(tmp_path):
    with pytest.raises(ValueError, match="check must be one of"):
        image_info(_png(tmp_path / "a.png"), "thorough")


# --- depths and modes ------------------------------------------------------------------------


def test_rgb8_round_trip_and_dtype(tmp_path):
    arr = _rgb()
    path = _png(tmp_path / "a.png", arr)
    raw = decode_image(path)
    assert raw.dtype == torch.uint8 and raw.shape == (3, 12, 20)
    np.testing.assert_array_equal(_as_hwc(raw), arr)
    img = read_image(path)
    assert img.dtype == torch.float32
    np.testing.assert_allclose(_as_hwc(img), arr / 255.0, atol=1e-7)


def test_gray8_becomes_equal_channels(tmp_path):
    gray = _rgb()[..., 0]
    img = read_image(_png(tmp_path / "g.png", gray))
    assert img.shape == (3, 12, 20)
    for c in range(3):
        np.testing.assert_allclose(img[c].numpy(), gray / 255.0, atol=1e-7)


def test_gray16_png_keeps_all_16_bits(tmp_path):
    gray = (np.arange(12 * 20, dtype=np.uint16).reshape(12, 20) * 271 + 3).astype(np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(gray).save(path)
    raw = decode_image(path)
    assert raw.dtype == torch.uint16
    np.testing.assert_array_equal(raw[1].numpy(), gray)
    np.testing.assert_allclose(read_image(path)[2].numpy(), gray / 65535.0, atol=1e-7)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_rgb16_keeps_all_16_bits(tmp_path, suffix):
    """Pillow alone would keep only the high byte; these values differ in the low byte only."""
    arr = np.full((6, 9, 3), 0x1200, dtype=np.uint16)
    arr[::2, :, 0] = 0x12FF
    arr[:, ::3, 2] = 0x1201
    path = tmp_path / f"rgb16{suffix}"
    (krs_io.write_image_png_u16 if suffix == ".png" else krs_io.write_image_tiff_u16)(
        str(path), arr, "rgb"
    )
    raw = decode_image(path)
    assert raw.dtype == torch.uint16
    np.testing.assert_array_equal(_as_hwc(raw), arr)
    np.testing.assert_allclose(_as_hwc(read_image(path)), arr / 65535.0, atol=1e-7)


def test_rgba16_png_drops_alpha_keeps_16_bits(tmp_path):
    arr = np.random.default_rng(1).integers(0, 65536, (5, 7, 4), dtype=np.uint16)
    path = tmp_path / "rgba16.png"
    krs_io.write_image_png_u16(str(path), arr, "rgba")
    np.testing.assert_array_equal(_as_hwc(decode_image(path)), arr[..., :3])


def test_rgba_drops_alpha_keeps_stored_colour(tmp_path):
    rgba = np.dstack([_rgb(), np.linspace(0, 255, 12 * 20).reshape(12, 20).astype(np.uint8)])
    raw = decode_image(_png(tmp_path / "a.png", rgba))
    np.testing.assert_array_equal(_as_hwc(raw), rgba[..., :3])


@pytest.mark.parametrize("transparency", [None, 1, bytes([0, 128, 255, 255])])
def test_palette_expands_to_its_colours(tmp_path, transparency):
    """Without and with transparency (one index, or per-entry alpha bytes), quietly."""
    index = np.random.default_rng(0).integers(0, 4, (16, 16), dtype=np.uint8)
    colours = np.array([[10, 20, 30], [200, 0, 0], [0, 150, 0], [0, 0, 250]], dtype=np.uint8)
    img = Image.fromarray(index).convert("P")
    img.putpalette(colours.flatten().tolist())
    path = tmp_path / "p.png"
    img.save(path, **({} if transparency is None else {"transparency": transparency}))
    with Image.open(path) as check:
        assert check.mode == "P" and ("transparency" in check.info) == (transparency is not None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        raw = decode_image(path)
    np.testing.assert_array_equal(_as_hwc(raw), colours[index])


def test_exif_orientation_6_jpeg_is_rotated(tmp_path):
    arr = np.zeros((40, 64, 3), dtype=np.uint8)
    arr[:8, :16] = 255  # a white block at the top-left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "r.jpg"
    Image.fromarray(arr).save(path, exif=exif, quality=100)
    img = _as_hwc(decode_image(path)).astype(int)
    assert img.shape == (64, 40, 3)
    assert img[:16, -8:].mean() > 200 and img[:16, :8].mean() < 50  # now at the top-right


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_matches_pillow_exif_transpose(tmp_path, orientation):
    arr = _rgb(5, 7)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _png(tmp_path / "o.png", arr, exif=exif)
    with Image.open(path) as img:
        expected = np.asarray(ImageOps.exif_transpose(img))
    np.testing.assert_array_equal(_orient(arr, orientation), expected)
    np.testing.assert_array_equal(_as_hwc(decode_image(path)), expected)


def _exif_orientation_block(kind: int, payload: bytes, count: int = 1) -> bytes:
    """EXIF holding one Orientation entry of TIFF type ``kind`` (3: short, 12: double, 2: text)."""
    entry = struct.pack("<HHII", 0x0112, kind, count, 26)
    return b"Exif\0\0II*\0" + struct.pack("<IH", 8, 1) + entry + b"\0" * 4 + payload


@pytest.mark.parametrize(
    "kind,payload,count",
    [
        (12, struct.pack("<d", float("inf")), 1),
        (12, struct.pack("<d", float("nan")), 1),
        (2, b"rotate!\0", 8),
        (4, struct.pack("<I", 70000), 1),
        (3, struct.pack("<HH", 0, 0), 1),
        (3, struct.pack("<HH", 9, 0), 1),
    ],
    ids=["+inf", "nan", "text", "70000", "0", "9"],
)
@pytest.mark.parametrize("fmt", ["jpg", "png"])
def test_an_orientation_outside_1_to_8_means_as_stored(tmp_path, kind, payload, count, fmt):
    arr = _rgb(6, 9)
    path = tmp_path / f"odd.{fmt}"
    Image.fromarray(arr).save(path, exif=_exif_orientation_block(kind, payload, count), quality=100)
    with Image.open(path) as img:
        assert img.getexif().get(0x0112) not in range(1, 9)
        assert exif_orientation(img) == 1
    decoded = _as_hwc(decode_image(path))
    assert decoded.shape == arr.shape
    if fmt == "png":
        np.testing.assert_array_equal(decoded, arr)


def test_bmp_and_tiff_8bit_read(tmp_path):
    arr = _rgb()
    for name in ("a.bmp", "a.tif"):
        np.testing.assert_array_equal(_as_hwc(decode_image(_png(tmp_path / name, arr))), arr)


# --- folders ---------------------------------------------------------------------------------


def test_list_images_recursive_skips_hidden_and_follows_links(tmp_path):
    root = tmp_path / "root"
    (root / "DIV2K").mkdir(parents=True)
    (root / "__MACOSX" / "DIV2K").mkdir(parents=True)
    (root / ".hidden").mkdir()
    for path in [root / "a.png", root / "DIV2K" / "b.PNG", root / "DIV2K" / "c.jpeg"]:
        path.write_bytes(b"x")
    (root / "DIV2K" / "._b.PNG").write_bytes(b"x")
    (root / "__MACOSX" / "DIV2K" / "b.png").write_bytes(b"x")
    (root / ".hidden" / "d.png").write_bytes(b"x")
    (root / "notes.txt").write_bytes(b"x")
    elsewhere = tmp_path / "Flickr2K"
    elsewhere.mkdir()
    (elsewhere / "e.png").write_bytes(b"x")
    os.symlink(elsewhere, root / "Flickr2K")
    os.symlink(root, root / "DIV2K" / "loop")
    names = [p.relative_to(root).as_posix() for p in list_images(root, recursive=True)]
    assert names == ["DIV2K/b.PNG", "DIV2K/c.jpeg", "Flickr2K/e.png", "a.png"]
    assert [p.name for p in list_images(root)] == ["a.png"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images(tmp_path / "nowhere")


def test_scan_images_separates_good_from_bad(tmp_path):
    good = _png(tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    bad.write_text("no")
    infos, errors = scan_images([good, bad], "verify", threads=2)
    assert [i.path for i in infos] == [good] and (infos[0].width, infos[0].height) == (20, 12)
    assert [e.path for e in errors] == [bad]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("check", ["verify", "decode"])
def test_a_float_image_with_a_non_finite_pixel_is_refused(tmp_path, value, check):
    pixels = np.full((20, 24), 0.5, np.float32)
    pixels[3, 4] = pixels[7, 1] = value
    path = tmp_path / "f.tif"
    Image.fromarray(pixels, mode="F").save(path)
    with pytest.raises(ImageReadError, match=r"f\.tif: 2 float pixel\(s\) are NaN or inf"):
        read_image(path)
    with pytest.raises(ImageReadError, match="NaN or inf"):
        image_info(path, check)


def test_a_finite_float_image_is_clipped_to_the_unit_range(tmp_path):
    pixels = np.linspace(-1, 2, 20 * 24, dtype=np.float32).reshape(20, 24)
    Image.fromarray(pixels, mode="F").save(tmp_path / "f.tif")
    image = read_image(tmp_path / "f.tif")
    assert image.min() == 0 and image.max() == 1 and image.shape == (3, 20, 24)
