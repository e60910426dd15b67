"""``python -m kxnet.bench``: KXNet's speed and memory against the authors' formulation.

    python -m kxnet.bench                               # x4, S = 19, every phase
    python -m kxnet.bench scale=2 'phases=[infer]'      # one phase at x2

Prints the tables of :func:`kxnet.bench.runner.run` and writes ``bench.json`` into the run folder.
A configuration that cannot run (scale, device, dtype, sizes) stops with one line, exit status 2.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from kxnet.atomic import atomic_write
from kxnet.bench.runner import run
from kxnet.config import command
from kxnet.schema.commands import BenchConfig


def measure(config: BenchConfig) -> Path:
    """Measure with the checked, typed ``config``; returns the bench.json written (only then)."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    report = run(config, console)
    out = atomic_write(
        Path(config.paths.output_dir) / "bench.json", json.dumps(report, indent=2, default=float)
    )
    console.print(f"wrote {out}")
    return out


@command("bench")
def main(config: BenchConfig) -> None:
    """Measure with the composed config (checked, typed); writes bench.json."""
    measure(config)


if __name__ == "__main__":
    main()
