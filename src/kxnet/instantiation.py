"""Objects built from ``_target_`` config nodes (Hydra's ``instantiate``), where options that
the target refuses are one line naming the option: the optimiser and its schedule, the data
module, the LightningModule, the callbacks, the loggers and the Trainer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate

from kxnet.errors import StartupError

__all__ = ["build", "build_group"]


def build(node: Mapping, key: str, **kwargs: Any) -> Any:
    """``instantiate(node, **kwargs)``, where options that the target refuses are one line
    naming ``key``: ``callbacks.model_checkpoint (…ModelCheckpoint) refuses its options: …``; a
    :class:`~kxnet.errors.StartupError` the target raises itself is passed on as it is."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, StartupError):
            raise err.__cause__ from err
        cause = str(err.__cause__ or err).strip().splitlines()[-1]
        raise StartupError(f"{key} ({node.get('_target_')}) refuses its options: {cause}") from err


def build_group(name: str, group: Mapping | None) -> list[Any]:
    """:func:`build` of every ``_target_`` entry of the group ``name`` (``callbacks``,
    ``logger``; None: none), in order."""
    return [
        build(entry, f"{name}.{key}")
        for key, entry in (group or {}).items()
        if entry and "_target_" in entry
    ]
