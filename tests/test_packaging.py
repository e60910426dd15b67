"""The package outside its checkout: the console scripts, each command's own ``--help``, and
(slow) a wheel installed into a fresh virtual environment, run from an empty folder with no data
option (the bundled T91, Set5 and Set14 ship inside the package)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from kxnet.config import APPS, config_groups, project_root
from kxnet.data.download import verify_benchmarks

REPO = project_root()
SCRIPTS = {f"kxnet-{app}": app for app in (*APPS, "data")}


def _help(command: list[str], cwd: Path, env: dict | None = None) -> str:
    result = subprocess.run(
        [*command, "--help"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _groups(help_text: str) -> dict[str, list[str]]:
    """The ``group: option, …`` lines of a Hydra help's "Configuration groups" section."""
    section = help_text.split("== Configuration groups ==", 1)[1].split("== Config ==", 1)[0]
    lines = [line for line in section.splitlines()[1:] if ": " in line]
    return {name: opts.split(", ") for name, opts in (line.split(": ", 1) for line in lines)}


def _check_eval_help(text: str) -> None:
    assert text.startswith("kxnet-eval (python -m kxnet.eval)")
    assert "Usage:\n  kxnet-eval ckpt_path=FILE" in text
    groups = _groups(text)
    assert groups["paper"] == ["table1", "table2", "table3", "table4"]
    assert groups["setting"] == ["aniso", "iso"] and "paths" in groups
    assert not {"trainer", "logger", "callbacks", "experiment", "debug"} & set(groups)


def test_console_scripts_point_at_each_commands_main():
    found = {ep.name: ep for ep in entry_points(group="console_scripts") if ep.name in SCRIPTS}
    assert set(found) == set(SCRIPTS)
    for name, app in SCRIPTS.items():
        assert found[name].value.startswith(f"kxnet.{app}.__main__:")
        assert callable(found[name].load())


def test_kxnet_data_keeps_its_exit_status(monkeypatch, tmp_path, capsys):
    from kxnet.data.__main__ import console_main

    missing = tmp_path / "nothing"
    monkeypatch.setattr(sys, "argv", ["kxnet-data", "check", str(missing)])
    with pytest.raises(SystemExit) as exit_info:
        console_main()
    assert exit_info.value.code == 2 and "error:" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["kxnet-data", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        console_main()
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("usage: kxnet-data")


def test_each_help_shows_its_usage_and_only_its_own_groups(tmp_path):
    _check_eval_help(_help([sys.executable, "-m", "kxnet.eval"], tmp_path))
    train = _help([sys.executable, "-m", "kxnet.train"], tmp_path)
    assert "Usage:\n  kxnet-train [setting=iso|aniso]" in train
    groups = _groups(train)
    assert {"trainer", "logger", "callbacks", "experiment", "debug", "hparams_search"} <= set(
        groups
    )
    assert groups["hydra/launcher"] == ["local", "slurm"]
    assert "paper" not in groups
    assert groups == config_groups("train")


def test_the_commands_start_without_what_only_some_of_their_runs_need():
    """Start-up time: torchmetrics and Lightning (training only) take seconds to import, onnx and
    onnxruntime (``backend=onnx`` only) a second."""
    code = (
        "import sys, kxnet.eval.__main__, kxnet.predict.__main__, kxnet.train.__main__\n"
        "print(sorted({'lightning', 'torchmetrics', 'onnx', 'onnxruntime'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_config_groups_are_those_of_the_command_and_the_shared_folder():
    on_disk = {p.parent.name for p in (REPO / "conf" / "predict").rglob("*.yaml")} - {"predict"}
    shared = {p.parent.name for p in (REPO / "conf" / "shared").rglob("*.yaml")} - {"hydra"}
    groups = config_groups("predict")
    assert set(groups) == on_disk | (shared - {"launcher"}) | {"hydra/launcher"}
    assert "trainer" not in groups and "paper" not in config_groups("bench")


def _site_packages(venv: Path) -> Path:
    return Path(
        sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)})
    ).resolve()


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_runs_from_an_empty_folder(tmp_path):
    # Build from a copy, so that the checkout gets no build/ or egg-info of it.
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for folder in ("src", "conf", "data"):
        shutil.copytree(REPO / folder, source / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["--no-index", "-w", str(dist), str(source)],
        check=True,
        timeout=300,
    )
    (wheel,) = dist.glob("kxnet-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"kxnet/conf/{p.relative_to(REPO / 'conf')}" for p in (REPO / "conf").rglob("*")}
    configs = {n for n in configs if n.endswith((".yaml", "__init__.py"))}
    assert configs <= names, sorted(configs - names)
    assert {"kxnet/eval/paper_tables.json", "kxnet/data/__init__.py", "kxnet/models.json"} <= names
    bundled = {
        f"kxnet/bundled/{p.relative_to(REPO / 'data')}"
        for sub in ("train/T91", "benchmarks/Set5", "benchmarks/Set14")
        for p in (REPO / "data" / sub).glob("*.png")
    }
    assert len(bundled) == 91 + 5 + 14 and bundled <= names, sorted(bundled - names)

    # A fresh venv that sees the dev venv's packages (torch, …) through a .pth file, but not
    # its editable kxnet: a folder named in a .pth file is not searched for .pth files itself.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = _site_packages(venv)
    dev_site = Path(sysconfig.get_path("purelib")).resolve()
    (site / "dev-packages.pth").write_text(f"{dev_site}\n")
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps"]
        + ["--no-index", str(wheel)],
        check=True,
        timeout=300,
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KXNET_", "PYTHON"))}
    env |= {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "1"}

    def output(code: str) -> str:
        result = subprocess.run(
            [str(python), "-c", code], cwd=empty, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout.strip()

    where = output("import kxnet, kxnet.config as c; print(kxnet.__file__, c.project_root())")
    package, root = (Path(p) for p in where.split())
    assert package.resolve().is_relative_to(site) and root == empty.resolve()
    # The shipped Set5 and Set14 are the published HR images, pixel for pixel.
    shipped = site / "kxnet" / "bundled" / "benchmarks"
    assert verify_benchmarks(shipped, ("Set5", "Set14")) == {"Set5": 5, "Set14": 14}
    # Every command's groups come from the installed package, the same as the checkout's.
    listed = output("import kxnet.config as c; print({a: c.config_groups(a) for a in c.APPS})")
    assert listed == str({app: config_groups(app) for app in APPS})

    _check_eval_help(_help([str(venv / "bin" / "kxnet-eval")], empty, env))
    result = subprocess.run(
        [
            str(venv / "bin" / "kxnet-train"),
            "debug=default",
            f"paths.cache_dir={tmp_path / 'cache'}",
            "trainer.max_steps=4",
            "trainer.val_check_interval=2",
            "callbacks.model_summary=null",
        ],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = (empty / "outputs" / "debug" / "runs").iterdir()
    assert (run / "weights.pt").is_file() and (run / "train.log").is_file()
    assert "step 4/4" in (run / "train.log").read_text()
    assert sorted(p.name for p in empty.iterdir()) == ["outputs"]


def test_bundled_data_is_the_data_folder_where_there_is_one_else_the_packaged_copy(
    tmp_path, monkeypatch
):
    from kxnet import config

    packaged = tmp_path / "site" / "kxnet" / "bundled"
    (packaged / "train").mkdir(parents=True)
    monkeypatch.setattr(config, "PACKAGED_DATA", packaged)
    (tmp_path / "mine" / "train").mkdir(parents=True)
    root = tmp_path / "root"
    assert config.bundled_path(root, tmp_path / "mine", "train") == str(tmp_path / "mine" / "train")
    assert config.bundled_path(root, tmp_path / "none", "train") == str(packaged / "train")
    # Neither: the configured folder, for the start-up check to name.
    assert config.bundled_path(root, tmp_path / "none", "benchmarks") == str(
        tmp_path / "none" / "benchmarks"
    )
    # A relative data folder is looked for under the run's root, not the checkout.
    assert config.bundled_path(root, "data", "train") == str(packaged / "train")
    (root / "data" / "train").mkdir(parents=True)
    assert config.bundled_path(root, "data", "train") == str(Path("data") / "train")
