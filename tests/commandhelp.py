"""Running ``kxnet.eval``, ``kxnet.predict`` and ``kxnet.bench`` in-process on the config their
``main()`` hands over (:func:`kxnet.config.checked`, then :func:`kxnet.schema.typed`), with the
exit status the command would give."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence

from hydra import compose, initialize_config_module

from kxnet.bench.__main__ import measure
from kxnet.config import check_command_line, checked
from kxnet.errors import USER_ERRORS, report_error
from kxnet.eval import run as eval_run
from kxnet.predict import prediction
from kxnet.schema import typed


def typed_config(app: str, overrides: Sequence[str]):
    """The typed config that ``python -m kxnet.APP OVERRIDES`` hands over."""
    check_command_line(app, overrides)  # a value the schema refuses: one line, as main() says
    with initialize_config_module(f"kxnet.conf.{app}", version_base="1.3"):
        return typed(checked(compose(app, overrides=list(overrides))), app)


def run_eval(overrides: Sequence[str]) -> int:
    """``python -m kxnet.eval OVERRIDES``'s exit status; outside a Hydra run, the run folder is
    ``paths.output_dir``, a new temporary folder unless given."""
    if not any(o.startswith("paths.output_dir=") for o in overrides):
        overrides = [*overrides, f"paths.output_dir={tempfile.mkdtemp(prefix='eval-')}"]
    try:
        config = typed_config("eval", overrides)
    except USER_ERRORS as err:
        return report_error(err)
    return eval_run.run(config, overrides)


def run_predict(overrides: Sequence[str]) -> int:
    """``python -m kxnet.predict OVERRIDES``'s exit status; outside a Hydra run, the run folder
    is the output folder."""
    output = [o.split("=", 1)[1] for o in overrides if o.startswith("output=")]
    run_folder = [f"paths.output_dir={output[0]}"] if output else []
    try:
        config = typed_config("predict", [*run_folder, *overrides])
    except USER_ERRORS as err:
        return report_error(err)
    return prediction.run(config)


def run_bench(overrides: Sequence[str]) -> int:
    """``python -m kxnet.bench OVERRIDES``'s exit status; the run folder is ``paths.output_dir``
    (give it)."""
    try:
        measure(typed_config("bench", overrides))
    except USER_ERRORS as err:
        return report_error(err)
    return 0
