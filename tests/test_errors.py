"""A user's mistakes, through every entry point: one line, exit status 2, nothing touched.

One table runs ``python -m kxnet.train``, ``kxnet.eval``, ``kxnet.predict``, ``kxnet.bench``
(their Hydra ``main()``, in this process, with a patched ``sys.argv``) and ``kxnet.data`` (its
argparse ``main``) over bad inputs and options: odd folders and files, crafted checkpoints,
mistyped options and values. For each it asserts the exit status, a single ``error: …`` line on
stderr that names the option or file (the pattern), no traceback, no secret, and that no file
outside the run's output folder was created, changed or removed. The crafted checkpoints are
loaded with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` set, which turns torch's default off.
"""

from __future__ import annotations

import importlib
import io
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from kxnet import KXNet
from kxnet.checkpoint import save_weights
from kxnet.config import project_root
from kxnet.errors import StartupError, config_error, one_line_errors, report_error
from trainhelp import QUIET

SECRET = "hunter2-not-to-be-shown"
ENTRY_POINTS = {
    "train": "kxnet.train.__main__",
    "eval": "kxnet.eval.__main__",
    "predict": "kxnet.predict.__main__",
    "bench": "kxnet.bench.__main__",
    "data": "kxnet.data.__main__",
}
# Every case starts from these, so that a check that stopped working costs seconds, not hours.
# The benchmark cache of train and eval is a folder that does not exist yet: a refused run
# must not create it (nor any other folder).
BASE = {
    "train": ["debug=limit", "paths.cache_dir={cache}", *QUIET],
    "eval": ["eval.num_workers=0", "eval.progress=false", "paths.cache_dir={cache}"],
    "predict": ["device=cpu"],
    "bench": ["phases=[synthesis]", "rss=false", "threads=1", "batch=1", "lr_size=8"],
    "data": [],
}


class _RunsCode:
    """Pickles as a call of ``os.system``: what a crafted checkpoint carries."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _training_checkpoint(net: KXNet, config: dict, **extra) -> dict:
    return {
        "pytorch-lightning_version": L.__version__,
        "global_step": 2,
        "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
        "hyper_parameters": {"net": config, **extra},
        "optimizer_states": [],
        "loops": {},
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The odd files and folders the cases point at (their folder must not change)."""
    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    images = root / "images"
    images.mkdir()
    for name in ("a.png", "b.jpg"):
        Image.fromarray(rng.integers(0, 256, (12, 15, 3), dtype=np.uint8)).save(images / name)
    torch.manual_seed(0)
    net = KXNet(2, 1, setting="aniso")
    weights = save_weights(net, root / "weights.pt")
    config = {"scale": 2, "stages": 1, "kernel_size": 11, "setting": "aniso"}
    evil = root / "evil.ckpt"
    marker = root / "code-ran"
    torch.save(_training_checkpoint(net, config, extra=_RunsCode(marker)), evil)
    secret = root / "secret.ckpt"
    torch.save(
        _training_checkpoint(net, {**config, "scale": "${oc.env:KXNET_TEST_SECRET}"}), secret
    )
    crafted = {}  # exported weights whose stored config or weights are not to be believed
    for key, change in {
        "stages_half": {"stages": 1.5},
        "stages_negative": {"stages": -1},
        "stages_huge": {"stages": 10**9},
        "kernel_text": {"kernel_size": "11"},
        "kernel_huge": {"kernel_size": 2**31 + 1},
        "scale_bool": {"scale": True},
        "setting_number": {"setting": 3},
        "stages_unlike_weights": {"stages": 4},
    }.items():
        crafted[key] = root / f"{key}.pt"
        payload = torch.load(weights, weights_only=True)
        payload["config"] = {**payload["config"], **change}
        torch.save(payload, crafted[key])
    for key, value in {"nan_weight": float("nan"), "inf_weight": float("inf")}.items():
        crafted[key] = root / f"{key}.pt"
        payload = torch.load(weights, weights_only=True)
        payload["state_dict"]["stages.0.knet.gamma"] = torch.tensor(value)
        torch.save(payload, crafted[key])
    crafted["resume_half"] = root / "resume_half.ckpt"
    torch.save(_training_checkpoint(net, {**config, "stages": 1.5}), crafted["resume_half"])
    spoilt = _training_checkpoint(net, config)
    spoilt["state_dict"]["net.aux_k"] = torch.full_like(spoilt["state_dict"]["net.aux_k"], 1e400)
    crafted["resume_inf"] = root / "resume_inf.ckpt"
    torch.save(spoilt, crafted["resume_inf"])
    truncated = root / "truncated.pt"
    truncated.write_bytes(weights.read_bytes()[:1000])
    (root / "empty").mkdir()
    (root / "a-file").write_text("not a folder")
    linked = root / "linked"
    linked.mkdir()
    (linked / "b.png").symlink_to(images / "b.jpg")
    flickr = root / "flickr"
    flickr.mkdir()
    with tarfile.open(flickr / "Flickr2K.tar", "w:gz") as tf:  # compressed: not the archive
        data = (images / "a.png").read_bytes()
        info = tarfile.TarInfo("Flickr2K/Flickr2K_HR/000001.png")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return {
        "root": root,
        "images": images,
        "weights": weights,
        "evil": evil,
        "marker": marker,
        "secret": secret,
        "truncated": truncated,
        "empty": root / "empty",
        "file": root / "a-file",
        "linked": linked,
        "flickr": flickr,
        "missing": root / "nowhere",
        **crafted,
    }


# (entry point, arguments, a pattern the one line must match); {name} is a path of `files`,
# {out} the run's output folder (a placeholder in a pattern stands for the path, escaped).
CASES = {
    # python -m kxnet.train
    "train: scale": ("train", ["scale=5"], r"scale=5 is not a KXNet scale: use scale=2, 3 or 4"),
    "train: HR patch smaller than the kernel": (
        "train",
        ["data.lr_patch_size=3", "scale=4"],
        r"data\.lr_patch_size=3 is too small for 21×21 kernels at x4 .*lr_patch_size=6 or more",
    ),
    "train: no devices": (
        "train",
        ["trainer=ddp", "trainer.devices=0"],
        r"trainer\.devices=0 is not a device count",
    ),
    "train: mistyped option": (
        "train",
        ["model.net.stagez=3"],
        r"'model\.net\.stagez'.*did you mean model\.net\.stages",
    ),
    "train: mistyped group option": (
        "train",
        ["trainer=gpx"],
        r"Could not find 'trainer/gpx' Available options in 'trainer': cpu, ddp",
    ),
    "train: value that does not parse": ("train", ["scale=[2"], r"^error: scale=\[2: "),
    "train: a sweep without -m": ("train", ["model.net.stages=1,2"], r"model\.net\.stages=1,2"),
    "train: negative stages": (
        "train",
        ["model.net.stages=-1"],
        r"model\.net\.stages=-1 must be an integer >= 0",
    ),
    "train: interpolation to nowhere": (
        "train",
        ["scale=${{nowhere}}"],  # {{…}}: a brace, through str.format
        r"scale cannot be resolved \(Interpolation key 'nowhere' not found\)",
    ),
    "train: batch of none": ("train", ["data.batch_size=0"], r"data\.batch_size=0 must be"),
    "train: negative loader workers": (
        "train",
        ["data.num_workers=-1"],
        r"data\.num_workers=-1 must be an integer >= 0",
    ),
    "train: an image check that is none": (
        "train",
        ["data.check=bogus"],
        r"data\.check=bogus is not a check of the training images",
    ),
    "train: negative learning rate": (
        "train",
        ["optim.optimizer.lr=-1"],
        r"optim\.optimizer \(torch\.optim\.Adam\) refuses its options: Invalid learning rate",
    ),
    "train: a schedule that cannot be built": (
        "train",
        ["optim=cosine", "optim.scheduler.eta_min=x"],
        r"optim\.scheduler \(kxnet\.train\.schedule\.BudgetCosineLR\) refuses its options",
    ),
    "train: a checkpoint callback option Lightning refuses": (
        "train",
        ["callbacks.model_checkpoint.save_top_k=-5"],
        r"callbacks\.model_checkpoint \(.*ModelCheckpoint\) refuses its options: .*save_top_k",
    ),
    "train: a strategy Lightning does not know": (
        "train",
        ["trainer.strategy=nonsense"],
        r"trainer \(lightning\.pytorch\.trainer\.Trainer\) refuses its options: .*invalid strategy",
    ),
    "train: an evaluation option out of range": (
        "train",
        ["eval={{datasets: [Set5], num_workers: -2}}"],
        r"eval\.num_workers=-2 must be an integer >= 0",
    ),
    "train: an evaluation option that is none": (
        "train",
        ["eval={{datasets: [Set5], workers: 2}}"],
        r"eval\.workers is not an option of eval",
    ),
    "train: no data folder": (
        "train",
        ["paths.train_dir={missing}"],
        r"{missing} does not exist.*paths\.train_dir",
    ),
    "train: output folder under a file": (
        "train",
        ["paths.output_dir={file}/run"],
        r"paths\.output_dir={file}/run is not a writable folder",
    ),
    "train: checkpoint holding code": (
        "train",
        ["ckpt_path={evil}"],
        r"ckpt_path={evil}: holds code \(posix\.system.*was refused",
    ),
    "train: checkpoint with an interpolated config": (
        "train",
        ["ckpt_path={secret}"],
        r"ckpt_path={secret}: its stored config holds an interpolation .* at "
        r"hyper_parameters\.net\.scale",
    ),
    "train: exported weights to resume": (
        "train",
        ["ckpt_path={weights}", "setting=aniso"],
        r"ckpt_path={weights} is not a training checkpoint",
    ),
    "train: resume a checkpoint whose config says stages=1.5": (
        "train",
        ["ckpt_path={resume_half}", "setting=aniso", "scale=2", "model.net.stages=1"],
        r"ckpt_path={resume_half}: its stored hyper_parameters\.net\.stages=1\.5 is not an "
        r"integer 0 to 1000",
    ),
    "train: resume a checkpoint with infinite weights": (
        "train",
        ["ckpt_path={resume_inf}", "setting=aniso", "scale=2", "model.net.stages=1"],
        r"ckpt_path={resume_inf}: weight net\.aux_k holds 2904 non-finite value\(s\)",
    ),
    "train: run folder under a file": (
        "train",
        ["hydra.run.dir={file}/run"],
        r"hydra\.run\.dir={file}/run cannot be written \({file} is a file, not a folder\)",
    ),
    # python -m kxnet.eval
    "eval: scale": ("eval", ["scale=5"], r"scale=5 is not a KXNet scale"),
    "eval: scale, bicubic": ("eval", ["scale=5", "model.net.stages=0"], r"scale=5 is not a"),
    "eval: an untrained network": (
        "eval",
        ["model.net.stages=3"],
        r"model\.net\.stages=3 without ckpt_path",
    ),
    "eval: no checkpoint file": (
        "eval",
        ["ckpt_path={missing}.pt"],
        r"{missing}\.pt: no such checkpoint file",
    ),
    "eval: truncated checkpoint": (
        "eval",
        ["ckpt_path={truncated}"],
        r"{truncated}: not a readable PyTorch checkpoint",
    ),
    "eval: checkpoint holding code": ("eval", ["ckpt_path={evil}"], r"{evil}: holds code"),
    "eval: checkpoint with an interpolated config": (
        "eval",
        ["ckpt_path={secret}"],
        r"{secret}: its stored config holds an interpolation",
    ),
    "eval: checkpoint of another scale": (
        "eval",
        ["ckpt_path={weights}", "scale=3"],
        r"{weights}: checkpoint has scale=2 but scale=3 was asked for",
    ),
    "eval: checkpoint whose config says stages=1.5": (
        "eval",
        ["ckpt_path={stages_half}"],
        r"{stages_half}: its stored config\.stages=1\.5 is not an integer 0 to 1000",
    ),
    "eval: checkpoint of a billion stages": (
        "eval",
        ["ckpt_path={stages_huge}"],
        r"{stages_huge}: its stored config\.stages=1000000000 is not an integer 0 to 1000",
    ),
    "eval: checkpoint whose config differs from its weights": (
        "eval",
        ["ckpt_path={stages_unlike_weights}"],
        r"its stored config says stages=4 but its weights hold stages=1",
    ),
    "eval: checkpoint with a NaN weight": (
        "eval",
        ["ckpt_path={nan_weight}"],
        r"{nan_weight}: weight stages\.0\.knet\.gamma holds 1 non-finite value",
    ),
    "eval: run folder under a file": (
        "eval",
        ["model.net.stages=0", "hydra.run.dir={file}/deeper/run"],
        r"hydra\.run\.dir={file}/deeper/run cannot be written \({file} is a file",
    ),
    "eval: device": ("eval", ["eval.device=tpu"], r"eval\.device=tpu is not a device"),
    "eval: no such test set": (
        "eval",
        ["model.net.stages=0", "eval.datasets=[Nope]"],
        r"eval\.datasets names Nope",
    ),
    "eval: no benchmark folder": (
        "eval",
        ["model.net.stages=0", "paths.benchmark_dir={missing}"],
        r"paths\.benchmark_dir={missing} is not a folder",
    ),
    "eval: mistyped setting": ("eval", ["setting=anisotropic"], r"'setting/anisotropic'"),
    "eval: negative warm-up": (
        "eval",
        ["model.net.stages=0", "eval.warmup=-1"],
        r"eval\.warmup=-1 must be an integer >= 0",
    ),
    # python -m kxnet.predict
    "predict: no input": ("predict", ["model.net.stages=0"], r"input is not set \(\?\?\?\)"),
    "predict: no checkpoint": ("predict", ["input={images}"], r"ckpt_path is not set"),
    "predict: no such input": (
        "predict",
        ["model.net.stages=0", "input={missing}"],
        r"input={missing} does not exist",
    ),
    "predict: a folder without images": (
        "predict",
        ["model.net.stages=0", "input={empty}"],
        r"input={empty} holds no image files",
    ),
    "predict: output is the input folder": (
        "predict",
        ["model.net.stages=0", "input={images}", "output={images}"],
        r"output={images} is the folder of the input images",
    ),
    "predict: input linked from the output folder": (
        "predict",
        ["model.net.stages=0", "input={linked}/b.png", "output={linked}"],
        r"output={linked} is the folder of the input images \({linked}/b\.png\)",
    ),
    "predict: huge tiles": (
        "predict",
        ["model.net.stages=0", "input={images}", "tile.size=100000"],
        r"tile\.size=100000 is more than 4096 LR pixels",
    ),
    "predict: no pixels allowed": (
        "predict",
        ["model.net.stages=0", "input={images}", "max_pixels=0"],
        r"max_pixels=0 must be an integer >= 1",
    ),
    "predict: no such precision": (
        "predict",
        ["model.net.stages=0", "input={images}", "precision=fp8"],
        r"precision=fp8 is not a precision: use precision=32 or bf16",
    ),
    "predict: checkpoint holding code": (
        "predict",
        ["ckpt_path={evil}", "input={images}"],
        r"{evil}: holds code \(posix\.system",
    ),
    "predict: checkpoint of negative stages": (
        "predict",
        ["ckpt_path={stages_negative}", "input={images}"],
        r"{stages_negative}: its stored config\.stages=-1 is not an integer 0 to 1000",
    ),
    "predict: checkpoint whose kernel size is text": (
        "predict",
        ["ckpt_path={kernel_text}", "input={images}"],
        r"{kernel_text}: its stored config\.kernel_size='11' is not an odd integer 1 to 101",
    ),
    "predict: checkpoint of a huge kernel": (
        "predict",
        ["ckpt_path={kernel_huge}", "input={images}"],
        r"config\.kernel_size=2147483649 is not an odd integer",
    ),
    "predict: checkpoint whose scale is a bool": (
        "predict",
        ["ckpt_path={scale_bool}", "input={images}"],
        r"{scale_bool}: its stored config\.scale=True is not 2, 3 or 4",
    ),
    "predict: checkpoint whose setting is a number": (
        "predict",
        ["ckpt_path={setting_number}", "input={images}"],
        r"its stored config\.setting=3 is not iso or aniso",
    ),
    "predict: checkpoint with an infinite weight": (
        "predict",
        ["ckpt_path={inf_weight}", "input={images}"],
        r"{inf_weight}: weight stages\.0\.knet\.gamma holds 1 non-finite value",
    ),
    "predict: run folder under a file": (
        "predict",
        ["model.net.stages=0", "input={images}", "hydra.run.dir={file}/run"],
        r"hydra\.run\.dir={file}/run cannot be written",
    ),
    "predict: device": (
        "predict",
        ["model.net.stages=0", "input={images}", "device=tpu"],
        r"device=tpu is not a device",
    ),
    "predict: scale, bicubic": (
        "predict",
        ["model.net.stages=0", "input={images}", "scale=5"],
        r"scale=5 is not a KXNet scale",
    ),
    "predict: save_stages neither true nor false": (
        "predict",
        ["model.net.stages=0", "input={images}", "save_stages=maybe"],
        r"save_stages=maybe must be true or false",
    ),
    "predict: mistyped option": (
        "predict",
        ["input={images}", "tile.sise=64"],
        r"'tile\.sise'.*did you mean tile\.size",
    ),
    # python -m kxnet.bench
    "bench: device": ("bench", ["device=tpu"], r"device=tpu is not a device: use auto, cpu"),
    "bench: scale": ("bench", ["scale=5"], r"scale=5 is not a KXNet scale"),
    "bench: precision": (
        "bench",
        ["precisions=[float32,float8]"],
        r"precisions must list float32 and any of .* got \['float32', 'float8'\]",
    ),
    "bench: empty batch": ("bench", ["batch=0"], r"batch=0 must be an integer >= 1"),
    "bench: no such image": (
        "bench",
        ["phases=[infer]", "infer.image=Set5/missing.png"],
        r"infer\.image: .*Set5/missing\.png does not exist",
    ),
    # python -m kxnet.data
    "data: no such set": (
        "data",
        ["download", "--sets", "nope"],
        r"argument --sets: invalid choice: 'nope'",
    ),
    "data: no such command": ("data", ["frobnicate"], r"invalid choice: 'frobnicate'"),
    "data: check a missing folder": ("data", ["check", "{missing}"], r"{missing} does not exist"),
    "data: a patch of no pixels": (
        "data",
        ["check", "{images}", "--patch-size", "0"],
        r"argument --patch-size: '0' is not an integer >= 1",
    ),
    "data: prepare into a folder under a file": (
        "data",
        ["prepare", "{images}", "{file}/prepared"],
        r"DEST={file}/prepared is not a writable folder \(Not a directory\)",
    ),
    "data: benchmarks without a copy": (
        "data",
        ["download", "--sets", "benchmarks"],
        r"--from DIR",
    ),
    "data: benchmark copy missing": (
        "data",
        ["download", "--sets", "set5", "--from", "{missing}"],
        r"{missing}/Set5 missing",
    ),
    "data: a compressed Flickr2K copy": (
        "data",
        ["download", "--sets", "flickr2k", "--from", "{flickr}", "--root", "{out}"],
        r"{flickr}/Flickr2K\.tar: MD5 [0-9a-f]+ differs from the pinned",
    ),
}


def _snapshot(roots: list[Path], out: Path) -> dict[str, tuple]:
    """Every file and folder under ``roots`` but ``out``: its kind, and a file's size, time and
    link target."""
    state = {}
    for root in roots:
        if not root.exists():
            continue
        for path in [root, *root.rglob("*")]:
            if path == out or out in path.parents:
                continue
            st = path.lstat()
            if path.is_dir() and not path.is_symlink():
                state[str(path)] = (st.st_mode,)  # its entries are listed themselves
                continue
            link = os.readlink(path) if path.is_symlink() else None
            state[str(path)] = (st.st_mode, st.st_size, st.st_mtime_ns, link)
    return state


def _run(entry: str, args: list[str], out: Path, monkeypatch) -> int:
    module = importlib.import_module(ENTRY_POINTS[entry])
    if entry == "data":
        monkeypatch.setattr(sys, "argv", ["python -m kxnet.data", *args])
        try:
            return module.main(args)
        except SystemExit as stop:
            return stop.code
    if not any(arg.startswith("hydra.run.dir=") for arg in args):
        args = [*args, f"hydra.run.dir={out}"]
    monkeypatch.setattr(sys, "argv", [f"kxnet.{entry}", *args])
    try:
        module.main()
    except SystemExit as stop:
        return stop.code
    return 0


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_input_is_one_line_with_exit_2_and_changes_nothing(
    name, files, tmp_path, monkeypatch, capfd
):
    entry, args, pattern = CASES[name]
    out = tmp_path / "out"
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    monkeypatch.setenv("KXNET_TEST_SECRET", SECRET)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    cache = tmp_path / "cache"
    places = {key: str(path) for key, path in files.items()} | {
        "out": str(out),
        "cache": str(cache),
    }
    args = [arg.format(**places) for arg in (*BASE[entry], *args)]
    pattern = pattern.format(**{key: re.escape(value) for key, value in places.items()})
    root = project_root()
    watched = [files["root"], tmp_path, root / "data", root / "outputs", root / ".cache"]
    before = _snapshot(watched, out)
    capfd.readouterr()
    code = _run(entry, args, out, monkeypatch)
    captured = capfd.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, f"{name}: exit {code}\n{captured.err[-3000:]}"
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{name}: {captured.err[-3000:]}"
    assert re.search(pattern, lines[0]), f"{name}: {lines[0]}"
    assert "Traceback" not in captured.out + captured.err
    assert SECRET not in captured.out + captured.err
    assert not files["marker"].exists(), "a crafted checkpoint ran its code"
    assert _snapshot(watched, out) == before, f"{name}: files changed outside {out}"


def test_the_table_covers_every_entry_point():
    counts = {entry: sum(case[0] == entry for case in CASES.values()) for entry in ENTRY_POINTS}
    assert all(count >= 5 for count in counts.values()), counts
    assert len(CASES) > 70, "the README promises more than 70 mistakes tested"


def test_config_errors_name_the_key_and_full_error_raises(monkeypatch, capsys):
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    cfg = OmegaConf.create({"input": "???", "a": "${nowhere}", "b": {"c": 1}})
    OmegaConf.set_struct(cfg, True)
    messages = {}
    for key in ("input", "a", "b.d"):
        try:
            OmegaConf.select(cfg, key, throw_on_missing=True) if key != "b.d" else cfg.b.d
        except Exception as err:  # what OmegaConf raises is the point
            messages[key] = str(config_error(err))
    assert messages["input"] == "input is not set (???): give it on the command line, input=…"
    assert messages["a"].startswith("a cannot be resolved (")
    assert messages["b.d"].startswith("b.d: no such option")
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as stop, one_line_errors():
        cfg.input  # noqa: B018 - the access raises
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith("error: input is not set")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(MissingMandatoryValue):
        report_error(MissingMandatoryValue("input"))
    with pytest.raises(StartupError):
        report_error(StartupError("shown with its traceback"))


def _chattr(flag: str, *paths: Path) -> bool:
    """Set or clear the immutable attribute (which holds for root too); False where the file
    system or the container does not allow it."""
    try:
        done = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True)
    except FileNotFoundError:
        return False
    return done.returncode == 0


@pytest.mark.parametrize("entry", ["train", "eval", "predict"])
@pytest.mark.parametrize("frozen", ["run folder", "its log file", "its .hydra folder"])
def test_a_run_folder_that_cannot_be_written_is_one_line(
    entry, frozen, files, tmp_path, monkeypatch, capfd
):
    run = tmp_path / "run"  # a run to resume: its folder, config and log are there
    (run / ".hydra").mkdir(parents=True)
    log = run / f"{entry}.log"
    log.write_text("the first run's log\n")
    target = {"run folder": run, "its log file": log, "its .hydra folder": run / ".hydra"}
    if not _chattr("+i", target[frozen]):
        pytest.skip("chattr +i is not allowed here")
    try:
        monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
        monkeypatch.setenv("WANDB_MODE", "disabled")
        base = [arg.format(cache=tmp_path / "cache") for arg in BASE[entry]]
        args = [*base, f"hydra.run.dir={run}"]
        if entry != "train":
            args += ["model.net.stages=0"] + ([f"input={files['images']}"] * (entry == "predict"))
        capfd.readouterr()
        code = _run(entry, args, tmp_path / "unused", monkeypatch)
        err = capfd.readouterr().err
    finally:
        _chattr("-i", target[frozen])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err[-3000:]
    assert lines[0].startswith(f"error: hydra.run.dir={run} cannot be written (")
    assert f"{target[frozen]} is read-only" in lines[0]
    assert sorted(p.name for p in run.iterdir()) == [".hydra", log.name]
