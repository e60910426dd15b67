"""One of the paper's Tables 1-4 from ``python -m kxnet.eval`` results, the paper's beside ours.

    python experiments/report.py table3 outputs/table3/multirun/2026-01-01_10-00-00
    python experiments/report.py table2 RUN_OR_SWEEP_FOLDER… --out experiments/results/NAME

Reads every ``results.json`` given or found under the folders given (a multirun folder holds
one per job; runs of several methods can be combined), prints the table and, with ``--out``,
writes ``table.md``, ``table.csv``, ``report.json`` (the runs' settings and averages, without
per-image records) and ``command.txt`` (the command of every run, then this one) there. Exit
status 2 with one line when the results do not make the table.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from kxnet.errors import ReportError
from kxnet.eval.report import PAPER_TABLES, TABLES, load_results, paper_table, write_files

PAPER = PAPER_TABLES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", choices=TABLES)
    parser.add_argument("results", nargs="+", type=Path, help="results.json files or folders")
    parser.add_argument("--out", type=Path, help="folder to write the table files into")
    parser.add_argument("--paper", type=Path, default=PAPER, help="the paper's numbers (JSON)")
    parser.add_argument("--no-paper", action="store_true", help="leave the paper's numbers out")
    args = parser.parse_args(argv)
    try:
        paper = None if args.no_paper else json.loads(args.paper.read_text())
        runs = load_results(args.results)
        files = paper_table(args.table, runs, paper)
    except (ReportError, OSError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(files["table.md"], end="")
    if args.out:
        commands = [
            payload.get("command", f"# {file}: command not recorded") for file, payload in runs
        ]
        report = shlex.join(["python", "experiments/report.py", *(argv or sys.argv[1:])])
        files["command.txt"] = "\n".join([*commands, report]) + "\n"
        written = write_files(args.out, files)
        print(f"Wrote {', '.join(p.name for p in written)} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
