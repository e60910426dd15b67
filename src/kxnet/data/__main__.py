"""``python -m kxnet.data`` (``kxnet-data``): fetch or point at the data sets, check a folder.

python -m kxnet.data download [--root data/full] [--sets div2k flickr2k] [--from DIR]
python -m kxnet.data download --sets benchmarks --from DIR
python -m kxnet.data prepare SRC DEST        # each image of SRC decoded once, stored raw in DEST
python -m kxnet.data check DIR [--patch-size 256] [--check verify] [--bench 200]

Exit status: 0 on success; 2 for what can be told at the start (a mistyped option, a missing
folder, an archive that fails its check: one line on stderr says what and how to fix it); 1
for a download that broke off (run the same command again to resume) or a failing disk.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from kxnet.config import resolve_path
from kxnet.data.download import (
    BENCHMARK_SETS,
    PREPARED_FOLDER,
    TRAIN_FOLDER,
    TRAIN_SETS,
    install_train_set,
    verify_benchmarks,
)
from kxnet.data.images import CHECKS
from kxnet.errors import USER_ERRORS, DownloadError, report_error

GROUPS = {"train": tuple(TRAIN_SETS), "benchmarks": tuple(s.lower() for s in BENCHMARK_SETS)}
CHOICES = (*TRAIN_SETS, *GROUPS["benchmarks"], *GROUPS)


class _Parser(argparse.ArgumentParser):
    """argparse, with a mistake on the command line reported as one line (exit status 2)."""

    def error(self, message: str) -> None:
        print(
            f"error: {' '.join(message.split())} (see {self.prog} --help)",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(2)


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= {minimum}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _path(arg: str) -> Path:
    """A path given on the command line: relative to the working directory."""
    return Path(arg).expanduser().resolve()


def _expand(sets: list[str]) -> list[str]:
    keys: list[str] = []
    for s in sets:
        for key in GROUPS.get(s, (s,)):
            if key not in keys:
                keys.append(key)
    return keys


def download(args: argparse.Namespace) -> None:
    keys = _expand(args.sets)
    benchmarks = tuple(b for b in BENCHMARK_SETS if b.lower() in keys)
    if benchmarks and args.source is None:
        raise DownloadError(
            "the benchmark sets have no official archive to download: point at your copy with "
            "--from DIR (DIR holding Set5/ Set14/ BSD100/ Urban100/); the repository bundles "
            "Set5 and Set14 in data/benchmarks"
        )
    root = _path(args.root) if args.root else resolve_path("data/full")
    lines = []
    for key in (k for k in keys if k in TRAIN_SETS):
        spec = TRAIN_SETS[key]
        print(f"{spec.title}:")
        folder, count, how = install_train_set(
            spec,
            root,
            args.source and _path(args.source),
            args.keep_archives,
            args.retries,
            args.threads,
        )
        lines.append(f"  {spec.folder:<11} {count:>5} images  {folder}  ({how})")
    if benchmarks:
        source = _path(args.source)
        print("benchmarks:")
        counts = verify_benchmarks(source, benchmarks)
        lines += [
            f"  {b:<9} {n:>5} images  {source / b}  (SHA256 of every file)"
            for b, n in counts.items()
        ]
    print("ready:")
    print("\n".join(lines))
    if any(k in TRAIN_SETS for k in keys):
        print(
            f"prepare with:  python -m kxnet.data prepare {root / TRAIN_FOLDER} "
            f"{root / PREPARED_FOLDER}   (make data does it)"
        )
    if benchmarks:
        print(f"evaluate with: paths.benchmark_dir={_path(args.source)}")


def prepare(args: argparse.Namespace) -> None:
    from kxnet.data.prepared import prepare_folder

    source, dest = _path(args.source), _path(args.dest)
    start = time.perf_counter()
    done, kept = prepare_folder(source, dest)
    took = time.perf_counter() - start
    total = done + kept
    print(f"{total} images of {source} prepared in {dest} ({done} now, {kept} kept, {took:.0f} s)")
    print(f"train with:    paths.train_dir={dest}")


def check(args: argparse.Namespace) -> None:
    from kxnet.data.hr_dataset import HRImageFolder, find_training_images

    folder = _path(args.folder)
    start = time.perf_counter()
    images = find_training_images(folder, args.patch_size, args.check, args.threads)
    took = time.perf_counter() - start
    print(f"{len(images)} usable images in {folder} (check={args.check}, {took:.2f} s)")
    if not args.bench:
        return
    for level in CHECKS:
        start = time.perf_counter()
        find_training_images(folder, args.patch_size, level, args.threads)
        took = time.perf_counter() - start
        print(
            f"start-up check {level:<7} {took:7.2f} s  ({1e3 * took / len(images):6.1f} ms/image)"
        )
    import torch

    torch.set_num_threads(1)  # one thread, as in a DataLoader worker
    rates = {}
    for cached in (False, True):
        start = time.perf_counter()
        dataset = HRImageFolder(
            folder, args.patch_size, cache_images=cached, check="header", threads=args.threads
        )
        setup = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(args.bench):
            dataset[i]
        rates[cached] = args.bench / (time.perf_counter() - start)
        label = "cached  " if cached else "uncached"
        print(f"patches {label} {rates[cached]:9.1f} /s  (set-up {setup:.2f} s, one thread)")
    print(f"caching speed-up: {rates[True] / rates[False]:.1f}x")


def main(argv: list[str] | None = None) -> int:
    prog = "kxnet-data" if Path(sys.argv[0]).name == "kxnet-data" else "python -m kxnet.data"
    parser = _Parser(prog=prog, description=__doc__.split("\n")[0].split(": ", 1)[1])
    sub = parser.add_subparsers(dest="command", required=True)
    dl = sub.add_parser("download", help="fetch, or check and link an existing copy of, data sets")
    dl.add_argument("--root", help="data root (default: data/full in the project)")
    dl.add_argument(
        "--sets",
        nargs="+",
        default=["train"],
        choices=CHOICES,
        help="train = div2k flickr2k div2k_valid (default); benchmarks = set5 set14 bsd100 "
        "urban100",
    )
    dl.add_argument(
        "--from",
        dest="source",
        help="use this existing copy (archives, or extracted folders) instead of downloading",
    )
    dl.add_argument("--keep-archives", action="store_true", help="keep archives once extracted")
    dl.add_argument("--retries", type=_count(0), default=3, help="retries of a broken transfer")
    dl.add_argument("--threads", type=_count(1), default=None, help="threads checking images")
    dl.set_defaults(run=download)
    pr = sub.add_parser(
        "prepare", help="decode every image of a training folder once into raw arrays (resumable)"
    )
    pr.add_argument("source", metavar="SRC", help="folder of HR training images (recursive)")
    pr.add_argument("dest", metavar="DEST", help="the prepared folder (created; outside SRC)")
    pr.set_defaults(run=prepare)
    ck = sub.add_parser("check", help="check a folder of training images (and time it)")
    ck.add_argument("folder")
    ck.add_argument("--patch-size", type=_count(1), default=256, help="HR patch (scale × LR patch)")
    ck.add_argument("--check", choices=CHECKS, default="verify")
    ck.add_argument("--threads", type=_count(1), default=None)
    ck.add_argument(
        "--bench", type=_count(0), default=0, help="also time every check and N patches"
    )
    ck.set_defaults(run=check)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        args.run(args)
    except USER_ERRORS as err:
        return report_error(err)
    except OSError as err:
        return report_error(err, 1)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    return 0


def console_main() -> None:
    """The ``kxnet-data`` command: :func:`main`, its return value as the exit status."""
    sys.exit(main())


if __name__ == "__main__":
    console_main()
