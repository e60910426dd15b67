"""Mutation testing (``make mutants``): mutmut 3 changes one thing at a time in the modules that
carry the paper and the promises, and runs the fast tests that cover each module; a change that
no test notices is a surviving mutant.

Usage: ``python tests/mutants.py [MODULE ...]`` (no module: all of them). Each module is run in
``outputs/mutants/MODULE`` (a copy of the checkout made by mutmut) and printed as one line of the
score table: killed / (mutants - the equivalent ones listed in ``EQUIVALENT``). Within a module,
mutmut runs each mutant only against the tests (of the module's list) that call the mutated
function.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# module -> (the files mutated, the fast tests run against their mutants)
MODULES: dict[str, tuple[list[str], list[str]]] = {
    "physics": (["physics.py"], ["test_physics.py"]),
    "kernels": (["kernels.py"], ["test_kernels.py"]),
    "loss": (["loss.py"], ["test_loss.py", "test_module.py"]),
    "metrics": (["metrics.py"], ["test_metrics.py"]),
    "official": (["official.py"], ["test_official.py"]),
    "checkpoint": (["checkpoint.py"], ["test_checkpoint.py"]),
    "synthesis": (["data/synthesis.py"], ["test_synthesis.py"]),
    "predict": (["predict/prediction.py"], ["test_prediction.py"]),
    "rollback": (["train/callbacks.py"], ["test_faults.py"]),
    "atomic": (["atomic.py"], ["test_atomic.py"]),
}

# Surviving mutants judged equivalent (no behaviour can tell them from the original): name -> why.
EQUIVALENT: dict[str, str] = {}

CONFIG = """[tool.mutmut]
source_paths = ["src/kxnet"]
only_mutate = {only}
pytest_add_cli_args_test_selection = {tests}
pytest_add_cli_args = ["-m", "not slow", "-p", "no:cacheprovider", "-q", "-x"]
also_copy = ["conf", "data", "notebooks", "experiments", "README.md"]
process_isolation = "forkserver"
"""


def prepare(name: str, workdir: Path) -> None:
    """A fresh ``workdir`` holding the checkout's files and a mutmut configuration for ``name``."""
    files, tests = MODULES[name]
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    for entry in ("src", "tests", "conf", "data", "notebooks", "experiments", "README.md"):
        (workdir / entry).symlink_to(ROOT / entry)
    only = json.dumps([f"src/kxnet/{f}" for f in files])
    selection = json.dumps([f"tests/{t}" for t in tests])
    pyproject = (ROOT / "pyproject.toml").read_text()
    (workdir / "pyproject.toml").write_text(
        pyproject + "\n" + CONFIG.format(only=only, tests=selection)
    )


def run(name: str, workdir: Path, children: int) -> dict[str, int | list[str]]:
    """Runs mutmut on ``name``; its counts and the names of its surviving mutants."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.setdefault("KXNET_SHARED_DATA", str(ROOT.parent / "shared" / "data"))
    mutmut = [sys.executable, "-m", "mutmut"]
    log = workdir / "mutmut.log"
    with log.open("w") as out:
        subprocess.run(
            [*mutmut, "run", "--max-children", str(children)],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        )
        subprocess.run(
            [*mutmut, "export-cicd-stats"], cwd=workdir, env=env, stdout=out, check=False
        )
    stats_file = workdir / "mutants" / "mutmut-cicd-stats.json"
    if not stats_file.is_file():
        sys.exit(f"mutants: mutmut did not finish on {name}: see {log}")
    stats = json.loads(stats_file.read_text())
    listing = subprocess.run(
        [*mutmut, "results"], cwd=workdir, env=env, capture_output=True, text=True, check=False
    ).stdout
    stats["survivors"] = [
        line.split(":")[0].strip()
        for line in listing.splitlines()
        if line.strip().endswith(": survived")
    ]
    return stats


def main(argv: list[str]) -> int:
    names = argv or list(MODULES)
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        print(f"mutants: unknown module {', '.join(unknown)}; pick from {', '.join(MODULES)}")
        return 2
    children = int(os.environ.get("MUTANTS_JOBS", os.cpu_count() or 1))
    rows = []
    for name in names:
        workdir = ROOT / "outputs" / "mutants" / name
        prepare(name, workdir)
        stats = run(name, workdir, children)
        equivalent = [s for s in stats["survivors"] if s in EQUIVALENT]
        counted = stats["total"] - len(equivalent)
        score = 100.0 * stats["killed"] / counted if counted else 100.0
        rows.append((name, stats, len(equivalent), score))
        others = [s for s in stats["survivors"] if s not in EQUIVALENT]
        print(f"{name}: {stats['killed']}/{counted} killed ({score:.1f} %)", flush=True)
        for survivor in others:
            print(f"  survived: {survivor}", flush=True)
    print("\n| module | mutants | equivalent | killed | survived | no tests | timeout | score |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, s, eq, score in rows:
        print(
            f"| {name} | {s['total']} | {eq} | {s['killed']} | {s['survived'] - eq} | "
            f"{s['no_tests']} | {s['timeout']} | {score:.1f} % |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
