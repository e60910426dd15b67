import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from kornia.io import ImageLoadType, load_image
from PIL import Image

from kxnet import KXNet
from kxnet.checkpoint import load_model
from kxnet.data.images import read_image
from kxnet.errors import StartupError
from kxnet.predict import png as png_module
from kxnet.predict import prediction
from kxnet.predict.files import check_output_dir, find_inputs, output_names
from kxnet.predict.png import PngStreamWriter
from kxnet.predict.prediction import (
    PredictError,
    PredictOptions,
    predict_image,
    predict_images,
    summary,
)
from kxnet.predict.tiling import receptive_radius

SCALE = 2
FIXTURE = Path(__file__).parent / "fixtures" / "official_x2_s2_p11.pt"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return KXNet(SCALE, 1, setting="aniso").eval()


def _rgb(height, width, seed=0):
    """A smooth random picture (uint8 H×W×3), so that the network sees image-like input."""
    noise = torch.rand(
        1, 3, height // 4 + 2, width // 4 + 2, generator=torch.Generator().manual_seed(seed)
    )
    smooth = F.interpolate(noise, size=(height, width), mode="bilinear", align_corners=False)
    return (smooth[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def _make_inputs(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    pixels = _rgb(23, 17)
    files = {}

    def save(name, img, **kw):
        files[name] = folder / name
        img.save(files[name], **kw)

    save("rgb.png", Image.fromarray(pixels))
    save("gray.png", Image.fromarray(pixels[..., 0]))
    rgba = np.dstack([pixels, np.linspace(0, 255, 23 * 17).reshape(23, 17).astype(np.uint8)])
    save("rgba.png", Image.fromarray(rgba, "RGBA"))
    save("gray16.png", Image.fromarray(pixels[..., 1].astype(np.uint16) * 257))
    files["rgb16.png"] = folder / "rgb16.png"
    with open(files["rgb16.png"], "wb") as f:
        deep = PngStreamWriter(f, 17, 23, bit_depth=16)
        deep.write(pixels.astype(np.uint16) * 257 + np.arange(17, dtype=np.uint16)[:, None])
        deep.close()
    save("palette.png", Image.fromarray(pixels).quantize(16))
    exif = Image.Exif()
    exif[0x0112] = 6
    save("rotated.jpg", Image.fromarray(pixels), exif=exif, quality=95)
    save("tiny.png", Image.fromarray(pixels[:1, :1]))
    save("two.bmp", Image.fromarray(pixels[:2, :2]))
    return files


def _bad_inputs(folder: Path) -> dict[str, Path]:
    good = folder / "rgb.png"
    files = {
        "empty.png": b"",
        "truncated.png": good.read_bytes()[: good.stat().st_size // 2],
        "text.jpg": b"this is not an image\n",
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: folder / name for name in files}


def _hr(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def test_every_kind_of_input_is_restored(model, tmp_path):
    inputs = _make_inputs(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    notes = {}
    for name, path in inputs.items():
        result = predict_image(model, path, out, path.stem, PredictOptions())
        notes[name] = "; ".join(result.notes)
        lr = read_image(path)
        sr = _hr(out / f"{path.stem}.png")
        assert sr.shape == (lr.shape[1] * SCALE, lr.shape[2] * SCALE, 3), name
        kernel = np.load(out / f"{path.stem}_kernel.npy")
        assert kernel.shape == (11, 11) and kernel.dtype == np.float32 and (kernel >= 0).all()
        assert abs(float(kernel.sum(dtype=np.float64)) - 1) < 1e-5
        with Image.open(out / f"{path.stem}_kernel.png") as picture:
            assert picture.mode == "L" and picture.size[0] >= 11 * 20
            assert np.asarray(picture).max() == 255
    assert _hr(out / "rotated.png").shape == (17 * SCALE, 23 * SCALE, 3)
    assert "alpha channel dropped" in notes["rgba.png"]
    assert "EXIF orientation applied" in notes["rotated.jpg"]
    assert "palette expanded" in notes["palette.png"]
    assert "gray input" in notes["gray.png"]
    assert "edge-padded from 1×1" in notes["tiny.png"]
    assert "edge-padded from 2×2" in notes["two.bmp"]
    assert "16-bit output" in notes["gray16.png"]
    assert "16-bit output" in notes["rgb16.png"] and "gray" not in notes["rgb16.png"]
    for name in ("gray16", "rgb16"):
        deep = load_image(out / f"{name}.png", ImageLoadType.UNCHANGED, device="cpu")
        assert deep.dtype == torch.uint16 and deep.shape == (3, 46, 34)
    lr = read_image(inputs["rgb16.png"]).unsqueeze(0)
    with torch.inference_mode():
        sr = model(lr).sr[0].clamp(0, 1).mul(65535).round().to(torch.int32)
    deep = load_image(out / "rgb16.png", ImageLoadType.UNCHANGED, device="cpu")
    assert torch.equal(deep.to(torch.int32), sr)
    assert sr.remainder(257).ne(0).float().mean() > 0.5  # not 8-bit values scaled up
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_output_is_the_network_output_quantised(model, tmp_path):
    inputs = _make_inputs(tmp_path / "in")
    predict_image(model, inputs["rgb.png"], tmp_path, "rgb", PredictOptions())
    with torch.inference_mode():
        out = model(read_image(inputs["rgb.png"]).unsqueeze(0))
    expected = (out.sr[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(_hr(tmp_path / "rgb.png"), expected)
    np.testing.assert_array_equal(np.load(tmp_path / "rgb_kernel.npy"), out.kernel[0].numpy())


def test_bf16_output_is_the_bf16_network_output_and_near_the_float32_one(model, tmp_path):
    inputs = _make_inputs(tmp_path / "in")
    predict_image(model, inputs["rgb.png"], tmp_path, "rgb", PredictOptions(precision="bf16"))
    lr = read_image(inputs["rgb.png"]).unsqueeze(0)
    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(lr).sr[0].float()
        full = model(lr).sr[0]
    expected = (low.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(_hr(tmp_path / "rgb.png"), expected)
    assert not torch.equal(low, full), "bfloat16 changed nothing: autocast was off"
    assert (low - full).abs().mean() < 2e-3


def test_tiny_image_equals_the_padded_run_cropped(model, tmp_path):
    inputs = _make_inputs(tmp_path / "in")
    predict_image(model, inputs["two.bmp"], tmp_path, "two", PredictOptions())
    lr = F.pad(read_image(inputs["two.bmp"]).unsqueeze(0), (0, 1, 0, 1), mode="replicate")
    with torch.inference_mode():
        sr = model(lr).sr[..., :4, :4]
    expected = (sr[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(_hr(tmp_path / "two.png"), expected)


def test_tiled_prediction_equals_untiled(model, tmp_path):
    radius = receptive_radius(SCALE, 11, 1)
    path = tmp_path / "big.png"
    Image.fromarray(_rgb(4 * radius + 12, 4 * radius + 19, seed=3)).save(path)
    tiled, whole = tmp_path / "tiled", tmp_path / "whole"
    tiled.mkdir(), whole.mkdir()
    ticks = []
    small = PredictOptions(tile_size=4 * radius + 10, kernel_crop=200, save_stages=True)
    result = predict_image(model, path, tiled, "big", small, lambda d, n: ticks.append((d, n)))
    predict_image(model, path, whole, "big", PredictOptions(save_stages=True))
    assert result.tiles == 4 and ticks[-1] == (4, 4)
    for name in ("big.png", "big_stages/x_00.png", "big_stages/x_01.png"):
        a = _hr(tiled / name).astype(int)
        b = _hr(whole / name).astype(int)
        assert np.abs(a - b).max() <= 1, name
        assert (a != b).mean() < 1e-3, name
    np.testing.assert_array_equal(
        np.load(tiled / "big_kernel.npy"), np.load(whole / "big_kernel.npy")
    )


def test_kernel_is_estimated_on_the_central_crop(model, tmp_path):
    path = tmp_path / "in" / "wide.png"
    path.parent.mkdir()
    Image.fromarray(_rgb(30, 60, seed=4)).save(path)
    result = predict_image(model, path, tmp_path, "wide", PredictOptions(kernel_crop=20))
    assert "kernel estimated on the central 20×20 crop" in result.notes
    crop = read_image(path)[:, 5:25, 20:40].unsqueeze(0)
    with torch.inference_mode():
        expected = model(crop).kernel[0].numpy()
    np.testing.assert_array_equal(np.load(tmp_path / "wide_kernel.npy"), expected)
    assert _hr(tmp_path / "wide.png").shape == (60, 120, 3)


def test_stage_sequence(model, tmp_path):
    inputs = _make_inputs(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    result = predict_image(model, inputs["rgb.png"], out, "rgb", PredictOptions(save_stages=True))
    stages = out / "rgb_stages"
    assert sorted(p.name for p in stages.iterdir()) == [
        "k_00.png",
        "k_01.png",
        "kernels.npy",
        "kernels.png",
        "x_00.png",
        "x_01.png",
    ]
    assert sorted(p.name for p in result.outputs) == sorted(
        ["rgb.png", "rgb_kernel.npy", "rgb_kernel.png", "rgb_stages"]
    )
    kernels = np.load(stages / "kernels.npy")
    assert kernels.shape == (2, 11, 11)
    np.testing.assert_allclose(kernels.sum((1, 2)), 1, atol=1e-5)
    np.testing.assert_array_equal(kernels[-1], np.load(out / "rgb_kernel.npy"))
    assert (stages / "x_01.png").read_bytes() == (out / "rgb.png").read_bytes()
    with Image.open(stages / "kernels.png") as strip, Image.open(stages / "k_00.png") as one:
        # Both kernels side by side with their stage numbers under them; each one titled.
        assert strip.mode == "RGB" and strip.size[0] == 2 * 11 * 5 + 2 and strip.size[1] > 55
        assert one.mode == "L" and one.size[1] > one.size[0]
    lr = read_image(inputs["rgb.png"]).unsqueeze(0)
    bicubic = F.interpolate(lr, scale_factor=SCALE, mode="bicubic", align_corners=False)
    expected = (bicubic[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(_hr(stages / "x_00.png"), expected)


def test_mixed_folder_processes_the_good_and_lists_the_bad(model, tmp_path):
    folder = tmp_path / "in"
    good = _make_inputs(folder)
    bad = _bad_inputs(folder)
    out = tmp_path / "out"
    inputs = find_inputs(folder)
    check_output_dir(out, inputs)
    results, failures = predict_images(model, inputs, out, PredictOptions())
    assert sorted(r.path.name for r in results) == sorted(good)
    assert {f.path.name: f.reason for f in failures}.keys() == bad.keys()
    reasons = {f.path.name: f.reason for f in failures}
    assert reasons["empty.png"] == "empty file (0 bytes)"
    assert "not a readable image" in reasons["text.jpg"]
    assert "not a readable image" in reasons["truncated.png"]
    for path in good.values():
        assert (out / f"{path.stem}.png").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert not any((out / f"{Path(n).stem}.png").exists() for n in bad)
    text = summary(results, failures, out)
    assert text.splitlines()[0] == f"Wrote {len(good)} of {len(good) + len(bad)} images to {out}"
    assert f"3 failed:\n  {bad['empty.png']}: empty file (0 bytes)" in text


def test_a_failure_midway_loses_nothing_and_leaves_no_temporary_file(model, tmp_path, monkeypatch):
    inputs = _make_inputs(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    (out / "rgba.png").write_bytes(b"an earlier result")
    predict_image(model, inputs["rgb.png"], out, "rgb", PredictOptions())
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = []

    def failing_write(self, rows):
        calls.append(rows.shape)
        raise OSError("No space left on device")

    monkeypatch.setattr(png_module.PngStreamWriter, "write", failing_write)
    results, failures = predict_images(model, [inputs["rgba.png"]], out, PredictOptions())
    assert calls and not results
    assert failures[0].reason == "No space left on device"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_output_folder_checks(tmp_path):
    inputs = _make_inputs(tmp_path / "in")
    files = find_inputs(tmp_path / "in")
    with pytest.raises(PredictError, match="is the folder of the input images"):
        check_output_dir(tmp_path / "in", files)
    with pytest.raises(PredictError, match="is the folder of the input images"):
        check_output_dir(tmp_path / "in" / ".." / "in", [inputs["rgb.png"]])
    nested = tmp_path / "out" / "rgb_stages"
    nested.mkdir(parents=True)
    (nested / "rgb.png").write_bytes(inputs["rgb.png"].read_bytes())
    with pytest.raises(PredictError, match="rgb_stages/rgb.png lies inside output=.*out"):
        check_output_dir(tmp_path / "out", [nested / "rgb.png"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(StartupError, match="output=.*file/out is not a writable folder"):
        check_output_dir(tmp_path / "file" / "out", files)
    check_output_dir(tmp_path / "new" / "out", files)
    assert not (tmp_path / "new").exists(), "a check creates nothing"


def test_inputs_and_names(tmp_path):
    with pytest.raises(PredictError, match="does not exist"):
        find_inputs(tmp_path / "nope.png")
    with pytest.raises(PredictError, match="holds no image files"):
        find_inputs(tmp_path)
    names = output_names([Path("a.png"), Path("a.JPG"), Path("b.png")])
    assert names == {Path("a.png"): "a_png", Path("a.JPG"): "a_jpg", Path("b.png"): "b"}


def _produced(names: dict, save_stages: bool) -> list[str]:
    tails = [".png", "_kernel.npy", "_kernel.png"] + (["_stages"] if save_stages else [])
    return [f"{stem}{tail}".casefold() for stem in names.values() for tail in tails]


@pytest.mark.parametrize("save_stages", [False, True])
@pytest.mark.parametrize(
    "files,existing",
    [
        (["a.png", "a.jpg", "a_png.tif"], []),  # two would be a_png
        (["A.PNG", "A.png", "a.PNG"], []),  # the same name but for case
        (["b.png", "b_kernel.png"], []),  # both would write b_kernel.png
        (["c.png", "c_stages.png", "c_kernel.jpg"], ["C.png", "c_2_stages", "notes.txt"]),
    ],
)
def test_output_names_never_collide_nor_take_an_existing_name(files, existing, save_stages):
    inputs = sorted(Path(f) for f in files)
    names = output_names(inputs, existing, save_stages)
    produced = _produced(names, save_stages)
    assert len(set(produced)) == len(produced) == len(inputs) * (3 + save_stages), names
    assert not set(produced) & {e.casefold() for e in existing}, names
    assert output_names(inputs, existing, save_stages) == names, "planned the same every time"


def test_options_are_checked(model):
    assert PredictOptions().resolved_overlap(model) == receptive_radius(SCALE, 11, 1) == 16
    with pytest.raises(PredictError, match="raise tile.size to at least 38"):
        PredictOptions(tile_size=36).check(model)
    with pytest.raises(PredictError, match="kernel_crop=2 is below"):
        PredictOptions(kernel_crop=2).check(model)
    PredictOptions(tile_size=38).check(model)
    with pytest.raises(PredictError, match="tile.size=5000 is more than 4096 LR pixels"):
        PredictOptions(tile_size=5000).check(model)
    with pytest.raises(PredictError, match="kernel_crop=4097 is more than 4096"):
        PredictOptions(kernel_crop=4097).check(model)
    with pytest.raises(PredictError, match="max_pixels=0 must be a positive"):
        PredictOptions(max_pixels=0).check(model)
    with pytest.raises(PredictError, match="precision=16 is not a precision"):
        PredictOptions(precision="16").check(model)


def test_an_image_over_max_pixels_is_refused_from_its_header(model, tmp_path, monkeypatch):
    inputs = _make_inputs(tmp_path / "in")
    path = inputs["rgb.png"]
    with Image.open(path) as img:
        pixels = img.width * img.height
    decoded = []
    monkeypatch.setattr(prediction, "decode_image", lambda p: decoded.append(p))
    out = tmp_path / "out"
    results, failures = predict_images(model, [path], out, PredictOptions(max_pixels=pixels - 1))
    assert not results and not decoded and not list(out.iterdir())
    assert f"LR pixels is more than max_pixels={pixels - 1}: raise max_pixels" in failures[0].reason
    # With save_stages the T+1 stage images count: 2 here (one stage).
    options = PredictOptions(max_pixels=2 * pixels - 1, save_stages=True)
    _, failures = predict_images(model, [path], out, options)
    assert (
        "× 2 images (save_stages)" in failures[0].reason
        and "save_stages=false" in failures[0].reason
    )


def test_an_image_beyond_what_is_decoded_at_all_is_refused_in_one_line(model, tmp_path):
    """A PNG header of 20000×10000 (a few bytes on disk): refused from the header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 20000, 10000, 8, 2, 0, 0, 0)
    path = tmp_path / "huge.png"
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    results, failures = predict_images(model, [path], tmp_path / "out", PredictOptions())
    assert not results and "LR pixels, beyond what is decoded at all" in failures[0].reason


def _shared_data() -> Path:
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    return Path(os.environ.get("KXNET_SHARED_DATA", default))


@pytest.mark.slow
def test_realsrset_images_with_the_authors_weights_tiled_and_untiled(tmp_path):
    folder = _shared_data() / "RealSRSet"
    if not folder.is_dir():
        pytest.skip(f"RealSRSet is not at {folder} (set KXNET_SHARED_DATA)")
    model = load_model(FIXTURE)
    inputs = [folder / "chip.png", folder / "comic1.png"]
    tiled = PredictOptions(tile_size=100, kernel_crop=1024)
    results, failures = predict_images(model, inputs, tmp_path / "tiled", tiled)
    predict_images(model, inputs, tmp_path / "whole", PredictOptions())
    assert not failures and [r.tiles for r in results] == [9, 9]
    for path in inputs:
        a = _hr(tmp_path / "tiled" / f"{path.stem}.png").astype(int)
        b = _hr(tmp_path / "whole" / f"{path.stem}.png").astype(int)
        assert a.shape == (240, 240, 3) and np.abs(a - b).max() <= 1
        kernel = np.load(tmp_path / "whole" / f"{path.stem}_kernel.npy")
        assert abs(float(kernel.sum(dtype=np.float64)) - 1) < 1e-5


def test_a_file_appearing_during_the_run_is_never_replaced(model, tmp_path):
    """Another program writes the planned output name while the network runs: the run keeps that
    file, writes nothing of this image (all of its outputs or none) and says why."""
    inputs = _make_inputs(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    theirs = out / "rgb.png"

    def another_program(*_):
        if not theirs.exists():
            theirs.write_bytes(b"written by another program")

    hook = model.register_forward_hook(another_program)
    try:
        results, failures = predict_images(
            model, [inputs["rgb.png"]], out, PredictOptions(save_stages=True)
        )
    finally:
        hook.remove()
    assert not results
    assert "appeared in the output folder during the run and was not replaced" in (
        failures[0].reason
    )
    assert [p.name for p in out.iterdir()] == ["rgb.png"]
    assert theirs.read_bytes() == b"written by another program"
