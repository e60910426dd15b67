"""Fault injection: what `python -m kxnet.train` promises when things go wrong.

1. Start-up checks: every run that cannot succeed stops before training with one line (what,
   where, how to fix), exit status 2, no traceback unless HYDRA_FULL_ERROR=1.
2. A run SIGKILLed at any point (a random step, during a checkpoint save, at a random moment)
   resumes from its last checkpoint to the same weights, bit for bit, as the uninterrupted run.
3. A step with a NaN/Inf loss or kernel estimate is not applied and is logged with its step and
   the batch's kernel parameters; after N such steps within a window the run rolls back to the
   last good checkpoint with a lower learning rate; under DDP all ranks agree. The policy as
   shipped (3 in 100, x0.5, 5 roll-backs) is run as it is.

The kill points and NaN steps are drawn from a seed that each test prints (and names in its
failure messages): ``KXNET_FAULT_SEED=N`` replays a run.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DistributedSampler

from kxnet import atomic
from kxnet.data.hr_dataset import EpochSampler
from kxnet.data.resumable import ResumableDataLoader
from kxnet.errors import DataError, DivergedError, StartupError, one_line_errors
from kxnet.schema import typed
from kxnet.train import train
from kxnet.train.atomic_checkpoints import AtomicCheckpointIO
from trainhelp import QUIET, compose_train

TESTS = Path(__file__).parent
# A one-stage network on 22×22 HR patches (the smallest that hold its 21×21 kernels), batches of
# 2, 3 steps an epoch, last.ckpt every 2 steps, 8 steps: checkpoints fall in the middle and at
# the end of epochs.
TINY = [
    "debug=default",
    "trainer.detect_anomaly=false",
    "trainer.deterministic=true",
    "trainer.limit_val_batches=0",
    "test=false",
    "model.net.stages=1",
    "data.lr_patch_size=11",
    "data.samples_per_epoch=6",
    "callbacks.model_checkpoint.monitor=null",
    "callbacks.last_checkpoint.every_n_train_steps=2",
    "trainer.max_steps=8",
]


def _cli(args: list[str], cwd: Path, env: dict | None = None, script: str | None = None):
    """Start ``python -m kxnet.train ARGS`` (or the fault-injecting script), W&B off."""
    environ = dict(os.environ, WANDB_MODE="disabled", PYTHONPATH=str(TESTS))
    environ.pop("HYDRA_FULL_ERROR", None)
    environ.update(env or {})
    entry = [script] if script else ["-m", "kxnet.train"]
    return subprocess.Popen(
        [sys.executable, *entry, *QUIET, *args],
        cwd=cwd,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@dataclass
class FaultSeed:
    """The seed of a test's random fault points, and a generator drawing them."""

    seed: int
    rng: random.Random

    def __str__(self) -> str:
        return f"seed {self.seed}, replay with KXNET_FAULT_SEED={self.seed}"


@pytest.fixture
def fault_seed() -> FaultSeed:
    """``KXNET_FAULT_SEED`` if set, else a fresh seed; printed (pytest shows it on failure)."""
    seed = int(os.environ.get("KXNET_FAULT_SEED") or random.SystemRandom().randrange(2**32))
    print(f"fault-injection seed {seed} (replay with KXNET_FAULT_SEED={seed})")
    return FaultSeed(seed, random.Random(seed))


def _image(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (120, 60, 30)).save(path)


# ---------------------------------------------------------------------------------------------
# 1. Start-up checks
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A real two-step run of a one-stage x2 iso network: its folder (checkpoints, weights.pt)."""
    out = tmp_path_factory.mktemp("trained")
    train(typed(compose_train(out, *TINY, "trainer.max_steps=2", *QUIET), "train"))
    return out


def _bad_runs(root: Path, trained: Path) -> dict[str, tuple[list[str], str]]:
    """Overrides of a run that cannot succeed → a pattern its one-line error must match."""
    empty = root / "empty"
    empty.mkdir()
    _image(root / "small" / "a.png", 12)
    broken = root / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    blocker = root / "a-file"
    blocker.write_text("not a folder")
    ckpt = trained / "checkpoints" / "last.ckpt"
    truncated = root / "truncated.ckpt"
    truncated.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    return {
        "no data folder": ([f"paths.train_dir={root / 'nowhere'}"], r"does not exist.*train_dir"),
        "no images": ([f"paths.train_dir={empty}"], r"no image files.*train_dir"),
        "unreadable image": ([f"paths.train_dir={broken}"], r"unreadable image.*a\.png"),
        "images smaller than a patch": (
            [f"paths.train_dir={root / 'small'}"],
            r"none of the 1 images.*22×22 HR patch",
        ),
        "negative stages": (
            ["model.net.stages=-1"],
            r"model\.net\.stages=-1 must be an integer >= 0",
        ),
        "even kernel": (["setting.kernel_size=20"], r"setting\.kernel_size=20 is even"),
        "kernel larger than the patch allows": (
            ["data.lr_patch_size=4"],
            r"data\.lr_patch_size=4 is too small for 21×21 kernels.*lr_patch_size=11 or more",
        ),
        "model and data kernels differ": (
            ["model.net.kernel_size=15"],
            r"model\.net\.kernel_size=15 differs from .*setting\.kernel_size=21",
        ),
        "batch larger than an epoch": (["data.batch_size=8"], r"data\.batch_size=8 is more than"),
        "output folder not writable": (
            [f"paths.output_dir={blocker / 'run'}"],
            r"paths\.output_dir=.*a-file/run is not a writable folder",
        ),
        "missing validation set": (
            ["trainer.limit_val_batches=1", "data.val_datasets=[Set5,Nope]"],
            r"data\.val_datasets names Nope, but there are no images in .*Nope",
        ),
        "no test set": (["test=true", "data.test_datasets=[Nope]"], r"data\.test_datasets"),
        "final evaluation on no device": (
            ["eval={device: gpu0, datasets: [Set5]}"],
            r"eval\.device=gpu0 is not a device: use auto, cpu, cuda or cuda:N",
        ),
        "checkpoint missing": ([f"ckpt_path={root / 'none.ckpt'}"], r"ckpt_path=.*does not exist"),
        "checkpoint truncated": (
            [f"ckpt_path={truncated}"],
            r"ckpt_path=.*truncated\.ckpt: not a readable PyTorch checkpoint",
        ),
        "checkpoint of other stages": (
            [f"ckpt_path={ckpt}", "model.net.stages=2"],
            r"trained with model\.net\.stages=1 but model\.net\.stages=2 is configured",
        ),
        "checkpoint of another scale": (
            [f"ckpt_path={ckpt}", "scale=3"],
            r"trained with scale=2 but scale=3",
        ),
        "checkpoint of another setting": (
            [f"ckpt_path={ckpt}", "setting=aniso"],
            r"trained with setting=iso but setting=aniso",
        ),
        "exported weights as checkpoint": (
            [f"ckpt_path={trained / 'weights.pt'}"],
            r"not a training checkpoint",
        ),
    }


def test_every_start_up_check_stops_in_process_with_one_line(tmp_path, trained):
    """Ranges refused by the schema's check (:func:`kxnet.config.checked`, in ``compose_train``)
    included; a value of the wrong type or outside an enum: ``tests/test_schema.py``."""
    for name, (overrides, pattern) in _bad_runs(tmp_path, trained).items():
        out = tmp_path / "out" / name.replace(" ", "_")
        with pytest.raises((StartupError, DataError)) as caught:
            train(typed(compose_train(out, *TINY, *overrides, *QUIET), "train"))
        message = str(caught.value)
        assert "\n" not in message, name
        assert re.search(pattern, message), f"{name}: {message}"
    assert not list((tmp_path / "out").rglob("*.ckpt")), "a refused run trained"


def test_one_line_errors_exit_status_and_traceback_on_request(capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as stop, one_line_errors():
        raise StartupError("scale=5 is not a KXNet scale: use scale=2, 3 or 4")
    assert stop.value.code == 2
    assert capsys.readouterr().err == "error: scale=5 is not a KXNet scale: use scale=2, 3 or 4\n"
    with pytest.raises(SystemExit) as stop, one_line_errors():
        raise DivergedError("training diverged")
    assert stop.value.code == 1
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(StartupError), one_line_errors():
        raise StartupError("shown with its traceback")


# One failure of each kind (data, option, output folder, checkpoint) through the command itself
# (each start costs seconds): its exit status and single line on stderr. The in-process test
# above checks every one.
THROUGH_THE_COMMAND = [
    "unreadable image",
    "kernel larger than the patch allows",
    "output folder not writable",
    "checkpoint truncated",
]


@pytest.mark.slow
def test_start_up_failures_of_each_kind_fail_the_command_with_one_line(tmp_path, trained):
    runs = _bad_runs(tmp_path, trained)
    results = {}
    names = THROUGH_THE_COMMAND
    for start in range(0, len(names), 4):  # a few at a time on a small machine
        procs = {
            name: _cli(
                [*TINY, *runs[name][0], f"hydra.run.dir={tmp_path / 'runs' / str(i)}"], tmp_path
            )
            for i, name in enumerate(names[start : start + 4], start)
        }
        results.update({name: _finish(proc) for name, proc in procs.items()})
    for name, (code, out, err) in results.items():
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2, f"{name}: exit {code}\n{err[-2000:]}"
        assert "Traceback" not in out + err, name
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{name}: {err[-2000:]}"
        assert re.search(runs[name][1], lines[0]), f"{name}: {lines[0]}"
    assert not list((tmp_path / "runs").rglob("*.ckpt"))


@pytest.mark.slow
def test_hydra_full_error_shows_the_traceback(tmp_path):
    proc = _cli(["scale=5", f"hydra.run.dir={tmp_path}"], tmp_path, env={"HYDRA_FULL_ERROR": "1"})
    code, _, err = _finish(proc)
    assert code != 0 and "Traceback" in err and "StartupError: scale=5" in err


# ---------------------------------------------------------------------------------------------
# 2. Kills and exact resume
# ---------------------------------------------------------------------------------------------


def _take(loader, n: int) -> list[list[int]]:
    it = iter(loader)
    return [next(it)["i"].tolist() for _ in range(n)]


class _Indices(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int) -> dict:
        return {"i": i}


def _loader(workers: int, sampler=None) -> ResumableDataLoader:
    data = _Indices()
    return ResumableDataLoader(
        data,
        batch_size=2,
        sampler=sampler or EpochSampler(len(data), seed=3),
        num_workers=workers,
        persistent_workers=workers > 0,
        drop_last=True,
    )


@pytest.mark.parametrize("workers", [0, 2])
def test_loader_resumes_in_the_middle_of_an_epoch(workers):
    whole = _loader(workers)
    whole.sampler.set_epoch(1)
    expected = list(batch["i"].tolist() for batch in whole)
    first = _loader(workers)
    first.sampler.set_epoch(1)
    done = _take(first, 4)
    state = first.state_dict()
    assert state == {"epoch": 1, "batches": 4}
    resumed = _loader(workers)
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(1)  # the loop sets the epoch after restoring the loader
    rest = [batch["i"].tolist() for batch in resumed]
    assert done + rest == expected
    assert resumed.state_dict() == {"epoch": 1, "batches": 6} and len(resumed) == 6
    resumed.sampler.set_epoch(2)
    assert len([batch for batch in resumed]) == 6, "the skip lasts one iteration only"


def test_loader_saved_at_an_epoch_end_starts_the_next_epoch_whole():
    first = _loader(0)
    assert len(list(first)) == 6
    resumed = _loader(0)
    resumed.load_state_dict(first.state_dict())
    resumed.sampler.set_epoch(1)
    assert len(list(resumed)) == 6


def test_loader_skips_the_ranks_own_batches_under_a_distributed_sampler():
    shards = []
    for rank in (0, 1):
        sampler = DistributedSampler(_Indices(), num_replicas=2, rank=rank, shuffle=False)
        whole = [b["i"].tolist() for b in _loader(0, sampler)]
        first = _loader(0, sampler)
        done = _take(first, 1)
        resumed = _loader(0, sampler)
        resumed.load_state_dict(first.state_dict())
        assert done + [b["i"].tolist() for b in resumed] == whole
        shards.append(whole)
    assert not set(sum(shards[0], [])) & set(sum(shards[1], []))


def test_atomic_save_keeps_the_previous_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic.atomic_save({"step": 1}, path)

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.torch, "save", broken_save)
    with pytest.raises(OSError):
        atomic.atomic_save({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


@pytest.mark.parametrize("trainer", ["cpu", "ddp"])
def test_the_trainer_writes_checkpoints_atomically(tmp_path, trainer):
    from hydra.utils import instantiate

    cfg = compose_train(tmp_path, f"trainer={trainer}", "trainer.accelerator=cpu")
    strategy = instantiate(cfg.trainer).strategy
    assert isinstance(strategy.checkpoint_io, AtomicCheckpointIO)


def _state(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def _assert_same_training_state(a: dict, b: dict, what: str) -> None:
    assert a["global_step"] == b["global_step"], what
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(b["state_dict"][key], value), f"{what}: weights {key} differ"
    (opt_a,), (opt_b,) = a["optimizer_states"], b["optimizer_states"]
    torch.testing.assert_close(opt_b["state"], opt_a["state"], rtol=0, atol=0)
    assert opt_a["param_groups"] == opt_b["param_groups"], what
    assert a["lr_schedulers"] == b["lr_schedulers"], what


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    """The reference: 8 steps of TINY without interruption, through the command line."""
    run = tmp_path_factory.mktemp("uninterrupted")
    code, _, err = _finish(_cli([*TINY, f"hydra.run.dir={run}"], run))
    assert code == 0, err[-3000:]
    state = _state(run)
    assert state["global_step"] == 8
    return state


def _resume(killed: Path, tmp_path: Path) -> dict:
    """The killed run resumed from its last.ckpt, in this process (the kill is what the command
    line is needed for)."""
    last = killed / "checkpoints" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert 0 < saved < 8
    run = tmp_path / "resumed"
    train(typed(compose_train(run, *TINY, *QUIET, f"ckpt_path={last}"), "train"))
    return _state(run)


@pytest.mark.slow
def test_sigkill_at_a_random_step_then_resume_gives_the_same_weights(
    tmp_path, uninterrupted, fault_seed
):
    step = fault_seed.rng.randrange(3, 8)
    killed = tmp_path / "killed"
    args = [*TINY, "+callbacks.kill._target_=faultinject.KillAt", f"+callbacks.kill.step={step}"]
    code, _, err = _finish(_cli([*args, f"hydra.run.dir={killed}"], tmp_path))
    assert code == -signal.SIGKILL, f"step {step} ({fault_seed}): exit {code}\n{err[-2000:]}"
    resumed = _resume(killed, tmp_path)
    _assert_same_training_state(uninterrupted, resumed, f"killed at {step} ({fault_seed})")


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_save_keeps_the_last_one(tmp_path, uninterrupted):
    killed = tmp_path / "killed"
    # last.ckpt is saved at steps 2, 4, 6 and 8: the second save dies half-written.
    proc = _cli(
        [*TINY, f"hydra.run.dir={killed}"],
        tmp_path,
        env={"KXNET_TEST_KILL_IN_SAVE": "2"},
        script=str(TESTS / "faultinject.py"),
    )
    code, _, err = _finish(proc)
    assert code == -signal.SIGKILL, err[-2000:]
    checkpoints = killed / "checkpoints"
    partials = list(checkpoints.glob(f".last.ckpt.*{atomic.PARTIAL_SUFFIX}"))
    assert len(partials) == 1, sorted(p.name for p in checkpoints.iterdir())
    (partial,) = partials
    with pytest.raises(Exception):  # noqa: B017 - the half-written file is unreadable
        torch.load(partial, weights_only=True)
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 2
    _assert_same_training_state(uninterrupted, _resume(killed, tmp_path), "killed in a save")


@pytest.mark.slow
def test_sigkill_from_outside_at_a_random_moment_then_resume(tmp_path, uninterrupted, fault_seed):
    killed = tmp_path / "killed"
    args = [*TINY, "+callbacks.pace._target_=faultinject.Pace", "+callbacks.pace.seconds=0.4"]
    proc = _cli([*args, f"hydra.run.dir={killed}"], tmp_path)
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    delay = fault_seed.rng.uniform(0.0, 1.6)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    code, _, err = _finish(proc)
    assert code == -signal.SIGKILL, f"not killed (+{delay:.2f} s, {fault_seed}): {err[-2000:]}"
    _assert_same_training_state(
        uninterrupted, _resume(killed, tmp_path), f"killed at +{delay:.2f} s ({fault_seed})"
    )


# ---------------------------------------------------------------------------------------------
# 3. Non-finite steps
# ---------------------------------------------------------------------------------------------


def _nan_run(out: Path, steps: list[int], *overrides: str) -> dict:
    cfg = compose_train(
        out,
        *TINY,
        "+callbacks.nan._target_=faultinject.NaNAt",
        f"+callbacks.nan.steps={steps}",
        "+callbacks.probe._target_=faultinject.Probe",
        f"+callbacks.probe.path={out / 'probe.pt'}",
        *overrides,
        *QUIET,
    )
    train(typed(cfg, "train"))
    return torch.load(out / "probe.pt", weights_only=True)


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_nan_steps_are_skipped_logged_and_rolled_back(tmp_path, caplog):
    caplog.set_level("WARNING")
    rollback = [
        "callbacks.nonfinite_rollback.max_skipped=3",
        "callbacks.nonfinite_rollback.window=4",
        "callbacks.nonfinite_rollback.lr_factor=0.25",
    ]
    probe = _nan_run(tmp_path, [3, 5, 6], *rollback)
    steps, saved = probe["steps"], probe["saved"]
    lr = steps[0]["lr"]
    for step in (3, 5):
        assert steps[step]["skipped"] and _same(steps[step]["before"], steps[step]["after"])
        assert steps[step]["adam_steps"] == steps[step - 1]["adam_steps"]
        params = [round(v, 4) for v in steps[step]["kernel_params"][0].tolist()]
        line = next(
            r.getMessage() for r in caplog.records if f"training step {step} " in r.getMessage()
        )
        assert "skipped (not applied): loss=nan" in line and str(params) in line
        assert steps[step]["lr"] == lr
    for step in (0, 1, 2, 4, 7):
        assert not steps[step]["skipped"] and not _same(steps[step]["before"], steps[step]["after"])
    # The third skipped step within 4 steps: back to step 2's checkpoint (the one at step 4
    # came after a skipped step), learning rate × 0.25 from then on.
    assert steps[6]["skipped"] and _same(steps[6]["after"], saved[2])
    assert steps[6]["lr"] == pytest.approx(lr * 0.25) and steps[7]["lr"] == pytest.approx(lr * 0.25)
    assert _same(steps[7]["before"], saved[2])
    assert any(
        "rolled back to the weights and optimiser state of step 2" in r.getMessage()
        for r in caplog.records
    )
    last = _state(tmp_path)
    # Applied: steps 0, 1 (restored at the roll-back), then 7.
    assert last["optimizer_states"][0]["state"][0]["step"] == 3
    assert last["callbacks"]["NonFiniteRollback"] == {"recent": [], "skipped": 3, "rollbacks": 1}
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())


def test_a_nan_step_is_not_applied_under_16_bit_mixed_precision(tmp_path):
    # Lightning's 16-mixed on a GPU: autocast and a grad scaler, which unscales the gradients
    # before the module drops them; here the same with the CPU's scaler.
    plugins = (
        "trainer.plugins=[{_target_: kxnet.train.atomic_checkpoints.AtomicCheckpointIO}, "
        "{_target_: lightning.pytorch.plugins.precision.MixedPrecision, precision: 16-mixed, "
        "device: cpu, scaler: {_target_: torch.amp.GradScaler, device: cpu}}]"
    )
    steps = _nan_run(tmp_path, [3], "trainer.precision=null", plugins)["steps"]
    assert [s for s in sorted(steps) if steps[s]["skipped"]] == [3]
    assert _same(steps[3]["before"], steps[3]["after"])
    assert steps[3]["adam_steps"] == steps[2]["adam_steps"] == 3
    assert steps[7]["adam_steps"] == 7 and not _same(steps[7]["before"], steps[7]["after"])


def test_skipped_steps_outside_the_window_do_not_roll_back(tmp_path, caplog):
    """Three NaN steps within 6 steps, but not within 5 (the window): step 1 lies just outside
    the window of 5 steps that ends at step 6, so no roll-back."""
    caplog.set_level("WARNING")
    probe = _nan_run(
        tmp_path,
        [1, 4, 6],
        "callbacks.nonfinite_rollback.max_skipped=3",
        "callbacks.nonfinite_rollback.window=5",
    )
    steps = probe["steps"]
    assert [s for s in sorted(steps) if steps[s]["skipped"]] == [1, 4, 6]
    assert len({steps[s]["lr"] for s in steps}) == 1
    assert not any("rolled back" in r.getMessage() for r in caplog.records)


def test_the_shipped_roll_back_policy_as_it_is(tmp_path, caplog, fault_seed):
    """No override: the policy of conf/train/callbacks/nonfinite_rollback.yaml, which the README
    promises (3 non-finite steps within 100, x0.5, 5 roll-backs). NaN steps are drawn from the
    seed: every third one rolls back and halves the learning rate, the 18th (after 5 roll-backs)
    stops the run."""
    policy = compose_train(tmp_path, *TINY).callbacks.nonfinite_rollback
    shipped = (policy.max_skipped, policy.window, policy.lr_factor, policy.max_rollbacks)
    assert shipped == (3, 100, 0.5, 5), "the README's promise"
    caplog.set_level("WARNING")
    nan_steps = sorted(fault_seed.rng.sample(range(1, 24), 18))
    with pytest.raises(DivergedError, match=r"3 non-finite steps within 100 .* after 5 roll-backs"):
        _nan_run(tmp_path, nan_steps, "trainer.max_steps=24")
    steps = torch.load(tmp_path / "probe.pt", weights_only=True)["steps"]
    lr = steps[0]["lr"]
    done = [s for s in sorted(steps) if "lr" in steps[s]]
    assert done[-1] == nan_steps[-1] - 1, f"stopped at the 18th NaN step ({fault_seed})"
    for step in done:
        skipped = sum(n <= step for n in nan_steps)
        assert steps[step]["skipped"] == (step in nan_steps), f"step {step} ({fault_seed})"
        expected = lr * 0.5 ** min(skipped // 3, 5)
        assert steps[step]["lr"] == pytest.approx(expected), f"step {step} ({fault_seed})"
    rollbacks = [r.getMessage() for r in caplog.records if "rolled back" in r.getMessage()]
    assert len(rollbacks) == 5 and "(roll-back 5 of 5)" in rollbacks[-1], fault_seed


def test_a_run_that_keeps_diverging_stops_with_an_error(tmp_path):
    with pytest.raises(DivergedError, match="training diverged: 2 non-finite steps within 100"):
        _nan_run(
            tmp_path,
            [2, 3, 4, 5, 6, 7],
            "callbacks.nonfinite_rollback.max_skipped=2",
            "callbacks.nonfinite_rollback.max_rollbacks=1",
        )


@pytest.mark.slow
def test_ranks_agree_to_skip_and_roll_back_under_ddp(tmp_path):
    run = tmp_path / "run"
    args = [
        *TINY,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "data.samples_per_epoch=8",
        "trainer.max_steps=6",
        "+callbacks.nan._target_=faultinject.NaNAt",
        "+callbacks.nan.steps=[1,2,3]",
        "+callbacks.nan.rank=1",
        "callbacks.nonfinite_rollback.window=10",
        "+callbacks.probe._target_=faultinject.Probe",
        f"+callbacks.probe.path={tmp_path / 'probe.pt'}",
        f"hydra.run.dir={run}",
    ]
    code, out, err = _finish(_cli(args, tmp_path), timeout=540)  # under pytest-timeout's 600 s
    assert code == 0, err[-3000:]
    probes = [
        torch.load(tmp_path / f"probe.pt.rank{r}", weights_only=True)["steps"] for r in (0, 1)
    ]
    for probe in probes:
        assert [s for s in sorted(probe) if probe[s]["skipped"]] == [1, 2, 3]
        assert _same(probe[3]["after"], probe[0]["before"])  # rolled back to the start
    for step in range(6):
        assert _same(probes[0][step]["after"], probes[1][step]["after"]), f"ranks differ at {step}"
    rank0 = (run / "train.log").read_text()
    rank1 = (run / "train_rank1.log").read_text()
    assert "training step 2 skipped: non-finite values on another rank" in rank0
    assert re.search(r"training step 2 skipped \(not applied\): loss=nan.*\(rank 1\)", rank1)
    assert "rolled back" in rank0 and "rolled back" in rank1
