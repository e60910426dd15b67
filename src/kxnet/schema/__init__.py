"""The typed schema of every command's config (Hydra structured configs).

Each command's primary config names its schema first in its defaults list (``train_schema``,
``eval_schema``, ``predict_schema``, ``bench_schema``, registered in Hydra's ConfigStore by
:func:`register`), so that the YAML presets and the command line are merged into typed nodes:
Hydra refuses a wrong type, an unknown key or a value outside an enum (scale, setting,
precision, export) while it composes, before any code of ours runs. :func:`check_ranges` then
checks, in one pass, every number that a field declares a range for (:func:`~kxnet.schema.
fields.bounded`, :func:`~kxnet.schema.fields.odd`); :func:`schema_error` words a value the
schema refused as one line.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError
from omegaconf.nodes import BooleanNode, EnumNode, FloatNode, IntegerNode, ValueNode

from kxnet.errors import StartupError
from kxnet.schema.commands import BenchConfig, EvalConfig, PredictConfig
from kxnet.schema.train import TrainConfig

__all__ = [
    "SCHEMAS",
    "register",
    "type_optional_groups",
    "check_ranges",
    "schema_error",
    "path_keys",
    "absolute_paths",
    "plain_values",
    "typed",
]

SCHEMAS = {
    "train": TrainConfig,
    "eval": EvalConfig,
    "predict": PredictConfig,
    "bench": BenchConfig,
}

# What a value of each enum is called in an error ("scale=5 is not a KXNet scale").
_NOUNS = {
    "Scale": "a KXNet scale",
    "Setting": "a setting (iso: paper Setting 1, aniso: Setting 2)",
    "Precision": "a Lightning precision",
    "EvalPrecision": "a precision",
    "Export": "a checkpoint to export",
    "Backend": "an inference backend",
    "ImageCheck": "a check of the training images (header, verify or decode)",
    "KernelMode": "a kernel mode (global: one kernel per image, tiled: one per tile)",
}


def register() -> None:
    """Store every command's schema in Hydra's ConfigStore as ``<command>_schema``."""
    store = ConfigStore.instance()
    for app, schema in SCHEMAS.items():
        store.store(name=f"{app}_schema", node=schema)


def _choices(key: str, enum_type: type[enum.Enum]) -> str:
    names = [str(member) for member in enum_type]
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


def schema_error(err: ValidationError, args: Sequence[str]) -> StartupError | None:
    """A value refused by the schema as one line naming the option and the values it takes
    (None if ``err`` is not about a value): ``scale=5 is not a KXNet scale: use scale=2, 3 or
    4``. ``args`` is the command line, whose text of the value is quoted."""
    key = str(err.full_key or err.key or "")
    node = err.child_node
    given = next(
        (a.split("=", 1)[1] for a in args if a.lstrip("+~").split("=", 1)[0] == key), err.value
    )
    if isinstance(node, EnumNode) and not key.startswith("hydra."):
        noun = _NOUNS.get(node.enum_type.__name__, f"a {node.enum_type.__name__}")
        return StartupError(
            f"{key}={given} is not {noun}: use {key}={_choices(key, node.enum_type)}"
        )
    kinds = {BooleanNode: "true or false", IntegerNode: "an integer", FloatNode: "a number"}
    for kind, words in kinds.items():
        if isinstance(node, kind):
            return StartupError(f"{key}={given} must be {words}")
    return None


def type_optional_groups(cfg: DictConfig) -> None:
    """Each field of ``cfg``'s schema declared with :func:`~kxnet.schema.fields.optional_group`
    and set (not null) merged into a node of its schema, in place: an unknown key is a
    StartupError, a wrong type OmegaConf's ValidationError (as composing raises for the other
    groups)."""
    schema = OmegaConf.get_type(cfg)
    if not dataclasses.is_dataclass(schema):
        return
    for f in dataclasses.fields(schema):
        group = f.metadata.get("group")
        if group is not None and cfg.get(f.name) is not None:
            try:
                cfg[f.name] = OmegaConf.merge(OmegaConf.structured(group), cfg[f.name])
            except ConfigKeyError as err:
                names = ", ".join(g.name for g in dataclasses.fields(group))
                raise StartupError(
                    f"{f.name}.{err.key} is not an option of {f.name}: use {names}"
                ) from err
            except ValidationError as err:
                err.full_key = f"{f.name}.{err.full_key or err.key}"
                raise


def _range_error(key: str, value: float, meta: dict) -> str | None:
    low, high = meta.get("min"), meta.get("max")
    number = "an integer" if isinstance(value, int) else "a number"
    if low is not None and high is not None and not low <= value <= high:
        return f"{key}={value} must be {number} from {low} to {high}"
    if low is not None and value < low:
        return f"{key}={value} must be {number} >= {low}"
    if high is not None and value > high:
        return f"{key}={value} must be {number} <= {high}"
    if meta.get("odd") and value % 2 == 0:
        return f"{key}={value} is even: kernels need a centre pixel; use an odd size"
    return None


def check_ranges(cfg: DictConfig) -> None:
    """Every number of ``cfg`` whose schema field declares a range (or oddness) lies in it,
    else :class:`StartupError` with one line: ``data.num_workers=-1 must be an integer >= 0``.

    A node's own values are resolved (an interpolation that fails raises OmegaConf's error,
    naming the key) before its sub-configs, in the order of the config."""
    schema = OmegaConf.get_type(cfg)
    ranges = {}
    if dataclasses.is_dataclass(schema):
        ranges = {f.name: f.metadata for f in dataclasses.fields(schema) if "min" in f.metadata}
    children = []
    for name in cfg:
        node = cfg._get_node(name)
        if isinstance(node, DictConfig):
            children.append(node)
            continue
        if isinstance(node, ValueNode) and not node._is_missing():
            value = cfg[name]
            meta = ranges.get(str(name))
            if meta and value is not None and not isinstance(value, bool | enum.Enum):
                message = _range_error(cfg._get_full_key(name), value, meta)
                if message:
                    raise StartupError(message)
    for child in children:
        if not child._is_none() and not child._is_missing() and not child._is_interpolation():
            check_ranges(child)


def plain_values(value: Any) -> Any:
    """A resolved config's containers with every enum replaced by its value (``Scale.x2`` by
    2, ``Setting.iso`` by "iso"): what code, checkpoints and loggers are given."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {key: plain_values(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain_values(item) for item in value]
    return value


def _plain_fields(value: Any) -> Any:
    """A schema instance with every enum in its fields (nested instances and containers
    included) replaced by its value (:func:`plain_values`)."""
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return plain_values(value)
    for f in dataclasses.fields(value):
        setattr(value, f.name, _plain_fields(getattr(value, f.name)))
    return value


def typed(cfg: DictConfig, app: str) -> Any:
    """A checked config (:func:`kxnet.config.checked`) as an instance of ``app``'s schema
    (:data:`SCHEMAS`: ``TrainConfig``, ``EvalConfig``, …), its enums given as their values:
    the typed options that a command's ``main()`` hands to the code below it. A ``_target_``
    node is built from ``dataclasses.asdict`` of its field."""
    schema = OmegaConf.structured(SCHEMAS[app])
    return _plain_fields(OmegaConf.to_object(OmegaConf.merge(schema, cfg)))


def path_keys(cfg: DictConfig, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The keys of ``cfg`` whose schema field is a path (:func:`~kxnet.schema.fields.path`)."""
    keys = []
    schema = OmegaConf.get_type(cfg)
    if dataclasses.is_dataclass(schema):
        keys += [(*prefix, f.name) for f in dataclasses.fields(schema) if f.metadata.get("path")]
    for name in cfg:
        node = cfg._get_node(name)
        if isinstance(node, DictConfig) and not node._is_none() and not node._is_missing():
            keys += path_keys(node, (*prefix, str(name)))
    return keys


def absolute_paths(values: dict, keys: Sequence[tuple[str, ...]]) -> dict:
    """``values`` (a resolved config) with every path option of ``keys`` made absolute: ``~``
    expanded, a relative path taken against ``paths.root_dir`` (itself against the working
    directory), whatever the working directory. The one rule for every path option."""
    root = Path(os.path.expanduser(values["paths"]["root_dir"])).absolute()
    values["paths"]["root_dir"] = str(root)
    for key in keys:
        *parents, name = key
        node = values
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(name), str):
            node[name] = str(root / os.path.expanduser(node[name]))
    return values
