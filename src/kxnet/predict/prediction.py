"""Super-resolving real LR images without ground truth, one file at a time.

For each image: the kernel is estimated once, by the full network on a central crop of at most
``kernel_crop``² LR pixels (the whole image if it is smaller; a crop, not a downscaled copy, so
that the network sees the image's own LR statistics). The per-stage kernels of that run are then
given to X-net tile by tile (:mod:`kxnet.predict.tiling`), so that memory is bounded by
``tile_size`` whatever the image size, and the tiled result equals an untiled run with the same
kernels.
Rows of tiles are written as they are done (:class:`~kxnet.predict.png.PngStreamWriter`).

Outputs, per input ``NAME.ext``: ``NAME.png`` (the SR image; 16-bit if the input is),
``NAME_kernel.npy`` (the final kernel, p×p float32, sums to 1), ``NAME_kernel.png`` (the kernel
scaled to its maximum and enlarged, for looking, titled), and with ``save_stages``,
``NAME_stages/`` holding ``x_00.png`` … ``x_T.png``, ``k_00.png`` …, ``kernels.png`` (every
stage's kernel side by side, numbered) and ``kernels.npy`` ((T+1)×p×p). Every file
of an image is written under a temporary name and renamed when all of them are complete.
"""

from __future__ import annotations

import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from PIL import Image
from rich.console import Console
from rich.progress import Progress, TextColumn
from torch import Tensor

from kxnet.atomic import AtomicFiles
from kxnet.checkpoint import load_model
from kxnet.checks import asked_properties, check_device, check_writable
from kxnet.data.images import IMAGE_SUFFIXES, decode_image, list_images, to_float
from kxnet.errors import ImageReadError, KXNetError, PredictError, report_error
from kxnet.nn.kxnet import KXNet
from kxnet.pictures import kernel_strip, text_band
from kxnet.predict.png import PngStreamWriter
from kxnet.predict.tiling import (
    central_crop,
    min_input_size,
    plan_tiles,
    receptive_radius,
    run_tile,
)

__all__ = [
    "run",
    "PredictOptions",
    "ImageResult",
    "Failure",
    "find_inputs",
    "output_names",
    "check_output_dir",
    "predict_image",
    "predict_images",
    "summary",
]

_KERNEL_PNG_SIZE = 256
_ORIENTATION = 0x0112


@dataclass(frozen=True)
class PredictOptions:
    """How images are restored.

    tile_size: the largest LR side fed to the network at once (bounds the memory).
    overlap: LR pixels of context around each tile; None: the receptive radius (exact seams).
    kernel_crop: the side of the central LR crop on which the kernel is estimated.
    save_stages: also write every stage's image and kernel.
    """

    tile_size: int = 1024
    overlap: int | None = None
    kernel_crop: int = 1024
    save_stages: bool = False

    def resolved_overlap(self, model: KXNet) -> int:
        if self.overlap is not None:
            return self.overlap
        return receptive_radius(model.scale, model.kernel_size, model.num_stages)

    def check(self, model: KXNet) -> None:
        """Raise :class:`PredictError` unless the options fit the model."""
        smallest = min_input_size(model.scale, model.kernel_size, model.num_stages)
        overlap = self.resolved_overlap(model)
        if overlap < 0:
            raise PredictError(f"tile.overlap={overlap} must be >= 0 (or auto)")
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


def output_names(inputs: Sequence[Path]) -> dict[Path, str]:
    """The output stem of each input: its own stem, or ``stem_ext`` where several share one."""
    stems: dict[str, int] = {}
    for path in inputs:
        stems[path.stem] = stems.get(path.stem, 0) + 1
    return {
        p: p.stem if stems[p.stem] == 1 else f"{p.stem}_{p.suffix.lstrip('.').lower()}"
        for p in inputs
    }


def _planned_outputs(stem: str, output_dir: Path, save_stages: bool) -> list[Path]:
    names = [f"{stem}.png", f"{stem}_kernel.npy", f"{stem}_kernel.png"]
    if save_stages:
        names.append(f"{stem}_stages")
    return [output_dir / n for n in names]


def check_output_dir(output_dir: Path, inputs: Sequence[Path], save_stages: bool) -> None:
    """Refuse an output folder that holds the inputs or whose outputs would replace one.

    Creates the folder and checks that it is writable, so that nothing is computed in vain.
    """
    output_dir = output_dir.resolve()
    sources = {p.resolve() for p in inputs}
    if output_dir in {p.parent for p in sources}:
        raise PredictError(
            f"output={output_dir} is the folder of the input images: choose another output "
            "folder, so that no input can be overwritten"
        )
    for stem in output_names(inputs).values():
        for target in _planned_outputs(stem, output_dir, save_stages):
            clash = [s for s in sources if s == target or target in s.parents]
            if clash:
                raise PredictError(
                    f"output {target} would replace the input {clash[0]}: choose another output"
                )
    check_writable(output_dir, "output")


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
        if int(img.getexif().get(_ORIENTATION, 1)) not in (0, 1):
            notes.append("EXIF orientation applied")
    return notes


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


def _quantise(x: Tensor, bit_depth: int) -> np.ndarray:
    """1×3×H×W float → H×W×3 uint8 or uint16, clamped and rounded (one temporary copy)."""
    q = x[0].clamp(0, 1).mul_(65535 if bit_depth == 16 else 255).round_()
    q = q.to(torch.int32 if bit_depth == 16 else torch.uint8).permute(1, 2, 0).cpu().numpy()
    return q.astype(np.uint16) if bit_depth == 16 else q


def _kernel_picture(k: Tensor, title: str) -> Image.Image:
    """A p×p kernel as an 8-bit gray picture: scaled to its maximum, enlarged without blurring,
    ``title`` under it."""
    k = k.detach().cpu().double()
    pixels = (k / k.max().clamp_min(1e-12) * 255).round().to(torch.uint8).numpy()
    factor = max(1, _KERNEL_PNG_SIZE // k.shape[-1])
    kernel = np.kron(pixels, np.ones((factor, factor), dtype=np.uint8))
    band = (text_band([title], [kernel.shape[1]]).mean(0) * 255).round().to(torch.uint8)
    return Image.fromarray(np.concatenate([kernel, band.numpy()]))


def _to_image(picture: Tensor) -> Image.Image:
    """A 3×H×W picture in [0, 1] → an 8-bit RGB image."""
    return Image.fromarray(
        (picture.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    )


def _save_picture(img: Image.Image, path: Path) -> None:
    with open(path, "wb") as f:
        img.save(f, format="PNG")


def _save_npy(array: np.ndarray, path: Path) -> None:
    with open(path, "wb") as f:
        np.save(f, array)


class _Strips:
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
        for buf, part in zip(self.buffers, parts, strict=True):
            q = _quantise(part, self.bit_depth)[: buf.shape[0], : self.width - left]
            buf[:, left : left + q.shape[1]] = q

    def finish(self) -> None:
        for writer, buf in zip(self.writers, self.buffers, strict=True):
            writer.write(buf)
        self.rows_done += self.buffers[0].shape[0]

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


def _pad_to(image: Tensor, smallest: int) -> Tensor:
    """Edge-pad a 1×3×h×w image (as float) at the bottom and right to at least smallest²."""
    height, width = image.shape[-2:]
    pad = (0, max(0, smallest - width), 0, max(0, smallest - height))
    return F.pad(to_float(image), pad, mode="replicate")


def _write_kernels(
    outputs: AtomicFiles, stem: str, stage_kernels: Sequence[Tensor], save_stages: bool
) -> list[Path]:
    """The final kernel (.npy and picture) and, with ``save_stages``, every stage's kernel.

    Returns the paths for the stage images (``x_00.png`` …), empty without ``save_stages``.
    """
    kernels = torch.cat(list(stage_kernels)).float().cpu()
    last = len(kernels) - 1
    size = "×".join(str(n) for n in kernels.shape[-2:])
    _save_npy(kernels[-1].numpy(), outputs.path(f"{stem}_kernel.npy"))
    title = f"estimated kernel {size}, stage {last}"
    _save_picture(_kernel_picture(kernels[-1], title), outputs.path(f"{stem}_kernel.png"))
    if not save_stages:
        return []
    stage_dir = outputs.path(f"{stem}_stages")
    stage_dir.mkdir()
    _save_npy(kernels.numpy(), stage_dir / "kernels.npy")
    for t, k in enumerate(kernels):
        _save_picture(_kernel_picture(k, f"stage {t} of {last}"), stage_dir / f"k_{t:02d}.png")
    _save_picture(_to_image(kernel_strip(kernels)), stage_dir / "kernels.png")
    return [stage_dir / f"x_{t:02d}.png" for t in range(len(kernels))]


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
    device = next(iter(model.parameters()), model.k0).device
    lr, bit_depth, notes = _read(path)
    height, width = lr.shape[-2:]
    smallest = min_input_size(model.scale, model.kernel_size, model.num_stages)
    if height < smallest or width < smallest:
        lr = _pad_to(lr, smallest)
        notes.append(f"edge-padded from {height}×{width} to {smallest}×{smallest}, cropped back")
    tiles = plan_tiles(*lr.shape[-2:], options.tile_size, options.resolved_overlap(model))
    count = sum(len(row) for row in tiles)
    with torch.inference_mode(), AtomicFiles(output_dir) as outputs, ExitStack() as files:
        crop = to_float(central_crop(lr, options.kernel_crop)).to(device)
        estimate = model(crop)
        stage_kernels = estimate.kernels
        # The crop's images are the result only when the crop is the whole image, in one tile.
        whole = estimate.images if crop.shape[-2:] == lr.shape[-2:] and count == 1 else None
        del estimate, crop
        if options.kernel_crop < max(lr.shape[-2:]):
            crop_h, crop_w = (min(n, options.kernel_crop) for n in lr.shape[-2:])
            notes.append(f"kernel estimated on the central {crop_h}×{crop_w} crop")
        sr_path = outputs.path(f"{stem}.png")
        images = _write_kernels(outputs, stem, stage_kernels, options.save_stages) or [sr_path]
        strips = _Strips(
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
    return " ".join(str(err).split()) or type(err).__name__


def predict_images(
    model: KXNet,
    inputs: Sequence[Path],
    output_dir: Path,
    options: PredictOptions,
    console: Console | None = None,
) -> tuple[list[ImageResult], list[Failure]]:
    """Restore every input into ``output_dir`` (created); a failing input is reported, skipped.

    A progress bar shows the images (and the tiles of a tiled image) on ``console``.
    """
    names = output_names(inputs)
    output_dir.mkdir(parents=True, exist_ok=True)
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
                results.append(
                    predict_image(model, path, output_dir, names[path], options, on_tile)
                )
            except (ImageReadError, RuntimeError, ValueError, OSError) as err:
                failures.append(Failure(path, _reason(err)))
                bar.console.print(
                    f"skipped {path}: {failures[-1].reason}", markup=False, soft_wrap=True
                )
                if isinstance(err, torch.OutOfMemoryError) and torch.cuda.is_available():
                    torch.cuda.empty_cache()
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


def _model(cfg: DictConfig, overrides: Sequence[str], device: torch.device) -> KXNet:
    if cfg.ckpt_path:
        path = Path(str(cfg.ckpt_path)).expanduser().absolute()
        model = load_model(path, map_location=device, **asked_properties(cfg, overrides))
    elif cfg.model.net.stages == 0:
        model = KXNet(cfg.scale, 0, kernel_size=cfg.model.net.kernel_size, setting=cfg.setting.name)
    else:
        raise PredictError(
            "ckpt_path is not set: pass a checkpoint (ckpt_path=…) or model.net.stages=0 for the "
            "bicubic baseline"
        )
    return model.to(device).eval()


def _options(cfg: DictConfig) -> PredictOptions:
    overlap = cfg.tile.overlap
    if overlap != "auto" and not isinstance(overlap, int):
        raise PredictError(f"tile.overlap={overlap} must be a number of LR pixels or auto")
    for key, value in (("tile.size", cfg.tile.size), ("kernel_crop", cfg.kernel_crop)):
        if not isinstance(value, int) or value < 1:
            raise PredictError(f"{key}={value} must be a positive number of LR pixels")
    return PredictOptions(
        tile_size=cfg.tile.size,
        overlap=None if overlap == "auto" else overlap,
        kernel_crop=cfg.kernel_crop,
        save_stages=bool(cfg.save_stages),
    )


def run(cfg: DictConfig, overrides: Sequence[str] = ()) -> int:
    """Check everything that can be checked, then restore each input; returns the exit status."""
    console = Console(stderr=True)
    try:
        device = check_device(str(cfg.device), "device")
        model = _model(cfg, overrides, device)
        options = _options(cfg)
        options.check(model)
        inputs = find_inputs(Path(str(cfg.input)).expanduser().absolute())
        output_dir = Path(str(cfg.output)).expanduser().absolute()
        check_output_dir(output_dir, inputs, options.save_stages)
    except KXNetError as err:
        return report_error(err)
    console.print(
        f"Restoring {len(inputs)} image(s) at x{model.scale} with {model.num_stages} stages "
        f"on {device}",
        markup=False,
    )
    results, failures = predict_images(model, inputs, output_dir, options, console=console)
    print(summary(results, failures, output_dir))
    return 1 if failures else 0
