"""Hydra/OmegaConf glue: the project root, per-scale resolvers, path resolution, and the
``main()`` of every Hydra command (:func:`command`)."""

from __future__ import annotations

import difflib
import functools
import os
import secrets
import sys
from collections.abc import Callable, Iterator, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import hydra
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException, ValidationError

from kxnet import description, hardware, schema
from kxnet.errors import StartupError, one_line_errors

__all__ = [
    "APPS",
    "CONFIG_MODULE",
    "config_path",
    "config_groups",
    "format_config_groups",
    "project_root",
    "resolve_path",
    "bundled_path",
    "register_resolvers",
    "run_id",
    "check_command_line",
    "checked",
    "command",
]

APPS = ("train", "eval", "predict", "bench")
# The configs ship inside the package: ``kxnet.conf.<app>`` holds each command's primary config
# and its own groups, ``kxnet.conf.shared`` the groups every command uses (on their searchpath).
CONFIG_MODULE = "kxnet.conf"


def config_path(app: str) -> str:
    """The Hydra config path of a command: ``pkg://kxnet.conf.<app>``."""
    if app not in APPS:
        raise ValueError(f"no configs for {app!r}: one of {', '.join(APPS)}")
    return f"pkg://{CONFIG_MODULE}.{app}"


def config_groups(app: str) -> dict[str, list[str]]:
    """The config groups that a command composes from, each with its options: the command's own
    (``kxnet.conf.<app>``) and the shared ones (``kxnet.conf.shared``), nested ones as
    ``hydra/launcher``; the ``hydra`` group itself (Hydra's settings) is left out.

    Hydra's own ``--help`` lists only the groups beside the primary config, not those of its
    search path; the ``--help`` of every command lists these instead.
    """
    config_path(app)  # checks the name
    groups: dict[str, set[str]] = {}

    def walk(folder, prefix: str) -> None:
        for entry in folder.iterdir():
            if not entry.is_dir() or entry.name.startswith(("_", ".")):
                continue
            name = prefix + entry.name
            options = {e.name[: -len(".yaml")] for e in entry.iterdir() if e.name.endswith(".yaml")}
            if options and name != "hydra":
                groups.setdefault(name, set()).update(options)
            walk(entry, f"{name}/")

    for module in (f"{CONFIG_MODULE}.{app}", f"{CONFIG_MODULE}.shared"):
        walk(files(module), "")
    return {name: sorted(options) for name, options in sorted(groups.items())}


def format_config_groups(app: str) -> str:
    """:func:`config_groups` as Hydra's help shows groups: ``group: option, option``, one a line."""
    return "\n".join(f"{name}: {', '.join(opts)}" for name, opts in config_groups(app).items())


def project_root() -> Path:
    """The kxnet checkout (holding ``conf/`` and ``pyproject.toml``), else ``KXNET_ROOT``, else
    the directory the command was started in."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "conf" / "train" / "train.yaml").is_file() and (
            parent / "pyproject.toml"
        ).is_file():
            return parent
    return Path(os.environ.get("KXNET_ROOT", os.getcwd())).resolve()


def resolve_path(path: str | os.PathLike | None, root: str | os.PathLike | None = None) -> Path:
    """An absolute path: ``~`` expanded, relative paths taken against the project root."""
    if path is None:
        raise ValueError("a required path is not set")
    p = Path(os.path.expanduser(str(path)))
    return p if p.is_absolute() else (Path(root) if root else project_root()) / p


# Where an installed kxnet keeps the bundled T91, Set5 and Set14 (the checkout's data/, shipped
# as package data).
PACKAGED_DATA = Path(__file__).resolve().with_name("bundled")


def bundled_path(root: str | os.PathLike, data_dir: str | os.PathLike, sub: str) -> str:
    """``<data_dir>/<sub>`` (``train``, ``benchmarks``; a relative ``data_dir`` taken against
    ``root``, the run's ``paths.root_dir``) when that folder exists, else the copy shipped inside
    the package (an installed kxnet run from a folder without ``data/``), else
    ``<data_dir>/<sub>`` still, for the start-up checks to name."""
    wanted = Path(str(data_dir)) / sub
    here = resolve_path(wanted, os.path.expanduser(str(root)))
    if here.is_dir() or not (PACKAGED_DATA / sub).is_dir():
        return str(wanted)
    return str(PACKAGED_DATA / sub)


def run_id() -> str:
    """A short name part that no other run shares: this process's id (unique among the runs of
    one machine at a time) and 16 random bits (apart between machines), in hex."""
    return f"{os.getpid():x}{secrets.token_hex(2)}"


def register_resolvers() -> None:
    """``${kx.root:}``, ``${kx.bundled:ROOT,DATA_DIR,SUB}`` (:func:`bundled_path`),
    ``${kx.cpu_precision:}`` (:func:`kxnet.hardware.cpu_precision`),
    ``${kx.kernel_size:SETTING,SCALE}``, ``${kx.sigma_range:SETTING,SCALE}`` (null at a null
    scale), ``${kx.noise_max:SETTING}`` (:mod:`kxnet.description`),
    ``${kx.config_groups:APP}`` (the help's list of groups) and ``${kx.run_id:}``
    (:func:`run_id`, drawn once per config: cached, and copied by Hydra into every job of a
    sweep, so that a run's folder name is the same wherever it is read)."""
    resolvers = {
        "kx.root": lambda: str(project_root()),
        "kx.bundled": lambda root, data_dir, sub: bundled_path(root, data_dir, str(sub)),
        "kx.cpu_precision": hardware.cpu_precision,
        "kx.config_groups": lambda app: format_config_groups(str(app)),
        "kx.kernel_size": lambda setting, scale: (
            None if scale is None else description.kernel_size(setting, scale)
        ),
        "kx.sigma_range": lambda setting, scale: (
            None
            if scale is None
            else OmegaConf.create(list(description.train_sigma_range(setting, scale)))
        ),
        "kx.noise_max": lambda setting: description.train_noise_max(setting),
    }
    for name, fn in resolvers.items():
        OmegaConf.register_new_resolver(name, fn, replace=True)
    OmegaConf.register_new_resolver("kx.run_id", run_id, replace=True, use_cache=True)


register_resolvers()
schema.register()


def _keys(node: Any, prefix: str = "") -> Iterator[str]:
    """Every dotted key of a plain config (dicts in dicts)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{prefix}{key}"
            yield from _keys(value, f"{prefix}{key}.")


def _squash(text: str) -> str:
    """Hydra's several-line messages as one line: the indented lists joined with commas, the
    search path (which the user did not ask about) left out."""
    text = text.split("Config search path:")[0]
    parts: list[str] = []
    items: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if line[:1].isspace() and parts:
            items.append(line.strip())
            continue
        if items:
            parts[-1] += " " + ", ".join(items)
            items = []
        parts.append(line.strip())
    if items:
        parts[-1] += " " + ", ".join(items)
    return " ".join(parts)


def _close_keys(app: str, key: str) -> list[str]:
    """The keys of ``app``'s default config that look like ``key`` (for a mistyped option)."""
    try:
        cfg = compose(app, overrides=[])
    except Exception:  # only a hint: the error itself is reported anyway
        return []
    plain = OmegaConf.to_container(cfg, resolve=False)
    keys = [k for k in _keys(plain) if not k.rsplit(".", 1)[-1].startswith("_")]
    return difflib.get_close_matches(key, keys, n=3, cutoff=0.6)


def _unwritable(path: Path) -> str | None:
    """Why ``path`` (a folder to create or write in, or a file to append to) cannot be written,
    or None. ``os.access`` answers for the real user (and for root, a read-only file system)."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing != path and not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | (os.X_OK if existing.is_dir() else 0)):
        return f"{existing} is read-only"
    return None


def _check_run_dir(cfg: DictConfig) -> None:
    """Refuse a run folder (``hydra.run.dir``) that cannot be written, before Hydra creates it
    and writes its config and log there (which would fail with a traceback): the folder or its
    nearest existing parent, and in an existing one (a resumed run's) its ``.hydra`` folder and
    log files."""
    try:
        folder = Path(str(cfg.hydra.run.dir)).expanduser().absolute()
    except OmegaConfBaseException:
        return  # Hydra says what does not resolve
    places = [folder]
    if folder.is_dir():
        places += [folder / str(cfg.hydra.output_subdir), *folder.glob("*.log")]
    for place in places:
        if place != folder and not place.exists():
            continue
        reason = _unwritable(place)
        if reason:
            raise StartupError(
                f"hydra.run.dir={folder} cannot be written ({reason}): set hydra.run.dir (or "
                "paths.root_dir) to a folder you can write to"
            )


def check_command_line(app: str, args: Sequence[str]) -> None:
    """Compose ``app``'s config from a command line of overrides, as Hydra will, and raise
    :class:`StartupError` with one line if that fails: a mistyped option or group option, a
    value that does not parse, a sweep without ``-m`` (or a preset setting
    ``hydra.mode=MULTIRUN``), a run folder that cannot be written (:func:`_check_run_dir`).
    Hydra would print several lines and exit with status 1. Command lines with flags (``-m``,
    ``--cfg``, ``--help``, …) are Hydra's own."""
    args = list(args)
    if any(arg.startswith("-") for arg in args):
        return
    parser = OverridesParser.create()
    sweeps = []
    for arg in args:
        try:
            (override,) = parser.parse_overrides([arg])
        except HydraException as err:
            raise StartupError(f"{arg}: {_squash(str(err))}") from err
        if override.is_sweep_override():
            sweeps.append(arg)
    plain = [arg for arg in args if arg not in sweeps]
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(f"{CONFIG_MODULE}.{app}", version_base="1.3"):
            try:
                cfg = compose(app, overrides=plain, return_hydra_config=True)
            except (HydraException, OmegaConfBaseException) as err:
                cause = err.__cause__ if isinstance(err, HydraException) else err
                refused = (
                    schema.schema_error(cause, plain)
                    if isinstance(cause, ValidationError)
                    else None
                )
                if refused is not None:
                    raise refused from err
                message = _squash(str(err))
                if isinstance(cause, OmegaConfBaseException):
                    message += f" ({_squash(str(cause)).split(' full_key:')[0]})"
                    key = getattr(cause, "full_key", None)
                    close = _close_keys(app, key) if key else []
                    if close:
                        message += f": did you mean {' or '.join(close)}?"
                raise StartupError(message) from err
            # A sweep is a multirun's (a preset may set hydra.mode=MULTIRUN), else a mistake.
            if sweeps and str(cfg.hydra.mode) != str(RunMode.MULTIRUN):
                key = sweeps[0].split("=", 1)[0]
                raise StartupError(
                    f"{sweeps[0]} is a sweep, but this is not a multirun: add -m to run a job for "
                    f"each value, or give one value ({key}=[a,b] is a list, {key}='a,b' a string)"
                )
            if str(cfg.hydra.mode) != str(RunMode.MULTIRUN):
                _check_run_dir(cfg)
    finally:
        GlobalHydra.instance().clear()


def checked(cfg: DictConfig) -> DictConfig:
    """A composed config with every range of its schema checked
    (:func:`kxnet.schema.check_ranges`), resolved, its enums replaced by their values and every
    path option absolute (a relative one taken against ``paths.root_dir``)."""
    try:
        schema.type_optional_groups(cfg)
    except ValidationError as err:
        raise schema.schema_error(err, sys.argv[1:]) or StartupError(_squash(str(err))) from err
    schema.check_ranges(cfg)
    values = schema.plain_values(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True))
    values = schema.absolute_paths(values, schema.path_keys(cfg))
    plain = OmegaConf.create(values)
    OmegaConf.set_struct(plain, True)
    return plain


def command(app: str) -> Callable[[Callable[[Any], Any]], Callable[[], Any]]:
    """Make a task function ``task(config)`` the ``main()`` of ``python -m kxnet.<app>``: Hydra's
    main on ``app``'s config, the composed config checked and made plain by :func:`checked`, then
    handed over typed, as an instance of the command's schema (:func:`kxnet.schema.typed`:
    ``TrainConfig``, ``EvalConfig``, ``PredictConfig``, ``BenchConfig``). Every user error
    (:data:`kxnet.errors.USER_ERRORS`, and a command line that does not compose, a value its
    schema refuses included) is one line on stderr with exit status 2 (1 for a run that failed
    after it had started), Ctrl-C one line with exit status 130; ``HYDRA_FULL_ERROR=1`` shows
    the traceback.

    Hydra prints an exception raised by a task function with its own traceback and exits with
    1, so the conversion happens inside the task function.
    """

    def decorate(task: Callable[[Any], Any]) -> Callable[[], Any]:
        @hydra.main(version_base="1.3", config_path=config_path(app), config_name=app)
        def hydra_main(cfg: DictConfig) -> Any:
            with one_line_errors():
                return task(schema.typed(checked(cfg), app))

        @functools.wraps(task)
        def main() -> Any:
            with one_line_errors():  # also Ctrl-C outside the task (Hydra's set-up)
                check_command_line(app, sys.argv[1:])
            return hydra_main()

        return main

    return decorate
