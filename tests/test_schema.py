"""The typed configs: Hydra refuses a wrong type, an unknown key or a value outside an enum while
it composes; the ranges are checked in one pass; every path option is taken against
``paths.root_dir``; the model description is the one place that knows scales and settings."""

from __future__ import annotations

import dataclasses
import enum
import importlib
import inspect
import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.errors import HydraException
from omegaconf import OmegaConf
from PIL import Image

from kxnet import description
from kxnet.config import check_command_line, checked, project_root
from kxnet.description import ModelDescription
from kxnet.errors import StartupError
from kxnet.schema import SCHEMAS, check_ranges, typed
from kxnet.schema.shared import PathsConfig
from trainhelp import QUIET


def _compose(app: str, *overrides: str):
    with initialize_config_module(f"kxnet.conf.{app}", version_base="1.3"):
        return compose(app, overrides=list(overrides))


@pytest.mark.parametrize(
    "app,override",
    [
        ("train", "scale=5"),
        ("train", "setting.name=gauss"),
        ("train", "trainer.precision=fp8"),
        ("train", "export=worst"),
        ("train", "data.batch_size=many"),
        ("train", "data.bogus=1"),
        ("eval", "eval.precision=fp8"),
        ("eval", "scale=1"),
        ("predict", "save_stages=maybe"),
        ("bench", "scale=8"),
    ],
)
def test_hydra_refuses_wrong_types_enums_and_keys_while_composing(app, override):
    with pytest.raises(HydraException):
        _compose(app, override)


@pytest.mark.parametrize(
    "app,args,message",
    [
        ("train", ["scale=5"], "scale=5 is not a KXNet scale: use scale=2, 3 or 4"),
        ("train", ["trainer.precision=fp8"], "trainer.precision=fp8 is not a Lightning precision"),
        ("train", ["export=worst"], "export=worst is not a checkpoint to export: use export=last"),
        ("train", ["data.batch_size=many"], "data.batch_size=many must be an integer"),
        ("predict", ["input=x", "save_stages=maybe"], "save_stages=maybe must be true or false"),
        ("eval", ["eval.precision=16"], "eval.precision=16 is not a precision: use eval.precision"),
    ],
)
def test_a_value_the_schema_refuses_is_one_line_naming_the_option(app, args, message):
    with pytest.raises(StartupError) as refused:
        check_command_line(app, args)
    assert str(refused.value).startswith(message)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    "override,message",
    [
        ("data.num_workers=-1", "data.num_workers=-1 must be an integer >= 0"),
        ("data.batch_size=-4", "data.batch_size=-4 must be an integer >= 1"),
        ("model.net.stages=-1", "model.net.stages=-1 must be an integer >= 0"),
        ("model.net.kernel_size=20", "model.net.kernel_size=20 is even"),
        ("data.noise_max=-1", "data.noise_max=-1.0 must be a number >= 0"),
        ("trainer.log_every_n_steps=0", "trainer.log_every_n_steps=0 must be an integer >= 1"),
    ],
)
def test_every_range_is_checked_in_one_pass(tmp_path, override, message):
    cfg = _compose("train", f"paths.output_dir={tmp_path}", override)
    with pytest.raises(StartupError, match=message):
        check_ranges(cfg)


def test_the_presets_are_within_range(tmp_path):
    for preset in ("experiment=quick", "debug=default", "experiment=setting2_x4"):
        check_ranges(_compose("train", f"paths.output_dir={tmp_path}", preset))


def test_relative_paths_are_taken_against_the_root_dir_whatever_the_working_directory(
    tmp_path, monkeypatch
):
    root = tmp_path / "root"
    monkeypatch.chdir(tmp_path)
    cfg = checked(
        _compose(
            "train",
            f"paths.root_dir={root}",
            "paths.output_dir=out",
            "ckpt_path=runs/last.ckpt",
            "paths.cache_dir='~/kx-cache'",
        )
    )
    assert cfg.ckpt_path == str(root / "runs/last.ckpt")
    assert cfg.paths.output_dir == str(root / "out")
    assert cfg.data.train_dir == str(root / "data/full/DIV2K_Flickr2K_prepared")
    assert cfg.data.cache_dir == cfg.paths.cache_dir
    assert not cfg.paths.cache_dir.startswith(str(root)) and cfg.paths.cache_dir.endswith(
        "kx-cache"
    )
    predict = checked(
        _compose(
            "predict",
            f"paths.root_dir={root}",
            "paths.output_dir=o",
            "input=photos",
            "output=sr",
            "ckpt_path=w.pt",
        )
    )
    assert (predict.input, predict.output, predict.ckpt_path) == tuple(
        str(root / name) for name in ("photos", "sr", "w.pt")
    )
    evaluation = checked(
        _compose("eval", f"paths.root_dir={root}", "paths.output_dir=o", "ckpt_path=w.pt")
    )
    assert evaluation.ckpt_path == str(root / "w.pt")


@pytest.mark.parametrize("app", ["train", "eval"])
def test_the_benchmark_cache_is_under_the_root_dir_unless_the_environment_moves_it(
    app, tmp_path, monkeypatch
):
    root = tmp_path / "root"
    monkeypatch.delenv("KXNET_BENCHMARK_CACHE", raising=False)

    def cache_dir() -> str:
        return checked(
            _compose(app, f"paths.root_dir={root}", "paths.output_dir=o")
        ).paths.cache_dir

    assert cache_dir() == str(root / ".cache" / "benchmarks")
    monkeypatch.setenv("KXNET_BENCHMARK_CACHE", "scratch/lr")
    assert cache_dir() == str(root / "scratch" / "lr")
    monkeypatch.setenv("KXNET_BENCHMARK_CACHE", str(tmp_path / "elsewhere"))
    assert cache_dir() == str(tmp_path / "elsewhere")


def test_eval_and_predict_leave_the_model_to_the_checkpoint_unless_set(tmp_path):
    cfg = checked(_compose("eval", f"paths.output_dir={tmp_path}"))
    assert (cfg.scale, cfg.setting, cfg.model.net.stages, cfg.model.net.kernel_size) == (
        None,
        None,
        None,
        None,
    )
    cfg = checked(_compose("eval", f"paths.output_dir={tmp_path}", "paper=table2"))
    assert cfg.setting.name == "aniso" and cfg.model.net.setting == "aniso"


def test_the_enums_reach_the_code_as_plain_values(tmp_path):
    cfg = checked(_compose("train", f"paths.output_dir={tmp_path}", "setting=aniso", "scale=3"))
    assert type(cfg.scale) is int and type(cfg.model.net.setting) is str
    assert OmegaConf.to_container(cfg)["trainer"]["precision"] == "32-true"


@pytest.mark.parametrize("app", ["train", "eval", "predict", "bench"])
def test_each_command_receives_an_instance_of_its_schema_with_plain_values(tmp_path, app):
    extra = {"train": ["setting=aniso", "scale=3"], "eval": ["scale=4"], "predict": ["input=x"]}
    cfg = checked(_compose(app, f"paths.output_dir={tmp_path}", *extra.get(app, [])))
    config = typed(cfg, app)
    assert type(config) is SCHEMAS[app]
    assert type(config.paths) is PathsConfig and config.paths.output_dir == str(tmp_path)
    plain = dataclasses.asdict(config)
    assert not list(_enums(plain)), "no enum member left in a field"
    assert OmegaConf.to_container(cfg) == plain
    if app == "train":
        assert (config.scale, config.setting.name, config.trainer.precision) == (
            3,
            "aniso",
            "32-true",
        )
        assert config.data.kernel_size == 15 and type(config.scale) is int


def _enums(value):
    """The enum members anywhere in a tree of dicts and lists."""
    if isinstance(value, enum.Enum):
        yield value
    for item in (
        value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    ):
        yield from _enums(item)


COMMANDS = ("train", "eval", "predict", "bench")


def test_nothing_below_a_commands_main_takes_a_dictconfig():
    """Every function and method of the command packages (``__main__`` apart) takes typed options,
    never a ``DictConfig`` nor a parameter named ``cfg``; Hydra's own callback API excepted."""
    offenders = []
    for command in COMMANDS:
        package = importlib.import_module(f"kxnet.{command}")
        for info in pkgutil.iter_modules(package.__path__):
            if info.name == "__main__":
                continue
            module = importlib.import_module(f"kxnet.{command}.{info.name}")
            for name, fn in _functions(module):
                signature = inspect.signature(fn)
                for parameter in signature.parameters.values():
                    hint = str(parameter.annotation)
                    if parameter.name == "cfg" or "DictConfig" in hint:
                        offenders.append(f"{module.__name__}.{name}({parameter.name})")
    assert offenders == ["kxnet.eval.report.PaperTableCallback.on_multirun_end(config)"]


def _functions(module):
    """The functions and methods defined in ``module``."""
    for name, value in vars(module).items():
        if inspect.isfunction(value) and value.__module__ == module.__name__:
            yield name, value
        elif inspect.isclass(value) and value.__module__ == module.__name__:
            for method, fn in vars(value).items():
                fn = fn.__func__ if isinstance(fn, classmethod | staticmethod) else fn
                if inspect.isfunction(fn):
                    yield f"{name}.{method}", fn


def test_the_model_description_is_the_one_place_of_scales_and_settings():
    assert description.SCALES == (2, 3, 4) and description.SETTINGS == ("iso", "aniso")
    model = ModelDescription(scale=4, setting="aniso")
    assert (model.kernel_size, model.stages, model.noise_max) == (21, 19, 25.0)
    assert ModelDescription(3).sigma_range == (0.2, 3.0)
    assert model.disagreement({"scale": 4, "stages": None, "setting": "iso"}) == (
        "setting",
        "aniso",
        "iso",
    )
    for bad in ({"scale": 5}, {"scale": 2, "setting": "gauss"}, {"scale": 2, "kernel_size": 4}):
        with pytest.raises(ValueError):
            ModelDescription(**bad)


def _listing(root: Path) -> dict[str, int]:
    skip = {".git", ".venv", "__pycache__", ".pytest_cache", ".ruff_cache"}
    return {
        str(p.relative_to(root)): p.stat().st_mtime_ns
        for p in root.rglob("*")
        if not skip & set(p.relative_to(root).parts)
    }


@pytest.mark.slow
def test_train_eval_and_predict_from_a_subfolder_read_and_write_under_the_root_dir(tmp_path):
    """Relative options taken against ``paths.root_dir``, from another working directory: the
    checkout is left as it was."""
    checkout = project_root()
    root, cwd = tmp_path / "root", tmp_path / "elsewhere" / "sub"
    cwd.mkdir(parents=True)
    # Copies, so that a path resolved against the checkout instead finds nothing.
    shutil.copytree(checkout / "data" / "train", root / "data" / "train")
    (root / "data/benchmarks/Set5").mkdir(parents=True)  # one image: eval's time is not the point
    shutil.copy(checkout / "data/benchmarks/Set5/bird.png", root / "data/benchmarks/Set5")
    baby = Image.open(checkout / "data/benchmarks/Set5/baby.png")
    baby.crop((0, 0, 48, 40)).save(root / "lr.png")
    before = _listing(checkout)
    env = dict(os.environ, WANDB_MODE="disabled", HYDRA_FULL_ERROR="1")
    env.pop("KXNET_BENCHMARK_CACHE", None)  # the default: .cache/ under the root dir

    def run(command: str, *args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", f"kxnet.{command}", f"paths.root_dir={root}", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    training = run("train", "debug=limit", *QUIET)
    assert f"{root}/data/train" in training.stdout + training.stderr
    (trained,) = (root / "outputs").glob("debug/runs/*/weights.pt")
    weights = str(trained.relative_to(root))
    run(
        "eval",
        f"ckpt_path={weights}",
        "eval.datasets=[Set5]",
        "eval.num_workers=0",
        "eval.progress=false",
    )
    assert len(list((root / "outputs").glob("eval/runs/*/results.json"))) == 1
    run(
        "predict",
        f"ckpt_path={weights}",
        "input=lr.png",
        "output=sr",
        "device=cpu",
    )
    assert (root / "sr" / "lr.png").is_file() and (root / ".cache").is_dir()
    assert list(cwd.iterdir()) == []
    assert _listing(checkout) == before
