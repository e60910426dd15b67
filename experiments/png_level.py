"""Time kxnet-predict's PNG writer at zlib levels 1, 3 and 6 on bicubic x4 outputs of photos.

    python experiments/png_level.py [--folder ../shared/data/RealSRSet] [--images 3]

For each photo: its x4 bicubic enlargement written row strip by row strip as prediction writes
it (:class:`kxnet.predict.png.PngStreamWriter`, into memory), the seconds and MiB per level, and
the time and size of each level against level 6 (zlib's default).
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kxnet.config import project_root
from kxnet.data.images import list_images, read_image
from kxnet.predict.png import PngStreamWriter

LEVELS = (1, 3, 6)


def _write(image: np.ndarray, level: int) -> tuple[float, int]:
    """Seconds and bytes of one H×W×3 uint8 image through the writer, 64 rows at a time."""
    buffer = io.BytesIO()
    start = time.perf_counter()
    writer = PngStreamWriter(buffer, image.shape[1], image.shape[0], level=level)
    for top in range(0, image.shape[0], 64):
        writer.write(image[top : top + 64])
    writer.close()
    return time.perf_counter() - start, len(buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = project_root().parent / "shared" / "data" / "RealSRSet"
    parser.add_argument("--folder", type=Path, default=default, help="photos to enlarge")
    parser.add_argument("--images", type=int, default=3, help="how many (the first by name)")
    args = parser.parse_args()
    times = {level: 0.0 for level in LEVELS}
    sizes = {level: 0 for level in LEVELS}
    for path in list_images(args.folder)[: args.images]:
        lr = read_image(path)[None]
        sr = F.interpolate(lr, scale_factor=4, mode="bicubic").clamp(0, 1)
        image = sr[0].mul(255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
        row = []
        for level in LEVELS:
            seconds, size = _write(image, level)
            times[level] += seconds
            sizes[level] += size
            row.append(f"level {level}: {seconds * 1e3:6.1f} ms {size / 2**20:5.2f} MiB")
        print(f"{path.name:24s} {image.shape[1]}×{image.shape[0]}  " + "  ".join(row))
    for level in LEVELS:
        print(
            f"level {level}: {times[6] / times[level]:.1f}× faster than level 6, "
            f"files {sizes[level] / sizes[6] - 1:+.0%}"
        )


if __name__ == "__main__":
    main()
