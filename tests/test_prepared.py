"""Prepared training folders (kxnet.data.prepared): the same crops as the images they come from,
atomic and resumable preparation, checked folders, and the command."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from kxnet.data.__main__ import main
from kxnet.data.hr_dataset import HRImageFolder
from kxnet.data.prepared import MANIFEST, is_prepared, prepare_folder, prepared_images
from kxnet.errors import ImageFolderError


def _quiet(_):
    pass


@pytest.fixture
def source(tmp_path):
    """Five 8-bit images in two folders, one EXIF-rotated (taller than wide once turned)."""
    root = tmp_path / "src"
    rng = np.random.default_rng(0)
    for k in range(5):
        folder = root / ("b" if k >= 3 else "a")
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(rng.integers(0, 256, (40 + 4 * k, 52, 3), dtype=np.uint8))
        exif = image.getexif()
        if k == 1:
            exif[0x0112] = 6  # rotate 90° clockwise on reading
        image.save(folder / f"img{k}.png", exif=exif)
    return root


def test_prepared_folder_gives_the_crops_of_its_images(source, tmp_path):
    dest = tmp_path / "prepared"
    assert prepare_folder(source, dest, report=_quiet) == (5, 0)
    assert is_prepared(dest) and not is_prepared(source)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.npy")) == [
        "a/img0.png.npy", "a/img1.png.npy", "a/img2.png.npy", "b/img3.png.npy", "b/img4.png.npy"
    ]  # fmt: skip
    assert np.load(dest / "a" / "img1.png.npy").shape == (52, 44, 3)  # EXIF orientation applied
    images = HRImageFolder(source, 24, seed=4, cache_images=False, repeat=3)
    prepared = HRImageFolder(dest, 24, seed=4, repeat=3)
    assert prepared.prepared and not prepared.cached
    assert [p.name for p in prepared.images] == [f"{p.name}.npy" for p in images.images]
    for i in range(2 * len(images)):
        a, b = images[i]["hr"], prepared[i]["hr"]
        assert b.dtype == torch.uint8 and torch.equal(a, b)


def test_preparation_resumes_and_redoes_changed_sources(source, tmp_path):
    dest = tmp_path / "prepared"
    prepare_folder(source, dest, report=_quiet)
    manifest = json.loads((dest / MANIFEST).read_text())
    manifest["images"] = manifest["images"][:3]
    manifest["complete"] = False
    (dest / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ImageFolderError, match="not completely prepared .*prepare .* again"):
        HRImageFolder(dest, 24)
    Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(source / "a" / "img0.png")
    assert prepare_folder(source, dest, report=_quiet) == (3, 2)  # img0 changed, 2 not listed
    assert np.load(dest / "a" / "img0.png.npy").shape == (30, 30, 3)
    assert not list(dest.rglob("*.partial"))
    assert len(prepared_images(dest, "verify")) == 5


def test_damaged_prepared_folders_are_refused_with_the_fix(source, tmp_path):
    dest = tmp_path / "prepared"
    prepare_folder(source, dest, report=_quiet)
    (dest / "b" / "img4.png.npy").write_bytes(b"\x93NUMPY")
    HRImageFolder(dest, 24, check="header")  # the manifest alone is trusted
    with pytest.raises(ImageFolderError, match=r"img4\.png\.npy is missing or truncated: run"):
        HRImageFolder(dest, 24, check="verify")
    (dest / MANIFEST).write_text("{")
    with pytest.raises(ImageFolderError, match="not readable"):
        HRImageFolder(dest, 24)


def test_unreadable_sources_are_named_and_the_rest_prepared(source, tmp_path):
    (source / "a" / "bad.png").write_bytes(b"not an image")
    dest = tmp_path / "prepared"
    with pytest.raises(ImageFolderError, match=r"1 unreadable image file.*bad\.png"):
        prepare_folder(source, dest, report=_quiet)
    assert len(list(dest.rglob("*.npy"))) == 5
    assert not json.loads((dest / MANIFEST).read_text())["complete"]


def test_sixteen_bit_images_stay_sixteen_bit(tmp_path):
    src = tmp_path / "src16"
    src.mkdir()
    Image.fromarray(np.full((32, 32), 0x1234, dtype=np.uint16)).save(src / "g.png")
    prepare_folder(src, tmp_path / "p16", report=_quiet)
    assert np.load(tmp_path / "p16" / "g.png.npy").dtype == np.uint16
    patch = HRImageFolder(tmp_path / "p16", 16)[0]["hr"]
    assert torch.allclose(patch, torch.full_like(patch, 0x1234 / 65535))


def test_the_prepare_command(source, tmp_path, capsys):
    assert main(["prepare", str(source), str(source / "inside")]) != 0
    assert "must lie outside SRC" in capsys.readouterr().err
    assert main(["prepare", str(source), str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "5 images" in out and f"paths.train_dir={tmp_path / 'out'}" in out


def _image(path, height, width, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), value, np.uint8)).save(path)


@pytest.mark.parametrize(
    "names",
    [
        ["a.png", "a.jpg"],  # one stem, two formats
        ["a.PNG", "a.png", "A.png"],  # names that differ only in case
        ["a.png", "a.png.2.png", "A.PNG"],  # a name like a disambiguated one
        ["x/a.png", "X/a.png", "x/a.bmp"],  # nested folders that differ only in case
    ],
)
def test_colliding_names_are_all_prepared_and_all_trained_on(names, tmp_path):
    src = tmp_path / "src"
    for k, name in enumerate(names):
        _image(src / name, 24 + 4 * k, 32, 10 * (k + 1))
    if len({p.relative_to(src).as_posix() for p in src.rglob("*.*")}) < len(names):
        pytest.skip("this file system ignores case")
    dest = tmp_path / "prepared"
    assert prepare_folder(src, dest, report=_quiet) == (len(names), 0)
    files = [e["file"] for e in json.loads((dest / MANIFEST).read_text())["images"]]
    assert len({f.casefold() for f in files}) == len(names)
    infos = prepared_images(dest, "decode")  # every array as its manifest entry says
    assert sorted((i.height, i.width) for i in infos) == sorted(
        (24 + 4 * k, 32) for k in range(len(names))
    )
    dataset = HRImageFolder(dest, 16, check="verify", augment=False)
    assert len(dataset.images) == len(names)
    seen = {int(dataset._image(k)[0, 0, 0]) for k in range(len(dataset.images))}
    assert seen == {10 * (k + 1) for k in range(len(names))}  # every image's own pixels
    assert main(["check", str(dest), "--patch-size", "16"]) == 0


def test_a_resumed_folder_of_the_earlier_scheme_is_prepared_again_and_cleaned(source, tmp_path):
    dest = tmp_path / "prepared"
    prepare_folder(source, dest, report=_quiet)
    manifest = json.loads((dest / MANIFEST).read_text())
    for entry in manifest["images"]:  # the earlier scheme: a/img0.png stored as a/img0.npy
        old = entry["file"].replace(".png.npy", ".npy")
        (dest / entry["file"]).rename(dest / old)
        entry["file"] = old
    (dest / MANIFEST).write_text(json.dumps(manifest))
    assert prepare_folder(source, dest, report=_quiet) == (5, 0)
    assert sorted(p.name for p in dest.rglob("*.npy"))[0] == "img0.png.npy"
    assert len(list(dest.rglob("*.npy"))) == 5


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ({"height": 64}, r"holds a 40×52×3 uint8 array but the manifest says 64×52×3 uint8"),
        ({"dtype": "uint16"}, r"missing or truncated|manifest says 40×52×3 uint16"),
        ({"height": 1.5}, r"height=1\.5 of a/img0\.png\.npy is not a size"),
        ({"width": -3}, r"width=-3 of .* is not a size"),
        ({"width": 10**12}, r"width=1000000000000 .* is not a size"),
        ({"dtype": "float64"}, r"dtype='float64' .* is not uint8 or uint16"),
        ({"file": "../../elsewhere.npy"}, r"is not a \.npy file inside the folder"),
        ({"file": "/etc/passwd"}, r"is not a \.npy file inside the folder"),
        ({"file": "a/img1.png.npy"}, r"gives a/img0\.png and a/img1\.png the one file"),
    ],
)
def test_the_manifest_is_checked_against_itself_and_the_arrays(change, pattern, source, tmp_path):
    dest = tmp_path / "prepared"
    prepare_folder(source, dest, report=_quiet)
    manifest = json.loads((dest / MANIFEST).read_text())
    manifest["images"][0].update(change)
    (dest / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ImageFolderError, match=pattern):
        prepared_images(dest, "verify")
    assert main(["check", str(dest), "--patch-size", "16"]) == 2
