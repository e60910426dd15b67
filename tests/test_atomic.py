"""kxnet.atomic: files written whole or not at all, never over what is there when asked not to,
and the leftovers of killed writers removed (only theirs)."""

from __future__ import annotations

import errno
import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from kxnet import atomic
from kxnet.atomic import AtomicFiles, remove_leftovers, temporary_name


def dead_pid() -> int:
    """A process id that no running process has (as a SIGKILLed run's)."""
    pid = 4_194_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except OSError:
            pass
        pid += 1


def leftover(folder, name: str, pid: int, folder_too: bool = False):
    """A temporary file (or folder) named as ``temporary_name`` names them, of writer ``pid``."""
    path = folder / f".{name}.{pid}-0123abcd{atomic.PARTIAL_SUFFIX}"
    if folder_too:
        path.mkdir()
        (path / "x_00.png").write_bytes(b"half")
    else:
        path.write_bytes(b"half a file")
    return path


def test_temporary_names_are_unique_and_carry_the_writer(tmp_path):
    names = {temporary_name(tmp_path / "a.png") for _ in range(100)}
    assert len(names) == 100
    assert all(f".a.png.{os.getpid()}-" in n.name for n in names)
    assert all(atomic._TEMPORARY.match(n.name) for n in names)


def test_only_the_leftovers_of_dead_writers_are_removed(tmp_path):
    dead = dead_pid()
    gone = [leftover(tmp_path, "a.png", dead), leftover(tmp_path, "b_stages", dead, True)]
    kept = [
        leftover(tmp_path, "c.png", os.getpid()),  # this process is writing it
        leftover(tmp_path, "d.png", os.getppid()),  # another live process is
        tmp_path / ".e.png.partial",  # a name kxnet does not make
        tmp_path / f".f.png.{dead}.partial",
        tmp_path / f"g.png.{dead}-0123abcd.partial",
        tmp_path / "notes.txt",
    ]
    for path in kept[2:]:
        path.write_text("the user's")
    link = tmp_path / f".h.png.{dead}-0123abcd.partial"
    link.symlink_to(tmp_path / "notes.txt")  # kxnet never makes links: not its own
    sub = tmp_path / "sub"
    sub.mkdir()
    nested = leftover(sub, "i.png", dead)
    assert sorted(remove_leftovers(tmp_path)) == sorted(gone)
    assert all(not p.exists() for p in gone) and all(p.exists() for p in kept)
    assert link.is_symlink() and nested.exists()
    assert remove_leftovers(tmp_path, recursive=True) == [nested]
    assert remove_leftovers(tmp_path / "nowhere") == []


def test_leftovers_of_a_shared_folder_must_also_be_old(tmp_path, caplog):
    caplog.set_level("INFO")
    recent = leftover(tmp_path, "a.png", dead_pid())
    assert remove_leftovers(tmp_path, min_age_s=600) == []
    old = time.time() - 3600
    os.utime(recent, (old, old))
    assert remove_leftovers(tmp_path, min_age_s=600) == [recent]
    assert caplog.messages[-1] == (f"removed 1 temporary file(s) left by killed runs in {tmp_path}")
    # Recent and old leftovers side by side, in whatever order the folder lists them.
    recents = [leftover(tmp_path, f"r{i}.png", dead_pid()) for i in range(5)]
    olds = [leftover(tmp_path, f"o{i}.png", dead_pid()) for i in range(5)]
    for path in olds:
        os.utime(path, (old, old))
    assert sorted(remove_leftovers(tmp_path, min_age_s=600)) == sorted(olds)
    assert all(p.exists() for p in recents)
    assert caplog.messages[-1] == (f"removed 5 temporary file(s) left by killed runs in {tmp_path}")


def test_a_writer_of_another_user_counts_as_running(tmp_path, monkeypatch):
    """Signalling another user's process is not permitted: it is running all the same."""
    kept = leftover(tmp_path, "a.png", dead_pid())

    def not_permitted(pid, signal):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(atomic.os, "kill", not_permitted)
    assert remove_leftovers(tmp_path) == [] and kept.exists()


def test_files_that_may_not_replace_anything_all_appear_or_none(tmp_path):
    (tmp_path / "b.txt").write_text("the user's")
    files = AtomicFiles(tmp_path, replace=False)
    files.write("a.txt", "new a")
    files.write("b.txt", "new b")
    files.path("c_stages").mkdir()
    with pytest.raises(FileExistsError) as err:
        files.commit()
    # the error names the file taken, as the one-line messages of predict show it
    assert (err.value.errno, err.value.strerror) == (errno.EEXIST, "already exists, not replaced")
    assert err.value.filename == str(tmp_path / "b.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.txt"]
    assert (tmp_path / "b.txt").read_text() == "the user's"
    (tmp_path / "d_stages").mkdir()
    (tmp_path / "d_stages" / "mine.txt").write_text("kept")
    with pytest.raises(FileExistsError), AtomicFiles(tmp_path, replace=False) as files:
        files.write("e.txt", "new e")
        (files.path("d_stages") / "x").mkdir(parents=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.txt", "d_stages"]
    assert [p.name for p in (tmp_path / "d_stages").iterdir()] == ["mine.txt"]
    with AtomicFiles(tmp_path, replace=False) as files:
        files.write("f.txt", "f")
    assert (tmp_path / "f.txt").read_text() == "f"
    with AtomicFiles(tmp_path) as files:  # replace=True: a rerun's files replace its own
        files.write("f.txt", "f again")
    assert (tmp_path / "f.txt").read_text() == "f again"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_name_taken_while_writing_is_not_replaced(tmp_path, monkeypatch):
    files = AtomicFiles(tmp_path, replace=False)
    files.write("a.txt", "mine")
    (tmp_path / "a.txt").write_text("appeared meanwhile")
    with pytest.raises(FileExistsError):
        files.commit()
    assert (tmp_path / "a.txt").read_text() == "appeared meanwhile"
    # Without hard links (some file systems), the check before the rename still holds.
    monkeypatch.setattr(atomic.os, "link", lambda *a: (_ for _ in ()).throw(OSError(1, "no")))
    files = AtomicFiles(tmp_path, replace=False)
    files.write("a.txt", "mine")
    files.write("b.txt", "b")
    with pytest.raises(FileExistsError) as err:
        files.commit()
    assert err.value.filename == str(tmp_path / "a.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    files = AtomicFiles(tmp_path, replace=False)
    files.write("b.txt", "b")
    assert files.commit() == [tmp_path / "b.txt"] and (tmp_path / "b.txt").read_text() == "b"


NAMES = ("x.png", "x_kernel.npy", "x_kernel.png")


def _killed_committing(folder, killed_at: int, replace: bool = False) -> None:
    """In a child process, write NAMES through AtomicFiles and SIGKILL it as it is about to make
    its ``killed_at``-th rename (1: the journal's own, 2 to 4: the files; 5: none, killed before
    the journal is removed)."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            real_commit, count = atomic._commit, 0

            def commit(tmp, path, replace=True):
                nonlocal count
                count += 1
                if count == killed_at:
                    os.kill(os.getpid(), signal.SIGKILL)
                real_commit(tmp, path, replace)

            atomic._commit = commit
            real_unlink = Path.unlink

            def unlink(self, missing_ok=False):
                if self.suffix == atomic.JOURNAL_SUFFIX and killed_at == 5:
                    os.kill(os.getpid(), signal.SIGKILL)
                real_unlink(self, missing_ok=missing_ok)

            Path.unlink = unlink
            with AtomicFiles(folder, replace=replace) as files:
                for name in NAMES:
                    files.write(name, f"all of {name}")
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL


@pytest.mark.parametrize("killed_at", [1, 2, 3, 4, 5])
def test_a_set_of_files_killed_among_its_renames_is_completed_by_the_next_run(tmp_path, killed_at):
    _killed_committing(tmp_path, killed_at)
    journals = list(tmp_path.glob(f"*{atomic.JOURNAL_SUFFIX}"))
    assert len(journals) == (killed_at > 1)
    remove_leftovers(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir())
    if killed_at == 1:  # no journal yet: no file had been placed, none is
        assert names == []
    else:
        assert names == sorted(NAMES)
        assert all((tmp_path / n).read_text() == f"all of {n}" for n in NAMES)


def test_a_commit_whose_name_was_taken_since_is_undone(tmp_path):
    _killed_committing(tmp_path, 3)  # x.png placed, the kernels not
    (tmp_path / "x_kernel.png").write_text("someone else's")
    remove_leftovers(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_kernel.png"]
    assert (tmp_path / "x_kernel.png").read_text() == "someone else's"


def test_a_journal_naming_files_outside_its_folder_is_left_alone(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    tmp = leftover(folder, "x.png", dead_pid())
    journal = folder / f".x.png.{dead_pid()}-0123abcd{atomic.JOURNAL_SUFFIX}"
    journal.write_text(json.dumps({"replace": True, "files": [[tmp.name, "../victim.txt"]]}))
    remove_leftovers(folder)
    assert victim.read_text() == "keep"
    assert journal.exists() and not tmp.exists()


def test_atomic_save_and_write_give_back_what_was_written(tmp_path):
    weights = {"w": torch.arange(3.0), "step": 7}
    path = atomic.atomic_save(weights, str(tmp_path / "deep" / "w.pt"))
    assert path == tmp_path / "deep" / "w.pt" and isinstance(path, Path)
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded["w"], weights["w"]) and loaded["step"] == 7
    atomic.atomic_save({"w": torch.zeros(1)}, path)  # an existing file is replaced
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.zeros(1))
    assert atomic.atomic_write(tmp_path / "b.bin", b"\xff\x00\x01") == tmp_path / "b.bin"
    assert (tmp_path / "b.bin").read_bytes() == b"\xff\x00\x01"
    atomic.atomic_write(tmp_path / "b.bin", b"second")
    assert (tmp_path / "b.bin").read_bytes() == b"second"
    with AtomicFiles(tmp_path / "x" / "y") as files:  # the folder is made, parents too
        files.write("c.bin", b"\x00\xfe")
    assert (tmp_path / "x" / "y" / "c.bin").read_bytes() == b"\x00\xfe"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.bin", "deep", "x"]


@pytest.fixture
def c_locale():
    """Text I/O under the C locale's ASCII default, as on a machine without a UTF-8 locale
    (where Python's UTF-8 mode is on, the default stays UTF-8)."""
    import locale

    saved = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    yield
    locale.setlocale(locale.LC_CTYPE, saved)


def test_text_is_written_as_utf8_whatever_the_locale(tmp_path, c_locale):
    text = "σ = 1.5 µm, θ = 45°"
    atomic.atomic_write(tmp_path / "a.txt", text)
    with AtomicFiles(tmp_path) as files:
        files.write("b.txt", text)
    assert (tmp_path / "a.txt").read_bytes() == text.encode("utf-8")
    assert (tmp_path / "b.txt").read_bytes() == text.encode("utf-8")


def test_a_name_taken_after_the_check_is_not_replaced(tmp_path, monkeypatch):
    """Between the check that a name is free and the rename, another process may take it: the
    hard link fails where a rename would replace."""
    files = AtomicFiles(tmp_path, replace=False)
    files.write("a.txt", "mine")
    (tmp_path / "a.txt").write_text("theirs")
    monkeypatch.setattr(atomic.os.path, "lexists", lambda path: False)
    with pytest.raises(FileExistsError) as err:
        files.commit()
    assert err.value.filename == str(tmp_path / "a.txt")
    monkeypatch.undo()
    assert (tmp_path / "a.txt").read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_one_writer_commits_batch_after_batch(tmp_path):
    files = AtomicFiles(tmp_path, replace=False)
    assert files.commit() == [], "nothing pending: nothing to do"
    files.write("a.txt", "a")
    assert files.commit() == [tmp_path / "a.txt"]
    files.write("b.txt", "b")
    files.abort()
    files.write("c.txt", "c")
    files.write("d.txt", "d")
    assert files.commit() == [tmp_path / "c.txt", tmp_path / "d.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "c.txt", "d.txt"]


def _interrupted_commit(folder: Path, names, replace: bool, placed: int, linked: bool = False):
    """The state a commit killed among its renames leaves, made in this process: every file
    written, the journal written, the first ``placed`` files renamed (with ``linked``, the next
    one hard-linked into place with its temporary name not yet removed). Returns the journal."""
    files = AtomicFiles(folder, replace=replace)
    for name in names:
        files.write(name, f"all of {name}")
    journal = files._journal()
    for tmp, final in files.pending[:placed]:
        atomic._commit(tmp, final, replace)
    if linked:
        tmp, final = files.pending[placed]
        os.link(tmp, final)
    return journal


@pytest.mark.parametrize("placed,linked", [(0, False), (1, False), (1, True), (2, True)])
def test_a_commit_interrupted_among_its_renames_is_completed_from_its_journal(
    tmp_path, caplog, placed, linked
):
    caplog.set_level("INFO")
    journal = _interrupted_commit(tmp_path, NAMES, False, placed, linked)
    assert journal.name.startswith(".x.png.") and journal.suffix == atomic.JOURNAL_SUFFIX
    atomic.finish_commit(journal)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(NAMES)
    assert all((tmp_path / n).read_text() == f"all of {n}" for n in NAMES)
    assert f"completed the commit of {journal.name} that a killed run left" in caplog.messages


def test_two_files_get_a_journal_too(tmp_path):
    files = AtomicFiles(tmp_path)
    files.write("a.txt", "a")
    files.write("b.txt", "b")
    journals = []
    real_commit = atomic._commit

    def watch(tmp, path, replace=True):
        journals.extend(tmp_path.glob(f"*{atomic.JOURNAL_SUFFIX}"))
        real_commit(tmp, path, replace)

    atomic._commit = watch
    try:
        files.commit()
    finally:
        atomic._commit = real_commit
    assert len(set(journals)) == 1, "the journal is there while the two files are renamed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]


def test_a_replacing_commit_is_completed_over_the_older_files(tmp_path, caplog):
    caplog.set_level("INFO")
    (tmp_path / "x_kernel.npy").write_text("older")
    journal = _interrupted_commit(tmp_path, NAMES, True, 1)
    atomic.finish_commit(journal)
    assert (tmp_path / "x_kernel.npy").read_text() == "all of x_kernel.npy"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(NAMES)


def test_an_interrupted_commit_whose_name_was_taken_is_undone(tmp_path, caplog):
    journal = _interrupted_commit(tmp_path, NAMES, False, 1)
    (tmp_path / "x_kernel.png").write_text("someone else's")
    atomic.finish_commit(journal)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_kernel.png"]
    message = f"undid the commit of {journal.name}: one of its names was taken since"
    assert message in caplog.messages


@pytest.mark.parametrize(
    "record",
    [
        {"replace": True, "files": [["TMP", ".."]]},
        {"replace": True, "files": [["TMP", "sub/x.png"]]},
        {"replace": "yes", "files": [["TMP", "x.png"]]},
        {"files": [["TMP", "x.png"]]},
        {"replace": True},
        None,
    ],
)
def test_a_journal_that_is_not_ours_is_left_alone_and_named(tmp_path, caplog, record):
    tmp = leftover(tmp_path, "x.png", dead_pid())
    journal = tmp_path / f".x.png.{dead_pid()}-0123abcd{atomic.JOURNAL_SUFFIX}"
    text = json.dumps(record).replace("TMP", tmp.name)
    journal.write_text(text)
    atomic.finish_commit(journal)
    assert journal.read_text() == text and tmp.exists()
    assert f"{journal} is not a commit journal of kxnet: left alone" in caplog.messages


def test_a_temporary_name_of_no_process_is_never_removed(tmp_path):
    """pid 0 names no writer that could have died: such a name is left alone."""
    kept = leftover(tmp_path, "x.png", 0)
    assert remove_leftovers(tmp_path) == [] and kept.exists()
