"""KXNet against the authors' own network code, side by side in one process.

    git clone https://github.com/jiahong-fu/KXNet /path/to/KXNet
    python experiments/bench_authors.py /path/to/KXNet [--scale 4] [--stages 19] [--batch 2]

Times one training step (forward, the loss of Eq. 12 as the authors' training code sums it,
backward, Adam) on the same LR batch, and one inference pass on a Set5 image at x2, for the
authors' ``BKXNet.KXNet`` (from the clone given, never from this repository) and for
:class:`kxnet.KXNet` with the speed options of ``conf/shared/net/kxnet.yaml``, interleaved so that
load drifts hit both; prints the times, the tensor-memory peaks (see :mod:`kxnet.bench.measure`) and
our ratios to theirs. The authors' file imports OpenCV, SciPy, Matplotlib and their ``utils``
but the network uses only OpenCV's 1-D Gaussian: that one is given here, the others are left
empty, and their ``.cuda()`` calls are no-ops on a machine without a GPU. Their auxiliary kernel
bank is :func:`kxnet.kernels.auxiliary_bank`, which equals the files they ship.
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from kxnet import KXNet, description, kernels
from kxnet.bench.measure import profile_call, set_threads, time_interleaved
from kxnet.config import project_root
from kxnet.data.images import read_image
from kxnet.loss import StageLoss

NETWORK = Path("codes/config/KXNet/models/modules")


def _import_authors(repo: Path) -> types.ModuleType:
    """The authors' ``BKXNet`` module from their clone, with the imports it does not use stubbed."""
    if not (repo / NETWORK / "BKXNet.py").is_file():
        raise SystemExit(f"{repo}: no {NETWORK / 'BKXNet.py'} (give a clone of jiahong-fu/KXNet)")
    cv2 = types.ModuleType("cv2")

    def gaussian(n: int, sigma: float) -> np.ndarray:
        x = np.arange(n) - (n - 1) / 2
        g = np.exp(-(x**2) / (2 * sigma**2))
        return (g / g.sum())[:, None]

    cv2.getGaussianKernel = gaussian
    stubs = {"cv2": cv2, "utils": types.ModuleType("utils")}
    for name in ("scipy", "scipy.io", "matplotlib", "matplotlib.pyplot"):
        stubs[name] = types.ModuleType(name)
    sys.modules.update({k: v for k, v in stubs.items() if k not in sys.modules})
    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *args, **kwargs: self
    sys.path.insert(0, str(repo / NETWORK))
    return importlib.import_module("BKXNet")


def _authors_loss(srs, kernels_, hr, k) -> torch.Tensor:
    """Their training loss: 0.1·L1 on every intermediate stage, 1·L1 on the last (Eq. 12)."""
    total = 0.0
    for t, (sr, ker) in enumerate(zip(srs, kernels_, strict=True)):
        weight = 1.0 if t == len(srs) - 1 else 0.1
        total = total + weight * (F.l1_loss(ker, k) + F.l1_loss(sr, hr))
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", type=Path, help="a clone of jiahong-fu/KXNet")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--stages", type=int, default=19)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--lr-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    set_threads(args.threads)
    authors = _import_authors(args.repo.expanduser().resolve())
    device = torch.device("cpu")
    model_cfg = OmegaConf.load(project_root() / "conf" / "shared" / "net" / "kxnet.yaml")
    speed = {key: model_cfg[key] for key in ("channels_last", "recompute_data_terms")}

    def networks(scale: int) -> dict[str, torch.nn.Module]:
        torch.manual_seed(0)
        ours = KXNet(scale=scale, stages=args.stages, setting="iso", **speed)
        p = ours.kernel_size
        with tempfile.TemporaryDirectory() as tmp:
            bank = Path(tmp) / "aux.pth"
            torch.save(kernels.auxiliary_bank("iso", p), bank)
            theirs = authors.KXNet(
                upscale=scale, s_iter=args.stages, kernel_size=p, ker_auxi_path=str(bank)
            )
        return {"authors": theirs, "kxnet": ours}

    size = args.lr_size * args.scale
    gen = torch.Generator().manual_seed(0)
    hr = torch.rand(args.batch, 3, size, size, generator=gen)
    nets = networks(args.scale)
    p = nets["kxnet"].kernel_size
    sigmas = description.train_sigma_range("iso", args.scale)
    k, _ = kernels.random_isotropic(args.batch, p, sigmas, generator=gen)
    lr = torch.rand(args.batch, 3, args.lr_size, args.lr_size, generator=gen)

    def train_step(name: str):
        net = nets[name].train()
        params = [q for q in net.parameters() if q.requires_grad]
        for q in params:  # a few of theirs are expanded views, which Adam cannot write to
            q.data = q.data.clone()
        opt = torch.optim.Adam(params, lr=2e-4, betas=(0.9, 0.99))
        loss = StageLoss()

        def step() -> None:
            if name == "kxnet":
                loss(net(lr), hr, k).total.backward()
            else:
                srs, ks = net(lr)
                _authors_loss(srs, ks, hr, k).backward()
            opt.step()
            opt.zero_grad(set_to_none=False)

        return step

    image = read_image(project_root() / "data/benchmarks/Set5/butterfly.png")[None]
    infer_nets = networks(2)
    lr_x2 = F.avg_pool2d(image[..., : image.shape[-2] // 2 * 2, : image.shape[-1] // 2 * 2], 2)

    def infer(name: str):
        net = infer_nets[name].eval()

        def run() -> None:
            with torch.inference_mode():
                net(lr_x2)

        return run

    rows = []
    for task, make in (("train", train_step), ("infer", infer)):
        fns = {name: make(name) for name in ("authors", "kxnet")}
        timing = time_interleaved(fns, device, warmup=1, repeats=args.repeats)
        peaks = {name: profile_call(fn, device)["peak_bytes"] for name, fn in fns.items()}
        wall = {name: statistics.median(t.wall) for name, t in timing.items()}
        rows.append((task, wall, peaks))

    print(
        f"x{args.scale}, S = {args.stages}, Setting 1 (p = {p}); train: batch {args.batch}, "
        f"LR {args.lr_size}×{args.lr_size}; infer: Set5 butterfly at x2 "
        f"(LR {lr_x2.shape[-1]}×{lr_x2.shape[-2]}); {torch.get_num_threads()} threads"
    )
    print(
        f"{'task':<7}{'authors':>10}{'kxnet':>10}{'time ×':>9}{'authors MiB':>13}"
        f"{'kxnet MiB':>11}{'memory ×':>10}"
    )
    for task, wall, peaks in rows:
        print(
            f"{task:<7}{wall['authors']:>9.2f}s{wall['kxnet']:>9.2f}s"
            f"{wall['kxnet'] / wall['authors']:>8.2f}×"
            f"{peaks['authors'] / 2**20:>13.1f}{peaks['kxnet'] / 2**20:>11.1f}"
            f"{peaks['kxnet'] / peaks['authors']:>9.2f}×"
        )


if __name__ == "__main__":
    main()
