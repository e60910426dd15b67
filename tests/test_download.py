"""Fetching and checking data sets, against a loopback HTTP server serving small archives."""

import dataclasses
import hashlib
import io
import os
import shutil
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kxnet.data import download as dl
from kxnet.data.__main__ import main
from kxnet.errors import DownloadError

BUNDLED = Path(__file__).resolve().parents[1] / "data" / "benchmarks"


def _png_bytes(seed: int, size: int = 24) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


NAMES = ("0001.png", "0002.png", "0003.png")
DIV2K_LIKE = {
    **{f"DIV2K_train_HR/{n}": _png_bytes(k) for k, n in enumerate(NAMES)},
    "__MACOSX/DIV2K_train_HR/._0001.png": b"resource fork",
    "DIV2K_train_LR_bicubic/X2/0001x2.png": _png_bytes(9, 12),
}
ARCHIVE = _zip(DIV2K_LIKE)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.drop_after: int | None = None  # the next response stops after this many bytes
        self.ranges = True
        self.requests: list[str | None] = []


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args):
        pass

    def do_GET(self):
        data = self.server.files.get(self.path)
        rng = self.headers.get("Range")
        self.server.requests.append(rng)
        if data is None:
            self.send_error(404)
            return
        start = int(rng.removeprefix("bytes=").split("-")[0]) if rng and self.server.ranges else 0
        if start >= len(data) and rng:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if self.server.drop_after is not None:
            body, self.server.drop_after = body[: self.server.drop_after], None
            self.close_connection = True
        self.wfile.write(body)


@pytest.fixture
def server():
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _spec(server, archive=ARCHIVE, name="DIV2K_train_HR.zip", **changes):
    server.files[f"/{name}"] = archive
    spec = dl.TrainSet(
        key="div2k",
        title="DIV2K",
        url=f"http://127.0.0.1:{server.server_port}/{name}",
        archive=name,
        archive_bytes=len(archive),
        checksum=f"sha256:{hashlib.sha256(archive).hexdigest()}",
        member_dir="DIV2K_train_HR",
        names=NAMES,
        folder="DIV2K",
    )
    return dataclasses.replace(spec, **changes)


def _quiet(_):
    pass


def _leftovers(root: Path) -> list[str]:
    """Hidden staging folders, links or .part files anywhere under root."""
    return sorted(p.name for p in root.rglob("*") if p.name.startswith(".") or ".part" in p.name)


# --- download_file ---------------------------------------------------------------------------


def test_download_happy_path(server, tmp_path):
    spec = _spec(server)
    out = dl.download_file(spec.url, tmp_path / "a.zip", len(ARCHIVE), report=_quiet)
    assert out.read_bytes() == ARCHIVE and not (tmp_path / "a.zip.part").exists()
    assert server.requests == [None]


def test_interrupted_download_resumes_from_the_part_file(server, tmp_path):
    spec = _spec(server)
    server.drop_after = 1000
    dest = tmp_path / "a.zip"
    with pytest.raises(DownloadError, match=r"interrupted .*/a\.zip\.part: run the same"):
        dl.download_file(spec.url, dest, len(ARCHIVE), retries=0, report=_quiet)
    assert not dest.exists() and (tmp_path / "a.zip.part").stat().st_size == 1000
    dl.download_file(spec.url, dest, len(ARCHIVE), retries=0, report=_quiet)
    assert dest.read_bytes() == ARCHIVE
    assert server.requests == [None, "bytes=1000-"]


def test_broken_transfer_is_retried_within_one_call(server, tmp_path):
    spec = _spec(server)
    server.drop_after = 500
    dl.download_file(spec.url, tmp_path / "a.zip", len(ARCHIVE), backoff=0, report=_quiet)
    assert (tmp_path / "a.zip").read_bytes() == ARCHIVE
    assert server.requests == [None, "bytes=500-"]


def test_server_without_ranges_restarts_cleanly(server, tmp_path):
    spec = _spec(server)
    server.ranges = False
    (tmp_path / "a.zip.part").write_bytes(b"garbage from before")
    dl.download_file(spec.url, tmp_path / "a.zip", len(ARCHIVE), report=_quiet)
    assert (tmp_path / "a.zip").read_bytes() == ARCHIVE


def test_missing_url_is_one_clear_error(server, tmp_path):
    url = f"http://127.0.0.1:{server.server_port}/nothing.zip"
    with pytest.raises(DownloadError, match="HTTP 404"):
        dl.download_file(url, tmp_path / "n.zip", report=_quiet)


def test_file_url(tmp_path):
    src = tmp_path / "src.zip"
    src.write_bytes(ARCHIVE)
    out = dl.download_file(src.as_uri(), tmp_path / "copy.zip", len(ARCHIVE), report=_quiet)
    assert out.read_bytes() == ARCHIVE


# --- install_train_set -----------------------------------------------------------------------


def test_install_downloads_checks_extracts_and_cleans_up(server, tmp_path):
    spec = _spec(server)
    folder, count, how = dl.install_train_set(spec, tmp_path, report=_quiet)
    assert folder == tmp_path / "DIV2K_Flickr2K" / "DIV2K" and count == 3
    assert "SHA256 matches" in how
    assert sorted(p.name for p in folder.iterdir()) == list(NAMES)
    assert (folder / "0002.png").read_bytes() == DIV2K_LIKE["DIV2K_train_HR/0002.png"]
    assert not (tmp_path / "downloads" / spec.archive).exists()
    assert _leftovers(tmp_path) == []
    again = dl.install_train_set(spec, tmp_path, report=_quiet)
    assert again[2] == "already in place, checked" and len(server.requests) == 1


def test_checksum_mismatch_is_refused_naming_the_file(server, tmp_path):
    spec = _spec(server, checksum="sha256:" + "0" * 64)
    with pytest.raises(DownloadError, match=r"DIV2K_train_HR\.zip: SHA256 .* deleted"):
        dl.install_train_set(spec, tmp_path, report=_quiet)
    assert not (tmp_path / "DIV2K_Flickr2K" / "DIV2K").exists()
    assert list((tmp_path / "downloads").iterdir()) == []
    assert _leftovers(tmp_path) == []


def test_archive_missing_an_image_leaves_no_half_extracted_folder(server, tmp_path):
    spec = _spec(server, names=(*NAMES, "0004.png"))
    with pytest.raises(DownloadError, match=r"1 of 4 images missing \(0004\.png\).*deleted"):
        dl.install_train_set(spec, tmp_path, keep_archive=True, report=_quiet)
    assert list((tmp_path / "DIV2K_Flickr2K").iterdir()) == []
    # A complete archive that fails is not kept (every rerun would fail the same way).
    assert list((tmp_path / "downloads").iterdir()) == []
    spec = dataclasses.replace(spec, names=NAMES)
    assert dl.install_train_set(spec, tmp_path, report=_quiet)[1] == 3
    assert len(server.requests) == 2, "downloaded afresh"


def test_corrupt_image_in_archive_is_named(server, tmp_path):
    members = dict(DIV2K_LIKE)
    members["DIV2K_train_HR/0003.png"] = members["DIV2K_train_HR/0003.png"][:200]
    archive = _zip(members)
    spec = _spec(server, archive=archive)
    with pytest.raises(DownloadError, match=r"1 unreadable DIV2K images .*0003\.png"):
        dl.install_train_set(spec, tmp_path, report=_quiet)
    assert list((tmp_path / "DIV2K_Flickr2K").iterdir()) == []


def test_tar_archive_without_published_checksum(server, tmp_path):
    names = ("000001.png", "000002.png")
    members = {f"Flickr2K/Flickr2K_HR/{n}": _png_bytes(k) for k, n in enumerate(names)}
    members["Flickr2K/Flickr2K_LR_bicubic/X2/000001x2.png"] = _png_bytes(5, 12)
    archive = _tar(members)
    spec = _spec(
        server,
        archive=archive,
        name="Flickr2K.tar",
        key="flickr2k",
        title="Flickr2K",
        archive_bytes=None,
        checksum=None,
        member_dir="Flickr2K_HR",
        names=names,
    )
    folder, count, how = dl.install_train_set(spec, tmp_path, report=_quiet)
    assert count == 2 and "no pinned checksum" in how
    assert sorted(p.name for p in folder.iterdir()) == list(names)


def test_existing_archive_is_used_instead_of_downloading(server, tmp_path):
    spec = _spec(server)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / spec.archive).write_bytes(ARCHIVE)
    folder, count, how = dl.install_train_set(spec, tmp_path / "root", mine, report=_quiet)
    assert count == 3 and how.startswith(f"from {mine / spec.archive}")
    assert (mine / spec.archive).exists() and server.requests == []


def test_existing_folder_is_checked_and_linked(server, tmp_path):
    spec = _spec(server)
    copy = tmp_path / "datasets" / "DIV2K" / "DIV2K_train_HR"
    copy.mkdir(parents=True)
    for n in NAMES:
        (copy / n).write_bytes(DIV2K_LIKE[f"DIV2K_train_HR/{n}"])
    folder, count, how = dl.install_train_set(spec, tmp_path / "root", tmp_path / "datasets")
    assert folder.is_symlink() and folder.resolve() == copy and count == 3
    assert how == f"linked to {copy}, checked" and server.requests == []
    assert _leftovers(tmp_path / "root") == []


def test_existing_folder_with_extra_images_is_refused(server, tmp_path):
    spec = _spec(server)
    copy = tmp_path / "DIV2K_train_HR"
    copy.mkdir()
    for n in (*NAMES, "0801.png"):
        (copy / n).write_bytes(_png_bytes(1))
    with pytest.raises(DownloadError, match=r"1 unexpected image files \(0801\.png\)"):
        dl.install_train_set(spec, tmp_path / "root", copy, report=_quiet)
    assert not (tmp_path / "root" / "DIV2K_Flickr2K" / "DIV2K").exists()


def test_no_copy_in_the_source_is_one_clear_error(server, tmp_path):
    with pytest.raises(DownloadError, match=r"no DIV2K copy in .*DIV2K_train_HR\.zip"):
        dl.install_train_set(_spec(server), tmp_path / "root", tmp_path, report=_quiet)


def test_cli_download_prints_where_and_the_override(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(dl.TRAIN_SETS, "div2k", _spec(server))
    assert main(["download", "--root", str(tmp_path), "--sets", "div2k"]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / 'DIV2K_Flickr2K' / 'DIV2K'}" in out and "3 images" in out
    assert f"prepare {tmp_path / 'DIV2K_Flickr2K'} {tmp_path / 'DIV2K_Flickr2K_prepared'}" in out


def test_cli_failure_is_one_line_and_nonzero(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(dl.TRAIN_SETS, "div2k", _spec(server, checksum="sha256:" + "f" * 64))
    assert main(["download", "--root", str(tmp_path), "--sets", "div2k"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "DIV2K_train_HR.zip" in err and "\n" not in err


# --- benchmarks ------------------------------------------------------------------------------


def test_shipped_benchmark_sums_cover_the_four_sets():
    sums = dl.benchmark_sums()
    assert {k: len(v) for k, v in sums.items()} == {
        "BSD100": 100,
        "Set14": 14,
        "Set5": 5,
        "Urban100": 100,
    }


def test_bundled_benchmarks_verify(capsys):
    assert dl.verify_benchmarks(BUNDLED, ("Set5", "Set14")) == {"Set5": 5, "Set14": 14}
    assert main(["download", "--sets", "set5", "set14", "--from", str(BUNDLED)]) == 0
    assert f"paths.benchmark_dir={BUNDLED}" in capsys.readouterr().out


def test_changed_missing_and_extra_benchmark_files_are_named(tmp_path):
    shutil.copytree(BUNDLED / "Set5", tmp_path / "Set5")
    (tmp_path / "Set5" / "bird.png").unlink()
    Image.open(tmp_path / "Set5" / "baby.png").save(
        tmp_path / "Set5" / "baby.png", compress_level=1
    )
    (tmp_path / "Set5" / "baby_x2.png").write_bytes(_png_bytes(0))
    with pytest.raises(DownloadError) as err:
        dl.verify_benchmarks(tmp_path, ("Set5", "Set14"))
    message = str(err.value)
    assert "Set5: 1 missing (bird.png)" in message and "Set5: 1 changed (baby.png)" in message
    assert "Set5: 1 unexpected (baby_x2.png)" in message and "Set14 missing" in message


def test_benchmarks_need_a_source(capsys):
    assert main(["download", "--sets", "benchmarks"]) == 2
    assert "--from DIR" in capsys.readouterr().err


def _shared_data() -> Path:
    return Path(
        os.environ.get("KXNET_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
    )


def test_shared_benchmark_copy_verifies():
    shared = _shared_data()
    if not (shared / "Urban100").is_dir():
        pytest.skip(f"the full benchmark sets are not at {shared} (set KXNET_SHARED_DATA)")
    assert dl.verify_benchmarks(shared) == {"Set5": 5, "Set14": 14, "BSD100": 100, "Urban100": 100}


@pytest.mark.parametrize("kind", ["truncated tar", "not an archive"])
def test_broken_archive_copy_is_refused_and_nothing_is_left(server, tmp_path, kind):
    names = ("000001.png", "000002.png")
    tar = _tar({f"Flickr2K/Flickr2K_HR/{n}": _png_bytes(k, 64) for k, n in enumerate(names)})
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "Flickr2K.tar").write_bytes(tar[:3000] if kind == "truncated tar" else b"x" * 4096)
    spec = _spec(server, name="Flickr2K.tar", archive_bytes=None, checksum=None, names=names)
    spec = dataclasses.replace(spec, member_dir="Flickr2K_HR", title="Flickr2K")
    with pytest.raises(DownloadError, match=r"Flickr2K\.tar: extraction failed"):
        dl.install_train_set(spec, tmp_path / "root", mine, report=_quiet)
    assert list((tmp_path / "root" / "DIV2K_Flickr2K").iterdir()) == []


# --- archives are not trusted ----------------------------------------------------------------

FLICKR = ("000001.png", "000002.png")


def _flickr_spec(server, archive: bytes, **changes):
    """A Flickr2K-like set of two images served as Flickr2K.tar, pinned by its MD5."""
    spec = _spec(
        server,
        archive=archive,
        name="Flickr2K.tar",
        key="flickr2k",
        title="Flickr2K",
        archive_bytes=None,
        checksum=f"md5:{hashlib.md5(archive).hexdigest()}",
        member_dir="Flickr2K_HR",
        names=FLICKR,
    )
    return dataclasses.replace(spec, **changes)


def _flickr_members() -> dict[str, bytes]:
    return {f"Flickr2K/Flickr2K_HR/{n}": _png_bytes(k) for k, n in enumerate(FLICKR)}


def _sparse_tar(realsize: int) -> bytes:
    """A tar whose image 000002.png is a sparse member: 10 stored bytes, ``realsize`` read."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        name, data = next(iter(_flickr_members().items()))
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("Flickr2K/Flickr2K_HR/000002.png")
        info.size = 10
        info.pax_headers = {
            "GNU.sparse.map": f"{realsize - 10},10",
            "GNU.sparse.realsize": str(realsize),
            "GNU.sparse.name": info.name,
        }
        tf.addfile(info, io.BytesIO(b"x" * 10))
    return buf.getvalue()


def _linked_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        name, data = next(iter(_flickr_members().items()))
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("Flickr2K/Flickr2K_HR/000002.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    return buf.getvalue()


def _device_tar() -> bytes:
    """A tar whose image 000002.png is a character device (/dev/null's numbers)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        name, data = next(iter(_flickr_members().items()))
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        device = tarfile.TarInfo("Flickr2K/Flickr2K_HR/000002.png")
        device.type, device.devmajor, device.devminor = tarfile.CHRTYPE, 1, 3
        tf.addfile(device)
    return buf.getvalue()


def _declaring_tar(size: int) -> bytes:
    """A tar whose image 000002.png declares ``size`` bytes in its header (its data cut short:
    the header alone must be refused)."""
    buf = io.BytesIO()
    tf = tarfile.open(fileobj=buf, mode="w")
    name, data = next(iter(_flickr_members().items()))
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))
    header = tarfile.TarInfo("Flickr2K/Flickr2K_HR/000002.png")
    header.size = size
    return buf.getvalue() + header.tobuf(tarfile.GNU_FORMAT) + bytes(4096)


def _gzip_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in _flickr_members().items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_flickr2k_is_pinned_by_md5_and_named_so():
    spec = dl.TRAIN_SETS["flickr2k"]
    assert spec.checksum == "md5:5d3f39443d5e9489bff8963f8f26cb03"
    assert dl.TRAIN_SETS["div2k"].checksum.startswith("sha256:")


def test_md5_pinned_tar_is_checked_and_a_mismatch_names_md5(server, tmp_path):
    archive = _tar(_flickr_members())
    folder, count, how = dl.install_train_set(
        _flickr_spec(server, archive), tmp_path, report=_quiet
    )
    assert count == 2 and "archive MD5 matches the pinned one" in how
    bad = _flickr_spec(server, archive, checksum="md5:" + "0" * 32)
    with pytest.raises(DownloadError, match=r"Flickr2K\.tar: MD5 [0-9a-f]{32} differs from the"):
        dl.install_train_set(bad, tmp_path / "other", report=_quiet)
    assert list((tmp_path / "other" / "downloads").iterdir()) == []


@pytest.mark.parametrize(
    "kind,archive,changes,message",
    [
        ("sparse", _sparse_tar(4000), {}, r"000002\.png is not a plain file"),
        ("sparse bomb", _sparse_tar(200_000_000), {}, r"000002\.png is not a plain file"),
        ("symlink", _linked_tar(), {}, r"000002\.png is not a plain file"),
        ("device", _device_tar(), {}, r"000002\.png is not a plain file"),
        (
            "member over the shipped cap of 64 MiB",
            _declaring_tar(64 * 2**20 + 1),
            {},
            r"000002\.png declares 67\.1 MB, over the cap of 67\.1 MB",
        ),
        ("gzip", _gzip_tar(), {}, r"gzip-compressed tar; only an uncompressed \.tar"),
        ("member over the cap", None, {"max_member_bytes": 1000}, r"declares .* over the cap"),
        (
            "all over the cap",
            None,
            {"max_total_bytes": 3000},
            r"the images together \(at 000002\.png\) expand beyond 3,000 bytes",
        ),
    ],
)
def test_unsound_archives_are_refused_and_a_download_is_deleted(
    server, tmp_path, kind, archive, changes, message
):
    archive = archive if archive is not None else _tar(_flickr_members())
    spec = _flickr_spec(server, archive, **changes)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "Flickr2K.tar").write_bytes(archive)
    with pytest.raises(DownloadError, match=message):
        dl.install_train_set(spec, tmp_path / "copy", mine, report=_quiet)
    assert (mine / "Flickr2K.tar").read_bytes() == archive, "the user's copy is never deleted"
    with pytest.raises(DownloadError, match=message + ".*downloaded archive was deleted"):
        dl.install_train_set(spec, tmp_path / "root", report=_quiet)
    assert list((tmp_path / "root" / "downloads").iterdir()) == []
    assert list((tmp_path / "root" / "DIV2K_Flickr2K").iterdir()) == []
    assert _leftovers(tmp_path / "root") == []


@pytest.mark.parametrize("key", sorted(dl.TRAIN_SETS))
def test_the_shipped_sets_keep_the_readme_caps(key):
    """The README's promise for every set downloaded: at most 64 MiB an image, 16 MiB times the
    number of images in all (the 64 MiB cap is tried on an archive above)."""
    spec = dl.TRAIN_SETS[key]
    assert spec.max_member_bytes == 64 * 2**20
    assert spec.total_cap == 16 * 2**20 * len(spec.names)


def test_a_zip_member_over_the_cap_is_refused(server, tmp_path):
    spec = _spec(server, max_member_bytes=len(DIV2K_LIKE["DIV2K_train_HR/0001.png"]) - 1)
    with pytest.raises(DownloadError, match=r"member DIV2K_train_HR/0001\.png declares .* cap"):
        dl.install_train_set(spec, tmp_path, report=_quiet)
    assert list((tmp_path / "downloads").iterdir()) == []
    assert list((tmp_path / "DIV2K_Flickr2K").iterdir()) == []


def test_a_killed_extraction_is_cleaned_up_and_a_running_one_left_alone(server, tmp_path):
    from test_atomic import dead_pid, leftover

    target = tmp_path / "DIV2K_Flickr2K"
    target.mkdir(parents=True)
    killed = leftover(target, "DIV2K", dead_pid(), folder_too=True)
    running = leftover(target, "DIV2K", os.getppid(), folder_too=True)
    assert dl.install_train_set(_spec(server), tmp_path, report=_quiet)[1] == 3
    assert not killed.exists() and running.exists()
