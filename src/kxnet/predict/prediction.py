"""Super-resolving real LR images without ground truth, one file at a time.

For each image: the kernel is estimated once, by the full network on a central crop of at most
``kernel_crop``² LR pixels (the whole image if it is smaller; a crop, not a downscaled copy, so
that the network sees the image's own LR statistics). The per-stage kernels of that run are then
given to X-net tile by tile (:mod:`kxnet.predict.tiling`), so that memory is bounded by
``tile_size`` whatever the image size, and the tiled result equals an untiled run with the same
kernels.
Rows of tiles are written as they are done (:class:`~kxnet.predict.png.PngStreamWriter`).

The files (the inputs, the output names, the outputs written) are :mod:`kxnet.predict.files`'s;
every file of an image is written under a temporary name and renamed when all of them are
complete.

Nothing in the output folder is ever replaced or removed: the output names of the whole run
are planned before anything is written (:func:`~kxnet.predict.files.output_names`), unique among
themselves and against what the folder holds, compared without regard to case; an image whose
name is taken gets ``NAME_2`` (``NAME_3``, …), noted in the summary. The inputs may not lie in
the output folder (nor be links from it). An image larger than ``max_pixels`` is refused from
its header, before it is decoded.
"""

from __future__ import annotations

import os
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from PIL import Image
from rich.console import Console
from rich.progress import Progress, TextColumn
from torch import Tensor

from kxnet.atomic import AtomicFiles, remove_leftovers
from kxnet.data.images import (
    decode_image,
    exif_orientation,
    to_float,
)
from kxnet.ensemble import SelfEnsemble
from kxnet.errors import USER_ERRORS, ImageReadError, Interrupted, PredictError, report_error
from kxnet.hardware import PRECISIONS, inference_autocast
from kxnet.models import asked_properties, build_model
from kxnet.nn.kxnet import KXNet
from kxnet.predict.files import (
    NOT_FINITE,
    Strips,
    check_output_dir,
    find_inputs,
    output_names,
    quantise,
    save_npy,
    save_picture,
    to_image,
    write_kernels,
)
from kxnet.predict.kernel_map import kernel_map_picture, tiled_kernel_forward
from kxnet.predict.png import PngStreamWriter
from kxnet.predict.tiling import (
    central_crop,
    min_input_size,
    plan_tiles,
    receptive_radius,
    run_tile,
)
from kxnet.schema.commands import PredictConfig
from kxnet.startup import check_device

if TYPE_CHECKING:
    from kxnet.onnx_network import OnnxKXNet

__all__ = [
    "run",
    "PredictOptions",
    "ImageResult",
    "Failure",
    "predict_image",
    "predict_images",
    "summary",
    "MAX_TILE",
    "BACKENDS",
    "KERNEL_MODES",
]

# The largest tile.size and kernel_crop: the network's memory grows with their square (about
# 2 GB of activations per 1024² LR pixels at x4), while the image size costs only strips.
MAX_TILE = 4096
KERNEL_MODES = ("global", "tiled")


# torch: the network in PyTorch (tiles, any device and precision); onnx: a model written by
# kxnet-export, in onnxruntime on the CPU, each image in one piece.
BACKENDS = ("torch", "onnx")


@dataclass(frozen=True)
class PredictOptions:
    """How images are restored.

    tile_size: the largest LR side fed to the network at once (bounds the memory).
    overlap: LR pixels of context around each tile; None: the receptive radius (exact seams).
    kernel_crop: the side of the central LR crop on which the kernel is estimated.
    save_stages: also write every stage's image and kernel.
    max_pixels: the largest LR image (width × height; T+1 times that with save_stages, whose
        output strips are kept per stage) accepted; larger ones are refused from their header.
    precision: ``32``, or ``bf16`` (the proximal networks in bfloat16, the data terms in
        float32; see the README for what it costs in PSNR).
    kernel: ``global`` (one kernel per image, from the central crop) or ``tiled`` (a kernel
        per tile, :mod:`kxnet.predict.kernel_map`; the SR image is assembled in memory).
    self_ensemble: the x8 self-ensemble (:mod:`kxnet.ensemble`), eight times the time.
    """

    tile_size: int = 1024
    overlap: int | None = None
    kernel_crop: int = 1024
    save_stages: bool = False
    max_pixels: int = 64_000_000
    precision: str = "32"
    kernel: str = "global"
    self_ensemble: bool = False

    def resolved_overlap(self, model: KXNet) -> int:
        if self.overlap is not None:
            return self.overlap
        return receptive_radius(model.scale, model.kernel_size, model.num_stages)

    def check(self, model: KXNet) -> None:
        """Raise :class:`PredictError` unless the options fit the model."""
        smallest = min_input_size(model.scale, model.kernel_size, model.num_stages)
        overlap = self.resolved_overlap(model)
        for key, value in (("tile.size", self.tile_size), ("kernel_crop", self.kernel_crop)):
            if value > MAX_TILE:
                raise PredictError(
                    f"{key}={value} is more than {MAX_TILE} LR pixels: the network's memory "
                    f"grows with its square (any image size fits in tiles); use at most {MAX_TILE}"
                )
        if self.max_pixels < 1:
            raise PredictError(
                f"max_pixels={self.max_pixels} must be a positive number of LR pixels"
            )
        if overlap < 0:
            raise PredictError(f"tile.overlap={overlap} must be >= 0 (or auto)")
        if self.precision not in PRECISIONS:
            raise PredictError(
                f"precision={self.precision} is not a precision: use precision=32 or precision=bf16"
            )
        if self.kernel not in KERNEL_MODES:
            raise PredictError(
                f"kernel={self.kernel} is not a mode: use kernel=global or kernel=tiled"
            )
        if self.kernel == "tiled" and self.save_stages:
            raise PredictError(
                "kernel=tiled writes the final image and the kernel map only: set save_stages=false"
            )
        if self.kernel_crop < smallest:
            raise PredictError(
                f"kernel_crop={self.kernel_crop} is below the network's smallest input "
                f"({smallest} LR pixels): raise kernel_crop"
            )
        core = self.tile_size - 2 * overlap
        if core < 2 * smallest:
            raise PredictError(
                f"tile.size={self.tile_size} leaves a core of {core} LR pixels inside an overlap "
                f"of {overlap} (at least {2 * smallest} needed): raise tile.size to at least "
                f"{2 * overlap + 2 * smallest} or lower tile.overlap"
            )


@dataclass
class ImageResult:
    """One restored image: its outputs (final names) and what was done to the input."""

    path: Path
    outputs: list[Path]
    size: tuple[int, int]
    tiles: int
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Failure:
    """An input that was skipped, and why (one line)."""

    path: Path
    reason: str


def _notes(path: Path) -> list[str]:
    """What reading the file did to it, from its header: gray, alpha, palette, EXIF rotation."""
    with Image.open(path) as img:
        raw = img.tile[0].args if img.tile else ""
        raw = raw if isinstance(raw, str) else str(raw[0]) if raw else ""
        alpha = img.mode in ("RGBA", "LA", "PA") or raw.startswith(("RGBA", "LA"))
        notes = []
        if img.mode in ("1", "L", "LA", "I", "F") or img.mode.startswith("I;16"):
            notes.append("gray input, RGB output")
        if alpha or (img.mode == "P" and "transparency" in img.info):
            notes.append("alpha channel dropped")
        if img.mode == "P":
            notes.append("palette expanded")
        if exif_orientation(img) != 1:
            notes.append("EXIF orientation applied")
    return notes


def _check_size(path: Path, options: PredictOptions, images: int) -> None:
    """ImageReadError if the image, from its header, is over ``max_pixels`` (``images`` output
    images per pixel: T+1 with save_stages)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
    except Image.DecompressionBombError:
        width = height = None  # over Pillow's own limit (about 179 million pixels)
    except (OSError, ValueError, SyntaxError):
        return  # decoding says what is wrong with the file
    if width is None:
        raise ImageReadError(
            path,
            f"more than {2 * Image.MAX_IMAGE_PIXELS} LR pixels, beyond what is decoded at all "
            f"(max_pixels={options.max_pixels}): crop or split the image",
        )
    pixels = width * height * images
    if pixels > options.max_pixels:
        counted = f" × {images} images (save_stages)" if images > 1 else ""
        raise ImageReadError(
            path,
            f"{width}×{height} LR pixels{counted} is more than max_pixels="
            f"{options.max_pixels}: raise max_pixels (the memory of the decoded image and of "
            "the output strips grows with it)"
            + (", or set save_stages=false" if images > 1 else ", or crop the image"),
        )


def _read(path: Path) -> tuple[Tensor, int, list[str]]:
    """The LR image as stored (1×3×h×w), the output's bit depth and notes; ImageReadError.

    The image stays uint8, uint16 or float32 as in the file (a quarter of the memory of float
    for 8-bit files); 16-bit and float files give 16-bit outputs.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = decode_image(path)
        notes = _notes(path)
    bit_depth = 8 if image.dtype == torch.uint8 else 16
    if bit_depth == 16:
        notes.append("16-bit output")
    return image.unsqueeze(0), bit_depth, notes


def _pad_to(image: Tensor, smallest: int) -> Tensor:
    """Edge-pad a 1×3×h×w image (as float) at the bottom and right to at least smallest²."""
    height, width = image.shape[-2:]
    pad = (0, max(0, smallest - width), 0, max(0, smallest - height))
    return F.pad(to_float(image), pad, mode="replicate")


def _predict_tiled(
    model: KXNet,
    lr: Tensor,
    outputs: AtomicFiles,
    stem: str,
    options: PredictOptions,
    bit_depth: int,
    size: tuple[int, int],
) -> None:
    """``kernel=tiled``: the SR image (``size``, the LR's before any padding) of kernels
    estimated per tile, ``NAME_kernel.npy`` (rows×cols×p×p, a kernel per tile) and
    ``NAME_kernel.png`` (the kernel map)."""
    (height, width), s = size, model.scale
    result = tiled_kernel_forward(
        model, to_float(lr), options.tile_size, options.resolved_overlap(model)
    )
    kernels = result.kernels[:, :, 0].float().cpu()
    for what, value in (("kernel estimate", kernels), ("SR image", result.sr)):
        if not bool(torch.isfinite(value).all()):
            raise ArithmeticError(NOT_FINITE.format(what=what))
    save_npy(kernels.numpy(), outputs.path(f"{stem}_kernel.npy"))
    picture = kernel_map_picture(to_float(lr[0]).cpu(), kernels, result.tiles)
    save_picture(to_image(picture), outputs.path(f"{stem}_kernel.png"))
    with open(outputs.path(f"{stem}.png"), "wb") as f:
        writer = PngStreamWriter(f, width * s, height * s, bit_depth=bit_depth)
        writer.write(quantise(result.sr[..., : height * s, : width * s], bit_depth))
        writer.close()


def predict_image(
    model: KXNet,
    path: Path,
    output_dir: Path,
    stem: str,
    options: PredictOptions,
    on_tile: Callable[[int, int], None] | None = None,
) -> ImageResult:
    """Restore one LR image file into ``output_dir``; raises on failure, leaving nothing behind.

    ``on_tile(done, total)`` is called after each tile. Images smaller than the network's
    smallest input (the reflect padding of the p×p kernel) are edge-padded and cropped back.
    """
    start = time.perf_counter()
    device = _device(model)
    if options.self_ensemble:
        model = SelfEnsemble(model)
    _check_size(path, options, model.num_stages + 1 if options.save_stages else 1)
    lr, bit_depth, notes = _read(path)
    height, width = lr.shape[-2:]
    smallest = min_input_size(model.scale, model.kernel_size, model.num_stages)
    if height < smallest or width < smallest:
        lr = _pad_to(lr, smallest)
        notes.append(f"edge-padded from {height}×{width} to {smallest}×{smallest}, cropped back")
    tiles = plan_tiles(*lr.shape[-2:], options.tile_size, options.resolved_overlap(model))
    count = sum(len(row) for row in tiles)
    outputs = AtomicFiles(output_dir, replace=False)
    cast = inference_autocast(device, options.precision)
    if options.kernel == "tiled":
        with cast, outputs:
            _predict_tiled(model, lr.to(device), outputs, stem, options, bit_depth, (height, width))
            written = outputs.commit()
        notes.append(f"a kernel for each of {count} tiles")
        seconds = time.perf_counter() - start
        return ImageResult(path, written, (height, width), count, notes, seconds)
    with torch.inference_mode(), cast, outputs, ExitStack() as files:
        crop = to_float(central_crop(lr, options.kernel_crop)).to(device)
        estimate = model(crop)
        stage_kernels = estimate.kernels
        if not all(bool(torch.isfinite(k).all()) for k in stage_kernels):
            raise ArithmeticError(NOT_FINITE.format(what="kernel estimate"))
        # The crop's images are the result only when the crop is the whole image, in one tile.
        whole = estimate.images if crop.shape[-2:] == lr.shape[-2:] and count == 1 else None
        del estimate, crop
        if options.kernel_crop < max(lr.shape[-2:]):
            crop_h, crop_w = (min(n, options.kernel_crop) for n in lr.shape[-2:])
            notes.append(f"kernel estimated on the central {crop_h}×{crop_w} crop")
        sr_path = outputs.path(f"{stem}.png")
        images = write_kernels(outputs, stem, stage_kernels, options.save_stages) or [sr_path]
        strips = Strips(
            [files.enter_context(open(p, "wb")) for p in images],
            width * model.scale,
            height * model.scale,
            model.scale,
            bit_depth,
        )
        done = 0
        for row in tiles:
            strips.start(row[0].core)
            for tile in row:
                if whole is not None:
                    parts = whole
                else:
                    window = to_float(tile.window(lr)).to(device)
                    parts = run_tile(model, window, tile, stage_kernels[1:])
                strips.paste(parts if options.save_stages else parts[-1:], tile.core[1])
                done += 1
                if on_tile is not None:
                    on_tile(done, count)
            strips.finish()
        strips.close()
        files.close()
        if options.save_stages:
            shutil.copyfile(images[-1], sr_path)
        written = outputs.commit()
    seconds = time.perf_counter() - start
    return ImageResult(path, written, (height, width), count, notes, seconds)


def _reason(err: BaseException) -> str:
    if isinstance(err, ImageReadError):
        return err.reason
    if isinstance(err, torch.OutOfMemoryError):
        return "out of memory: lower tile.size (and kernel_crop)"
    if isinstance(err, FileExistsError):
        return (
            f"{err.filename} appeared in the output folder during the run and was not replaced; "
            "nothing of this image was written: run it again"
        )
    text = " ".join(str(err).split())
    known = isinstance(err, RuntimeError | ValueError | OSError | ArithmeticError)
    return text if known and text else f"{type(err).__name__}: {text}".rstrip(": ")


def predict_images(
    model: KXNet,
    inputs: Sequence[Path],
    output_dir: Path,
    options: PredictOptions,
    console: Console | None = None,
) -> tuple[list[ImageResult], list[Failure]]:
    """Restore every input into ``output_dir`` (created); a failing input is reported, skipped.

    Nothing already in ``output_dir`` is replaced: the names are planned against what it holds
    (:func:`output_names`). A progress bar shows the images (and the tiles of a tiled image) on
    ``console``.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    names = output_names(inputs, os.listdir(output_dir), options.save_stages)
    results: list[ImageResult] = []
    failures: list[Failure] = []
    columns = (*Progress.get_default_columns(), TextColumn("{task.fields[name]}"))
    with Progress(*columns, console=console, transient=True) as bar:
        images = bar.add_task("images", total=len(inputs), name="")
        tiles = bar.add_task("tiles", total=None, visible=False, name="")

        def on_tile(done: int, total: int) -> None:
            bar.update(tiles, completed=done, total=total, visible=total > 1)

        for path in inputs:
            bar.update(images, name=path.name)
            try:
                result = predict_image(model, path, output_dir, names[path], options, on_tile)
            except KeyboardInterrupt as err:
                raise Interrupted(
                    f"stopped by Ctrl-C at {path.name}: {len(results)} of {len(inputs)} images "
                    f"written to {output_dir}, each with all its files; nothing of {path.name} "
                    "or the images after it"
                ) from err
            except Exception as err:  # one image's failure never stops the run
                result = None
                failures.append(Failure(path, _reason(err)))
                bar.console.print(
                    f"skipped {path}: {failures[-1].reason}", markup=False, soft_wrap=True
                )
                if isinstance(err, torch.OutOfMemoryError) and torch.cuda.is_available():
                    torch.cuda.empty_cache()
            if result is not None:
                if names[path] != path.stem:
                    result.notes.insert(0, f"outputs named {names[path]} (name shared or taken)")
                results.append(result)
            bar.update(tiles, visible=False)
            bar.advance(images)
    return results, failures


def summary(results: Sequence[ImageResult], failures: Sequence[Failure], output_dir: Path) -> str:
    """The closing report: how many images were written where, then each failure on a line."""
    total = len(results) + len(failures)
    tiled = sum(r.tiles > 1 for r in results)
    lines = [
        f"Wrote {len(results)} of {total} images to {output_dir}"
        + (f" ({tiled} tiled)" if tiled else "")
    ]
    for result in results:
        if result.notes:
            lines.append(f"  {result.path.name}: {'; '.join(result.notes)}")
    if failures:
        lines.append(f"{len(failures)} failed:")
        lines += [f"  {f.path}: {f.reason}" for f in failures]
    return "\n".join(lines)


def _device(model: KXNet | OnnxKXNet) -> torch.device:
    if not isinstance(model, KXNet):  # onnxruntime, on the CPU
        return torch.device("cpu")
    return next(iter(model.parameters()), model.k0).device


def _onnx_model(config: PredictConfig, options: PredictOptions) -> OnnxKXNet:
    """backend=onnx: the exported model of ckpt_path, run by onnxruntime on the CPU."""
    if not config.ckpt_path or config.weights:
        raise PredictError(
            "backend=onnx needs ckpt_path=MODEL.onnx (written by kxnet-export), not weights=…"
        )
    if (
        options.precision != "32"
        or options.save_stages
        or str(config.device) not in ("auto", "cpu")
    ):
        raise PredictError(
            "backend=onnx runs the final stage in float32 on the CPU: drop precision, "
            "save_stages and device, or use backend=torch"
        )
    if options.kernel != "global" or options.self_ensemble:
        raise PredictError(
            "backend=onnx runs one kernel per image without the self-ensemble: drop kernel and "
            "self_ensemble, or use backend=torch"
        )
    from kxnet.onnx_network import OnnxKXNet  # onnx and onnxruntime: a second to import

    model = OnnxKXNet(Path(config.ckpt_path))
    have = {
        "scale": model.scale,
        "stages": model.num_stages,
        "kernel_size": model.kernel_size,
        "setting": model.setting,
    }
    for key, value in asked_properties(config).items():
        if value is not None and value != have[key]:
            raise PredictError(f"{key}={value} does not match {model.path} ({key} {have[key]})")
    return model


def _model(config: PredictConfig, device: torch.device) -> KXNet:
    model = build_model(
        config.ckpt_path,
        config.weights,
        asked_properties(config),
        device,
        root=config.paths.root_dir,
    )
    if model is None:
        raise PredictError(
            "ckpt_path is not set: pass a checkpoint (ckpt_path=…), a model name "
            "(weights=official/setting2_x4, weights=latest) or model.net.stages=0 for the "
            "bicubic baseline"
        )
    model = model.to(device).eval()
    model.compile_stages(config.model.net.compile)
    return model


def _options(config: PredictConfig) -> PredictOptions:
    overlap = config.tile.overlap
    if overlap != "auto" and not isinstance(overlap, int):
        raise PredictError(f"tile.overlap={overlap} must be a number of LR pixels or auto")
    return PredictOptions(
        tile_size=config.tile.size,
        overlap=None if overlap == "auto" else overlap,
        kernel_crop=config.kernel_crop,
        save_stages=config.save_stages,
        max_pixels=config.max_pixels,
        precision=str(config.precision),
        kernel=str(config.kernel),
        self_ensemble=config.self_ensemble,
    )


def run(config: PredictConfig) -> int:
    """Check everything that can be checked, then restore each input; returns the exit status."""
    console = Console(stderr=True)
    try:
        device = check_device(str(config.device), "device")
        options = _options(config)
        inputs = find_inputs(Path(config.input))
        if config.backend == "onnx":
            model, device = _onnx_model(config, options), torch.device("cpu")
        else:
            model = _model(config, device)
        options.check(model)
        output_dir = Path(config.output)
        check_output_dir(output_dir, inputs)
    except USER_ERRORS as err:
        return report_error(err)
    remove_leftovers(output_dir)
    console.print(
        f"Restoring {len(inputs)} image(s) at x{model.scale} with {model.num_stages} stages "
        f"on {device}",
        markup=False,
    )
    results, failures = predict_images(model, inputs, output_dir, options, console=console)
    print(summary(results, failures, output_dir))
    return 1 if failures else 0
