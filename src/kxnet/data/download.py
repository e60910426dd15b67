"""Fetching and checking the paper's training data (DIV2K + Flickr2K) and the HR benchmark sets.

Layout under a data root (default ``data/full``)::

    <root>/downloads/DIV2K_train_HR.zip, …               archives (removed once extracted)
    <root>/DIV2K_Flickr2K/DIV2K/0001.png … 0800.png      the training images
    <root>/DIV2K_Flickr2K/Flickr2K/000001.png … 002650.png
    <root>/DIV2K_valid/0801.png … 0900.png               validation (the first 10 are used)
    <root>/DIV2K_Flickr2K_prepared/                      `python -m kxnet.data prepare` of the
                                                         training images: paths.train_dir

A download resumes from its ``.part`` file; an archive is checked (its size where published, and
its pinned checksum: DIV2K's published SHA256; for Flickr2K, whose authors publish none, the MD5
that torchsr pins for the same URL) before it is opened; a set is extracted into a hidden
temporary folder, checked (every expected file present, none extra, every image sound), then
renamed into place, so no half-extracted folder is ever visible. Archives are not trusted
further than that: a tar is opened uncompressed only (mode ``r:``), an image member must be a
plain file (no link, device or sparse member, none twice), and every member, and all of them
together, are capped in size while they are copied (a zip's declared sizes are not believed).
A downloaded archive that fails its check or its extraction is deleted, so that the next run
downloads it afresh; a copy given with ``source`` is never deleted. An existing copy (archive or
extracted folder) is used instead with ``source``: checked the same way and linked.
The benchmark sets (Set5, Set14, BSD100, Urban100) have no single official archive: a copy is
checked file by file against the SHA256 list shipped with the package.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from kxnet.atomic import atomic_path, remove_leftovers
from kxnet.data.images import list_images, scan_images
from kxnet.errors import DownloadError, TransferError

__all__ = [
    "TRAIN_FOLDER",
    "PREPARED_FOLDER",
    "TRAIN_SETS",
    "BENCHMARK_SETS",
    "TrainSet",
    "download_file",
    "sha256_file",
    "file_digest",
    "check_archive",
    "check_train_folder",
    "install_train_set",
    "benchmark_sums",
    "verify_benchmarks",
]

TRAIN_FOLDER = "DIV2K_Flickr2K"
BENCHMARK_SETS = ("Set5", "Set14", "BSD100", "Urban100")
_SUMS = Path(__file__).with_name("benchmark_hr.sha256")
Report = Callable[[str], None]
_MIB = 1 << 20
# What the head of a compressed tar looks like (only uncompressed tars are opened).
_COMPRESSED = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
}


@dataclass(frozen=True)
class TrainSet:
    """One training set: where its archive is, how to check it, which files it must give.

    ``archive_bytes`` is the published size of the archive and ``checksum`` its pinned hash as
    ``ALGORITHM:HEX`` (``sha256:…`` or ``md5:…``); ``None`` where there is none (the extracted
    files are then checked by names, count and decoding only). ``member_dir`` is the archive
    folder holding the HR images; ``names`` are those images, installed in
    ``<root>/<parent>/<folder>``. ``max_member_bytes`` caps each extracted image and
    ``max_total_bytes`` all of them (default: 16 MiB an image).
    """

    key: str
    title: str
    url: str
    archive: str
    archive_bytes: int | None
    checksum: str | None
    member_dir: str
    names: tuple[str, ...]
    folder: str
    parent: str = "DIV2K_Flickr2K"
    max_member_bytes: int = 64 * _MIB
    max_total_bytes: int | None = None

    @property
    def total_cap(self) -> int:
        return self.max_total_bytes or 16 * _MIB * len(self.names)


TRAIN_SETS = {
    "div2k": TrainSet(
        key="div2k",
        title="DIV2K",
        url="https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_train_HR.zip",
        archive="DIV2K_train_HR.zip",
        archive_bytes=3_530_603_713,
        checksum="sha256:9d0b9c463f6e35b6c62cc6a930ee2224f670b34c1df841a57670f9acf0f6c335",
        member_dir="DIV2K_train_HR",
        names=tuple(f"{i:04d}.png" for i in range(1, 801)),
        folder="DIV2K",
    ),
    "flickr2k": TrainSet(
        key="flickr2k",
        title="Flickr2K",
        url="https://cv.snu.ac.kr/research/EDSR/Flickr2K.tar",
        archive="Flickr2K.tar",
        # Its authors publish neither a size nor a SHA256 of this tar (HR and LR folders); the
        # MD5 is the one torchsr pins for the same URL, the only checksum of it we could find.
        # A SHA256 is not invented here: the MD5 (weak against a forger, not against a broken
        # or swapped download) is what can be checked.
        archive_bytes=None,
        checksum="md5:5d3f39443d5e9489bff8963f8f26cb03",
        member_dir="Flickr2K_HR",
        names=tuple(f"{i:06d}.png" for i in range(1, 2651)),
        folder="Flickr2K",
    ),
    "div2k_valid": TrainSet(
        key="div2k_valid",
        title="DIV2K validation",
        url="https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_valid_HR.zip",
        archive="DIV2K_valid_HR.zip",
        archive_bytes=448_993_893,
        checksum="sha256:20dd31fd84d777bc1cf5d6b7654a3f569c0aec74458ae094122ad1d0489900fc",
        member_dir="DIV2K_valid_HR",
        names=tuple(f"{i:04d}.png" for i in range(801, 901)),
        folder="DIV2K_valid",
        parent="",
    ),
}
PREPARED_FOLDER = f"{TRAIN_FOLDER}_prepared"


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB" if n >= 1e5 else f"{n:,.0f} bytes"


def file_digest(path: str | os.PathLike, algorithm: str = "sha256", chunk: int = 1 << 22) -> str:
    """The hash (hex) of a file, read in chunks: ``sha256``, ``md5`` or any of hashlib's."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """SHA256 (hex) of a file, read in chunks."""
    return file_digest(path, "sha256", chunk)


def _fetch_once(
    url: str, part: Path, timeout: float, report: Report, progress_s: float = 10.0
) -> int | None:
    """Append what is missing of ``url`` to ``part``, reporting the progress every
    ``progress_s`` seconds; the total size if the server says it."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:
            return have
        raise
    with response:
        status = getattr(response, "status", None) or 200
        total: int | None = None
        mode = "wb"
        if status == 206:
            content_range = response.headers.get("Content-Range", "")
            start, _, size = content_range.removeprefix("bytes ").partition("/")
            if start.split("-")[0].strip() != str(have):
                part.unlink()
                raise ConnectionError(f"the server resumed at {content_range!r}, not at {have}")
            mode = "ab"
            total = int(size) if size.strip().isdigit() else None
        if mode == "wb":
            have = 0
        if total is None and response.headers.get("Content-Length", "").isdigit():
            total = have + int(response.headers["Content-Length"])
        if have:
            report(f"  resuming {part.name} at {_mb(have)}")
        done, shown = have, time.monotonic()
        with open(part, mode) as out:
            while block := response.read(1 << 20):
                out.write(block)
                done += len(block)
                if time.monotonic() - shown > progress_s:
                    shown = time.monotonic()
                    of = f" of {_mb(total)} ({100 * done / total:.0f}%)" if total else ""
                    report(f"  {part.name}: {_mb(done)}{of}")
            out.flush()
            os.fsync(out.fileno())
    if total is not None and done < total:
        raise ConnectionError(f"connection closed after {done:,} of {total:,} bytes")
    return total


def download_file(
    url: str,
    dest: str | os.PathLike,
    expected_bytes: int | None = None,
    retries: int = 3,
    backoff: float = 2.0,
    timeout: float = 60.0,
    report: Report = print,
    progress_s: float = 10.0,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming what an earlier try left;
    a progress line every ``progress_s`` seconds.

    A broken transfer is retried ``retries`` times (resuming with an HTTP Range request; a server
    without range support restarts it). ``dest`` appears only once the transfer is complete and,
    if ``expected_bytes`` is given, of that size. Raises :class:`DownloadError`, naming the file.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    if expected_bytes is not None and part.exists() and part.stat().st_size > expected_bytes:
        part.unlink()
    for attempt in range(retries + 1):
        try:
            total = _fetch_once(url, part, timeout, report, progress_s)
            break
        except (OSError, http.client.HTTPException) as err:
            if isinstance(err, urllib.error.HTTPError) and err.code < 500:
                raise DownloadError(
                    f"{url}: the server answered HTTP {err.code} ({err.reason})"
                ) from err
            saved = part.stat().st_size if part.exists() else 0
            if attempt == retries:
                kept = f"{saved:,} bytes kept in {part}" if saved else "nothing received"
                raise TransferError(
                    f"{url}: download interrupted ({err}); {kept}: run the same command again "
                    "to resume"
                ) from err
            report(f"  {dest.name}: transfer broke ({err}), retrying ({attempt + 1}/{retries})")
            time.sleep(backoff * 2**attempt)
    size = part.stat().st_size
    want = expected_bytes if expected_bytes is not None else total
    if want is not None and size != want:
        raise DownloadError(
            f"{part}: {size:,} bytes received, {want:,} expected: run the same command again "
            "to resume (or delete the .part file to start over)"
        )
    os.replace(part, dest)
    return dest


def check_archive(spec: TrainSet, path: Path, delete_bad: bool = False) -> str:
    """Check an archive's size and checksum against the pinned ones; what was checked.

    On a mismatch raises :class:`DownloadError` naming the file and the hash algorithm
    (deleting the file if ``delete_bad``).
    """
    if spec.archive_bytes is None and spec.checksum is None:
        return "no pinned checksum; checked by image names, count and decoding"
    algorithm, _, expected = (spec.checksum or "").partition(":")
    if spec.checksum is not None and (
        algorithm not in hashlib.algorithms_available or not expected
    ):
        raise ValueError(f"{spec.title}: checksum {spec.checksum!r} is not ALGORITHM:HEX")
    size = path.stat().st_size
    problem = None
    if spec.archive_bytes is not None and size != spec.archive_bytes:
        problem = f"{size:,} bytes, the published archive has {spec.archive_bytes:,}"
    elif expected and (digest := file_digest(path, algorithm)) != expected.lower():
        problem = f"{algorithm.upper()} {digest} differs from the pinned {expected}"
    if problem:
        action = "it was deleted: run the command again to download it anew"
        if delete_bad:
            path.unlink()
        else:
            action = "replace it with a good copy"
        raise DownloadError(f"{path}: {problem}; {action}")
    if not expected:
        return "size matches the published one"
    return f"archive {algorithm.upper()} matches the pinned one"


def _compression(archive: Path) -> str | None:
    """The compression of a compressed tar (by its first bytes), None for anything else."""
    with open(archive, "rb") as f:
        head = f.read(8)
    return next((kind for magic, kind in _COMPRESSED.items() if head.startswith(magic)), None)


def _members(spec: TrainSet, archive: Path) -> Iterator[tuple[str, int, Callable[[], IO[bytes]]]]:
    """(image name, declared size, opener) for each expected HR image in a zip or an
    uncompressed tar, in archive order. Raises :class:`DownloadError` for a compressed tar, an
    image member that is not a plain file (a link, a device, a sparse file), one that appears
    twice or one whose declared size is over the cap."""
    wanted = set(spec.names)
    seen: set[str] = set()

    def keep(member_path: str, plain: bool, size: int) -> str | None:
        parts = member_path.replace("\\", "/").strip("/").split("/")
        if len(parts) < 2 or parts[-2] != spec.member_dir or parts[-1] not in wanted:
            return None
        problem = None
        if not plain:
            problem = "is not a plain file (a link, device or sparse member)"
        elif parts[-1] in seen:
            problem = "appears twice"
        elif size > spec.max_member_bytes:
            problem = f"declares {_mb(size)}, over the cap of {_mb(spec.max_member_bytes)}"
        if problem:
            raise DownloadError(f"{archive}: member {member_path} {problem}: not a sound archive")
        seen.add(parts[-1])
        return parts[-1]

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                link = (info.external_attr >> 16) & 0o170000 == 0o120000
                if not info.is_dir() and (name := keep(info.filename, not link, info.file_size)):
                    yield name, info.file_size, lambda info=info: zf.open(info)
        return
    kind = _compression(archive)
    if kind:
        raise DownloadError(
            f"{archive}: a {kind}-compressed tar; only an uncompressed .tar (as published) is "
            "opened: use the original archive"
        )
    with tarfile.open(archive, "r:") as tf:
        for member in tf:
            plain = member.isreg() and not member.issparse()
            if name := keep(member.name, plain, member.size):
                yield name, member.size, lambda member=member: tf.extractfile(member)


def _copy_capped(src: IO[bytes], out: IO[bytes], cap: int, what: str) -> int:
    """Copy at most ``cap`` bytes; beyond, DownloadError(``what``): an archive lying about its
    sizes, or a bomb."""
    done = 0
    while block := src.read(_MIB):
        done += len(block)
        if done > cap:
            raise DownloadError(f"{what}: not a sound archive")
        out.write(block)
    return done


def check_train_folder(spec: TrainSet, folder: Path, threads: int | None = None) -> int:
    """Check that ``folder`` holds exactly the set's images, each sound; their count.

    Raises :class:`DownloadError` naming the missing, extra or unreadable files.
    """
    found = {p.name for p in list_images(folder)}
    missing = sorted(set(spec.names) - found)
    extra = sorted(found - set(spec.names))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} of {len(spec.names)} images missing ({_few(missing)})")
        if extra:
            parts.append(f"{len(extra)} unexpected image files ({_few(extra)})")
        raise DownloadError(f"{folder} is not the {spec.title} training set: {'; '.join(parts)}")
    _, errors = scan_images([folder / n for n in spec.names], "verify", threads)
    if errors:
        bad = "; ".join(f"{e.path.name}: {e.reason}" for e in errors[:3])
        raise DownloadError(
            f"{len(errors)} unreadable {spec.title} images in {folder} ({bad}): "
            "replace them from a good copy"
        )
    return len(spec.names)


def _few(names: list[str], k: int = 3) -> str:
    return ", ".join(names[:k]) + (f", … {len(names) - k} more" if len(names) > k else "")


def _extract(spec: TrainSet, archive: Path, dest: Path, threads: int | None, report: Report) -> int:
    report(f"  extracting {spec.title} HR images from {archive.name}")
    remove_leftovers(dest.parent)
    with atomic_path(dest) as tmp:
        tmp.mkdir()
        total = 0
        try:
            for name, _, open_member in _members(spec, archive):
                with open_member() as src, open(tmp / name, "wb") as out:
                    left = spec.total_cap - total
                    if left < spec.max_member_bytes:
                        cap = left
                        what = (
                            f"the images together (at {name}) expand beyond {_mb(spec.total_cap)}"
                        )
                    else:
                        cap = spec.max_member_bytes
                        what = f"member {name} expands beyond {_mb(cap)}"
                    total += _copy_capped(src, out, cap, f"{archive}: {what}")
        except DownloadError:
            raise
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, RuntimeError) as err:
            raise DownloadError(
                f"{archive}: extraction failed ({err}): check the archive (or replace it) and "
                "the free disk space, then run the command again"
            ) from err
        try:
            count = check_train_folder(spec, tmp, threads)
        except DownloadError as err:
            raise DownloadError(f"{archive}: {err}".replace(str(tmp), dest.name)) from err
    return count


def _find_copy(spec: TrainSet, source: Path) -> Path:
    """The archive file or the folder of HR images of ``spec`` inside ``source``."""
    if source.is_file() and source.name == spec.archive:
        return source
    if (source / spec.archive).is_file():
        return source / spec.archive
    candidates = [source, source / spec.member_dir, source / spec.folder]
    candidates += [source / spec.folder / spec.member_dir, source / spec.key / spec.member_dir]
    if source.is_dir():
        candidates += sorted(source.glob(f"*/{spec.member_dir}"))
    for folder in candidates:
        if (folder / spec.names[0]).is_file() and (folder / spec.names[-1]).is_file():
            return folder
    raise DownloadError(
        f"no {spec.title} copy in {source}: expected the archive {spec.archive} or a folder "
        f"{spec.member_dir}/ holding {spec.names[0]} … {spec.names[-1]}"
    )


def install_train_set(
    spec: TrainSet,
    root: str | os.PathLike,
    source: str | os.PathLike | None = None,
    keep_archive: bool = False,
    retries: int = 3,
    threads: int | None = None,
    report: Report = print,
) -> tuple[Path, int, str]:
    """Put ``spec``'s HR images at ``<root>/DIV2K_Flickr2K/<title>``: (folder, images, how).

    Without ``source`` the archive is downloaded (resuming), checked, extracted and removed (kept
    with ``keep_archive``). With ``source`` (an archive, or a folder holding the archive or the
    images) nothing is downloaded: an archive is checked and extracted, a folder is checked and
    linked. A folder already in place is checked and left as it is.
    """
    root = Path(root)
    dest = root / spec.parent / spec.folder
    if dest.exists() or dest.is_symlink():
        if not dest.exists():
            raise DownloadError(f"{dest} is a broken link: remove it and run the command again")
        try:
            count = check_train_folder(spec, dest, threads)
        except DownloadError as err:
            raise DownloadError(f"{err}; remove {dest} and run the command again") from err
        return dest, count, "already in place, checked"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if source is not None:
        found = _find_copy(spec, Path(source).expanduser().resolve())
        if found.is_dir():
            count = check_train_folder(spec, found, threads)
            with atomic_path(dest) as link:
                link.symlink_to(found, target_is_directory=True)
            return dest, count, f"linked to {found}, checked"
        how = check_archive(spec, found)  # the user's copy: checked, never deleted
        return dest, _extract(spec, found, dest, threads, report), f"from {found}; {how}"
    downloads = root / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    archive = downloads / spec.archive
    part = archive.with_name(archive.name + ".part")
    if spec.archive_bytes is not None and not archive.exists():
        need = 2 * spec.archive_bytes - (part.stat().st_size if part.exists() else 0)
        free = shutil.disk_usage(downloads).free
        if free < need:
            raise DownloadError(
                f"{downloads}: {_mb(free)} free, {spec.title} needs about {_mb(need)} "
                "(archive + images): free some space or choose another --root"
            )
    if not archive.exists():
        report(f"  downloading {spec.url}")
        download_file(spec.url, archive, spec.archive_bytes, retries=retries, report=report)
    how = check_archive(spec, archive, delete_bad=True)
    try:
        count = _extract(spec, archive, dest, threads, report)
    except DownloadError as err:
        archive.unlink(missing_ok=True)  # ours: the next run downloads it afresh
        raise DownloadError(
            f"{err}; the downloaded archive was deleted: run the command again to download it anew"
        ) from err
    if not keep_archive:
        archive.unlink()
    return dest, count, f"downloaded; {how}"


def benchmark_sums() -> dict[str, dict[str, str]]:
    """The shipped SHA256 of every HR benchmark image: {set: {file name: sha256}}."""
    sums: dict[str, dict[str, str]] = {}
    for line in _SUMS.read_text().splitlines():
        digest, _, rel = line.strip().partition("  ")
        name, _, file = rel.partition("/")
        sums.setdefault(name, {})[file] = digest
    return sums


def verify_benchmarks(source: str | os.PathLike, sets: tuple[str, ...] = BENCHMARK_SETS) -> dict:
    """Check ``<source>/<set>/`` file by file against the shipped SHA256 list; {set: files}.

    Raises :class:`DownloadError` naming the missing, changed or unexpected files.
    """
    source = Path(source)
    sums = benchmark_sums()
    counts, problems = {}, []
    for name in sets:
        folder = source / name
        if not folder.is_dir():
            problems.append(f"{folder} missing")
            continue
        expected = sums[name]
        found = {p.name for p in list_images(folder)}
        missing = sorted(set(expected) - found)
        extra = sorted(found - set(expected))
        changed = sorted(f for f in set(expected) & found if sha256_file(folder / f) != expected[f])
        for label, files in (("missing", missing), ("changed", changed), ("unexpected", extra)):
            if files:
                problems.append(f"{name}: {len(files)} {label} ({_few(files)})")
        counts[name] = len(expected)
    if problems:
        raise DownloadError(
            f"benchmark sets in {source} differ from the published HR images: "
            + "; ".join(problems)
        )
    return counts
