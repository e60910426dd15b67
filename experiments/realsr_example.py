"""A real LR photo through a checkpoint: the picture at the top of the README's results.

    python experiments/realsr_example.py CHECKPOINT IMAGE --out experiments/results/realsr

Writes ``NAME.png`` (a central crop of the LR photo enlarged by pixel repetition, the bicubic
initialisation X⁽⁰⁾ and KXNet's SR image, side by side, titled "LR", "bicubic" and "KXNet x2"; a
real photo has no HR image, so no PSNR) and ``NAME_kernels.png`` (the kernel estimated at every
stage, numbered, stage 0 the Gaussian initialisation, on one intensity scale).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image

from kxnet.checkpoint import load_model
from kxnet.data.images import read_image
from kxnet.pictures import comparison_strip, kernel_strip


def _save(picture: torch.Tensor, path: Path) -> None:
    array = (picture.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(array).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("image", type=Path, help="a real LR photo")
    parser.add_argument("--crop", type=int, default=96, help="LR crop side (default 96)")
    parser.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args()

    model = load_model(args.checkpoint)
    lr = read_image(args.image)
    height, width = lr.shape[-2:]
    side = min(args.crop, height, width)
    top, left = (height - side) // 2, (width - side) // 2
    lr = lr[:, top : top + side, left : left + side]
    with torch.inference_mode():
        out = model(lr[None])
    args.out.mkdir(parents=True, exist_ok=True)
    strip = comparison_strip(lr, out.images[0][0], out.sr[0], method=f"KXNet x{model.scale}")
    _save(strip, args.out / f"{args.image.stem}.png")
    kernels = kernel_strip([k[0] for k in out.kernels], zoom=6)
    _save(kernels, args.out / f"{args.image.stem}_kernels.png")
    print(f"{args.image.name}: {side}×{side} LR crop, x{model.scale}, S = {model.num_stages}")


if __name__ == "__main__":
    main()
