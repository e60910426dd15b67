"""The files of a prediction run: the inputs found, the output names planned for the whole run
before anything is written, and the outputs written (the SR image in strips of tile rows, the
kernels as ``.npy`` and pictures, the stages).

Per input ``NAME.ext``: ``NAME.png`` (the SR image; 16-bit if the input is), ``NAME_kernel.npy``
(the final kernel, p×p float32), ``NAME_kernel.png`` (the kernel scaled to its maximum and
enlarged, titled), and with ``save_stages`` the folder ``NAME_stages/`` (``x_00.png`` …,
``k_00.png`` …, ``kernels.png``, ``kernels.npy``). Nothing in the output folder is ever replaced:
:func:`output_names` gives an image whose name is taken ``NAME_2`` (``NAME_3``, …).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from kxnet.atomic import AtomicFiles
from kxnet.data.images import IMAGE_SUFFIXES, list_images
from kxnet.errors import PredictError
from kxnet.pictures import kernel_strip, text_band
from kxnet.predict.png import PngStreamWriter
from kxnet.startup import check_writable

__all__ = [
    "NOT_FINITE",
    "find_inputs",
    "output_names",
    "check_output_dir",
    "quantise",
    "kernel_picture",
    "to_image",
    "save_picture",
    "save_npy",
    "Strips",
    "write_kernels",
]

_KERNEL_PNG_SIZE = 256
NOT_FINITE = (
    "the network's {what} is not finite (NaN or inf), so nothing of this image was written: "
    "check the checkpoint, or try precision=32"
)


def find_inputs(path: Path) -> list[Path]:
    """The image files of ``input``: the file itself, or the images directly in a folder."""
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise PredictError(
                f"input={path} holds no image files ({', '.join(IMAGE_SUFFIXES)}): "
                "point input at an image or a folder of images"
            )
        return files
    if not path.exists():
        raise PredictError(f"input={path} does not exist: give an image file or a folder")
    return [path]


def _outputs(stem: str, save_stages: bool) -> list[str]:
    """The names an image of output stem ``stem`` produces in the output folder."""
    names = [f"{stem}.png", f"{stem}_kernel.npy", f"{stem}_kernel.png"]
    return [*names, f"{stem}_stages"] if save_stages else names


def output_names(
    inputs: Sequence[Path], existing: Sequence[str] = (), save_stages: bool = False
) -> dict[Path, str]:
    """The output stem of each input, planned for the whole run before anything is written.

    An input's own stem, or ``stem_ext`` where several inputs share a stem (without regard to
    case); then ``_2``, ``_3``, … until none of the names the image produces (the SR image, the
    kernel files, the stages folder) is one that an earlier input produces or that ``existing``
    (what the output folder holds) has, compared without regard to case.
    """
    shared: dict[str, int] = {}
    for path in inputs:
        shared[path.stem.casefold()] = shared.get(path.stem.casefold(), 0) + 1
    taken = {name.casefold() for name in existing}
    names: dict[Path, str] = {}
    for path in inputs:
        base = path.stem
        if shared[base.casefold()] > 1:
            base = f"{base}_{path.suffix.lstrip('.').lower()}"
        stem, n = base, 2
        while any(name.casefold() in taken for name in _outputs(stem, save_stages)):
            stem, n = f"{base}_{n}", n + 1
        taken.update(name.casefold() for name in _outputs(stem, save_stages))
        names[path] = stem
    return names


def _places(path: Path) -> set[Path]:
    """Where an input is: its path with links resolved, and its own folder's (the link's)."""
    link = Path(os.path.abspath(path))
    return {path.resolve(), link.parent.resolve() / link.name}


def check_output_dir(output_dir: Path, inputs: Sequence[Path]) -> None:
    """Refuse an output folder that holds an input, or a link to one, at any depth.

    Creates the folder and checks that it is writable, so that nothing is computed in vain.
    """
    output_dir = output_dir.resolve()
    for source in inputs:
        for place in _places(source):
            if place.parent == output_dir:
                raise PredictError(
                    f"output={output_dir} is the folder of the input images ({place}): choose "
                    "another output folder, so that no input can be overwritten"
                )
            if output_dir in place.parents:
                raise PredictError(
                    f"input {place} lies inside output={output_dir}: choose an output folder "
                    "that holds no input"
                )
    check_writable(output_dir, "output")


def quantise(x: Tensor, bit_depth: int) -> np.ndarray:
    """1×3×H×W float → H×W×3 uint8 or uint16, clamped and rounded (one temporary copy)."""
    q = x[0].float().clamp(0, 1).mul_(65535 if bit_depth == 16 else 255).round_()
    q = q.to(torch.int32 if bit_depth == 16 else torch.uint8).permute(1, 2, 0).cpu().numpy()
    return q.astype(np.uint16) if bit_depth == 16 else q


def kernel_picture(k: Tensor, title: str) -> Image.Image:
    """A p×p kernel as an 8-bit gray picture: scaled to its maximum, enlarged without blurring,
    ``title`` under it."""
    k = k.detach().cpu().double()
    pixels = (k / k.max().clamp_min(1e-12) * 255).round().to(torch.uint8).numpy()
    factor = max(1, _KERNEL_PNG_SIZE // k.shape[-1])
    kernel = np.kron(pixels, np.ones((factor, factor), dtype=np.uint8))
    band = (text_band([title], [kernel.shape[1]]).mean(0) * 255).round().to(torch.uint8)
    return Image.fromarray(np.concatenate([kernel, band.numpy()]))


def to_image(picture: Tensor) -> Image.Image:
    """A 3×H×W picture in [0, 1] → an 8-bit RGB image."""
    return Image.fromarray(
        (picture.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    )


def save_picture(img: Image.Image, path: Path) -> None:
    with open(path, "wb") as f:
        img.save(f, format="PNG")


def save_npy(array: np.ndarray, path: Path) -> None:
    with open(path, "wb") as f:
        np.save(f, array)


class Strips:
    """PNG writers (one per kept stage) fed a strip of tile rows at a time; LR coordinates in."""

    def __init__(self, files: Sequence, width: int, height: int, scale: int, bit_depth: int):
        self.writers = [PngStreamWriter(f, width, height, bit_depth=bit_depth) for f in files]
        self.width, self.height, self.scale, self.bit_depth = width, height, scale, bit_depth
        self.buffers: list[np.ndarray] = []
        self.rows_done = 0

    def start(self, core: tuple[int, int, int, int]) -> None:
        """Begin the strip of a row of tiles (HR rows past the output's height are dropped)."""
        rows = min((core[2] - core[0]) * self.scale, self.height - self.rows_done)
        dtype = np.uint16 if self.bit_depth == 16 else np.uint8
        self.buffers = [np.empty((rows, self.width, 3), dtype) for _ in self.writers]

    def paste(self, parts: Sequence[Tensor], left: int) -> None:
        """Put a tile's per-stage HR cores (1×3×h×w) at LR column ``left`` of the strip."""
        left *= self.scale
        if not all(bool(torch.isfinite(part).all()) for part in parts):
            raise ArithmeticError(NOT_FINITE.format(what="SR image"))
        for buf, part in zip(self.buffers, parts, strict=True):
            q = quantise(part, self.bit_depth)[: buf.shape[0], : self.width - left]
            buf[:, left : left + q.shape[1]] = q

    def finish(self) -> None:
        for writer, buf in zip(self.writers, self.buffers, strict=True):
            writer.write(buf)
        self.rows_done += self.buffers[0].shape[0]

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


def write_kernels(
    outputs: AtomicFiles, stem: str, stage_kernels: Sequence[Tensor], save_stages: bool
) -> list[Path]:
    """The final kernel (.npy and picture) and, with ``save_stages``, every stage's kernel.

    Returns the paths for the stage images (``x_00.png`` …), empty without ``save_stages``.
    """
    kernels = torch.cat(list(stage_kernels)).float().cpu()
    last = len(kernels) - 1
    size = "×".join(str(n) for n in kernels.shape[-2:])
    save_npy(kernels[-1].numpy(), outputs.path(f"{stem}_kernel.npy"))
    title = f"estimated kernel {size}, stage {last}"
    save_picture(kernel_picture(kernels[-1], title), outputs.path(f"{stem}_kernel.png"))
    if not save_stages:
        return []
    stage_dir = outputs.path(f"{stem}_stages")
    stage_dir.mkdir()
    save_npy(kernels.numpy(), stage_dir / "kernels.npy")
    for t, k in enumerate(kernels):
        save_picture(kernel_picture(k, f"stage {t} of {last}"), stage_dir / f"k_{t:02d}.png")
    save_picture(to_image(kernel_strip(kernels)), stage_dir / "kernels.png")
    return [stage_dir / f"x_{t:02d}.png" for t in range(len(kernels))]
