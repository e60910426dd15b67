"""Mutation testing (``make mutants``): mutmut 3 changes one thing at a time in the modules that
carry the paper and the promises, and runs the fast tests that cover each module; a change that
no test notices is a surviving mutant.

Usage: ``python tests/mutants.py [--report] [MODULE ...]`` (no module: all of them;
``--report``: the table of the last run, running nothing). Each module is run in
``outputs/mutants/MODULE`` (a copy of the checkout made by mutmut) and printed as one line of the
score table: killed / (mutants - the equivalent ones listed in ``EQUIVALENT``). Within a module,
mutmut runs each mutant only against the tests (of the module's list) that call the mutated
function.
"""

from __future__ import annotations

import hashlib
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
    "loss": (
        ["loss.py"],
        [
            "test_loss.py",
            "test_module.py::test_loss_weights_stages_as_eq_12",
            "test_module.py::test_loss_refuses_a_network_without_stages",
        ],
    ),
    "metrics": (["metrics.py", "train/metrics.py"], ["test_metrics.py"]),
    "official": (["official.py"], ["test_official.py"]),
    "checkpoint": (["checkpoint.py"], ["test_checkpoint.py"]),
    "synthesis": (
        ["data/synthesis.py"],
        ["test_synthesis.py", "test_realistic.py", "test_datamodule.py"],
    ),
    "predict": (
        ["predict/files.py"],
        ["test_predict_files.py", "test_prediction.py", "test_predict_cli.py"],
    ),
    "rollback": (["train/callbacks.py"], ["test_faults.py", "test_callbacks.py"]),
    "atomic": (["atomic.py"], ["test_atomic.py"]),
    "ensemble": (["ensemble.py"], ["test_ensemble.py"]),
}

# Surviving mutants judged equivalent (no behaviour can tell them from the original): name -> why.
_CPU = (
    "on a CPU the same: the tensor is made on the CPU either way (on a GPU it would fail "
    "with a device mismatch, which the GPU runs notice)"
)
EQUIVALENT: dict[str, str] = {
    "kxnet.physics.x__coverage__mutmut_4": _CPU,
    "kxnet.physics.x__coverage__mutmut_6": _CPU,
    "kxnet.physics.x__coverage__mutmut_11": _CPU,
    "kxnet.physics.x__coverage__mutmut_13": _CPU,
    "kxnet.physics.x__coverage__mutmut_21": (
        "size / scale for size // scale: the same wherever it is called, since the network's HR "
        "size is always s times the LR size"
    ),
    "kxnet.physics.x_kernel_gradient__mutmut_3": (
        "height / scale for height // scale in the shape check: the same for HR sizes s·h"
    ),
    "kxnet.physics.x_kernel_gradient__mutmut_4": (
        "width / scale for width // scale in the shape check: the same for HR sizes s·w"
    ),
    "kxnet.physics.x_check_shapes__mutmut_13": "k.shape[+1] for k.shape[-1]: kernels are B×p×p",
    "kxnet.physics.x_check_shapes__mutmut_14": "k.shape[-2] for k.shape[-1]: kernels are square",
    "kxnet.physics.x_check_shapes__mutmut_16": "x.shape[+2:] for x.shape[-2:]: x is B×C×H×W",
    "kxnet.physics.x_check_shapes__mutmut_22": "p / 2 >= m for p // 2 >= m: the same for odd p, m",
    "kxnet.physics.x_transpose_ones__mutmut_3": "k.shape[+1] for k.shape[-1]: kernels are B×p×p",
    "kxnet.physics.x_transpose_ones__mutmut_4": "k.shape[-2] for k.shape[-1]: kernels are square",
    "kxnet.physics.x__planes__mutmut_9": "t.shape[+2:] for t.shape[-2:]: t is B×C×H×W",
    "kxnet.physics.x_kernel_gradient__mutmut_61": "r.shape[+2] for r.shape[-2]: r is B×C×h×w",
    "kxnet.physics.x_blur_downsample__mutmut_12": "k.shape[+1] for k.shape[-1]: kernels are B×p×p",
    "kxnet.physics.x_blur_downsample__mutmut_13": "k.shape[-2] for k.shape[-1]: kernels are square",
    "kxnet.physics.x_transpose_upsample__mutmut_14": "e.shape[+2] for e.shape[-2]: e is B×C×h×w",
    "kxnet.physics.x_transpose_upsample__mutmut_20": "k.shape[+1] for k.shape[-1]: B×p×p",
    "kxnet.physics.x_transpose_upsample__mutmut_21": "k.shape[-2] for k.shape[-1]: square",
    "kxnet.physics.x__check_kernels__mutmut_16": "k.shape[+1] for k.shape[-1]: checked 3-D before",
    "kxnet.physics.x__check_kernels__mutmut_17": "k.shape[-2] for k.shape[-1]: checked square",
    "kxnet.physics.x__check_kernels__mutmut_23": (
        "k.shape[-2] for k.shape[-1] in the odd-size message: checked square just before"
    ),
    "kxnet.physics.xǁ_Correlateǁbackward__mutmut_24": "k.shape[+1] for k.shape[-1]: B×p×p",
    "kxnet.physics.xǁ_Correlateǁbackward__mutmut_25": "k.shape[-2] for k.shape[-1]: square",
    "kxnet.physics.xǁ_Spreadǁbackward__mutmut_24": "k.shape[+1] for k.shape[-1]: B×p×p",
    "kxnet.physics.xǁ_Spreadǁbackward__mutmut_25": "k.shape[-2] for k.shape[-1]: square",
    "kxnet.physics.xǁ_Tapsǁbackward__mutmut_9": "g.shape[+2:] for g.shape[-2:]: g is B×C×p×p",
    "kxnet.physics.xǁ_Tapsǁbackward__mutmut_21": "e.shape[+2:] for e.shape[-2:]: e is B×C×h×w",
    "kxnet.physics.xǁ_Tapsǁbackward__mutmut_40": "xp.shape[+2:] for xp.shape[-2:]: 4-D",
    "kxnet.physics.x__spread__mutmut_27": "out.shape[+2:] for out.shape[-2:]: out is 4-D",
    "kxnet.physics.x__correlate__mutmut_23": "y.shape[+2:] for y.shape[-2:]: y is 4-D",
    "kxnet.physics.x__taps__mutmut_8": "xp.shape[+2] for xp.shape[-2]: xp is 4-D",
    "kxnet.physics.x__planes__mutmut_3": (
        "t.reshape(-1, H, W) for t.reshape(1, -1, H, W): conv2d and conv_transpose2d take an "
        "unbatched C×H×W input alike, and every caller reshapes their output"
    ),
    "kxnet.physics.x__check_kernels__mutmut_22": (
        "k.shape[+1] for k.shape[-1] in the odd-size message: checked square and 3-D just before"
    ),
}

_SYN = "kxnet.data.synthesis."
_KORNIA_GEN = (
    "mean and std of kornia's own noise generator, which Seeded.forward_parameters replaces "
    "(kornia's apply_transform adds params['gaussian_noise'] only)"
)
_FLAGS = "a key of kornia's flags dict, which SeededBlurDownsample.apply_transform does not read"
EQUIVALENT |= {
    **{
        _SYN + m: _CPU
        for m in (
            "x_step_generator__mutmut_8",
            "x_uniform__mutmut_6",
            "x_uniform__mutmut_10",
            "xǁSeededǁforward_parameters__mutmut_12",
            "xǁSeededǁforward_parameters__mutmut_15",
            "xǁSeededBlurDownsampleǁdraw__mutmut_4",
            "xǁSeededGaussianNoiseǁdraw__mutmut_14",
            "xǁSeededGaussianNoiseǁdraw__mutmut_18",
            "xǁDegradationǁforward__mutmut_35",
            "xǁDegradationǁforward__mutmut_38",
        )
    },
    **{
        _SYN + f"xǁSeededGaussianNoiseǁ__init____mutmut_{n}": _KORNIA_GEN
        for n in (3, 4, 6, 7, 9, 10)
    },
    **{_SYN + f"xǁSeededBlurDownsampleǁ__init____mutmut_{n}": _FLAGS for n in range(43, 49)},
    _SYN + "xǁSeededBlurDownsampleǁ__init____mutmut_2": (
        "kornia's p=2.0 for p=1.0: Seeded.forward_parameters applies the blur whenever p >= 1"
    ),
    _SYN + "xǁSeededǁforward_parameters__mutmut_29": (
        "u <= p for u < p: equal only with probability 0 for a continuous u"
    ),
    _SYN + "xǁSeededǁapplied__mutmut_3": "gate >= 0.5 for gate > 0.5: the gate is 0 or 1",
    _SYN + "xǁSeededGaussianNoiseǁentries__mutmut_11": (
        "0.0 / σ for 0.0 · σ where the noise was not applied: both 0 for σ > 0 (σ = 0 has "
        "probability 0)"
    ),
    _SYN + "xǁSeededBlurDownsampleǁoutput_shape__mutmut_3": (
        "batch_shape[:+2] for batch_shape[:-2]: batch shapes are B×C×H×W"
    ),
    _SYN + "xǁSeededǁforward_parameters__mutmut_44": (
        "torch.tensor of Python ints without dtype=torch.long: int64 either way"
    ),
    _SYN + "xǁSeededǁforward_parameters__mutmut_46": (
        "torch.tensor of Python ints without dtype=torch.long: int64 either way"
    ),
}


_MAP_LOCATION = (
    "map_location None or left out: the files hold CPU tensors, which load onto the CPU either "
    "way on a machine without a GPU"
)
_CKPT = "kxnet.checkpoint."
EQUIVALENT |= {
    **{_CKPT + f"x_read_checkpoint__mutmut_{n}": _MAP_LOCATION for n in (19, 22)},
    _CKPT + "x_plain_config__mutmut_3": "resolve=None for resolve=False: both falsy",
    _CKPT + "x_plain_config__mutmut_5": "resolve left out: OmegaConf's default is False",
}


_KERNELS = "kxnet.kernels."
EQUIVALENT |= {
    **{
        _KERNELS + m: _CPU
        for m in (
            "x_isotropic_gaussian__mutmut_17",
            "x_anisotropic_gaussian__mutmut_24",
            "x_anisotropic_gaussian__mutmut_27",
            "x_anisotropic_gaussian__mutmut_41",
            "x_anisotropic_gaussian__mutmut_44",
            "x_anisotropic_gaussian__mutmut_51",
            "x__uniform__mutmut_7",
            "x__uniform__mutmut_11",
            "x_random_isotropic__mutmut_4",
            "x_random_anisotropic__mutmut_8",
            "x_random_anisotropic__mutmut_17",
            "x_random_anisotropic__mutmut_28",
        )
    },
    **{
        _KERNELS + f"x_test_bank__mutmut_{n}": (
            "zip(..., strict=…) changed over the three columns of one list of triples: always "
            "of equal length"
        )
        for n in (35, 37, 38)
    },
}


_ENSEMBLE = "kxnet.ensemble."
_MASK = (
    "the mask of known pixels holds only 0 and 1, exact in any float dtype, and broadcasts the "
    "same over B×C×H×W estimates"
)
_STRICT = (
    "zip(..., strict=…) over sequences always of one length (two axes, a stage each, a writer "
    "each, the three properties of a checkpoint)"
)
EQUIVALENT |= {
    **{
        _ENSEMBLE + f"x_reversed_axes__mutmut_{n}": (
            "the 2×2 index grid: indexing='ij' is meshgrid's default, a third row or column is "
            "never read, and the steps compared with 0 are ±1"
        )
        for n in (4, 7, 9, 11, 52, 53, 55, 56)
    },
    **{_ENSEMBLE + f"x__onto_grid__mutmut_{n}": _MASK for n in (3, 6, 8, 9)},
    **{_ENSEMBLE + f"x__onto_grid__mutmut_{n}": _CPU for n in (4, 7)},
    **{_ENSEMBLE + f"x__onto_grid__mutmut_{n}": _STRICT for n in (12, 15, 20)},
    **{_ENSEMBLE + f"x_self_ensemble__mutmut_{n}": _STRICT for n in (56, 59, 60)},
}


_OFFICIAL = "kxnet.official."
EQUIVALENT |= {
    **{
        _OFFICIAL + f"x__infer__mutmut_{n}": "the kernel bank is 24×p×p: axes 1 and 2 are both p"
        for n in (11, 12)
    },
    _OFFICIAL + "x__infer__mutmut_29": (
        "X-net's last proximal convolution maps its channels to as many (C×C×3×3): in or out "
        "channels give the same count"
    ),
    **{_OFFICIAL + f"x_load_official__mutmut_{n}": _MAP_LOCATION for n in (6, 9)},
    **{
        _OFFICIAL + f"x_load_official__mutmut_{n}": (
            "weights_only left out (or None): torch.load's default is weights_only=True since "
            "torch 2.6 (the pinned torch); the refusal is tested"
        )
        for n in (7, 10)
    },
    **{_OFFICIAL + f"x_load_official__mutmut_{n}": _STRICT for n in (19, 22, 30)},
    _OFFICIAL + "x_load_official__mutmut_62": "load_state_dict's strict is True by default",
}


_ATOMIC = "kxnet.atomic."
_UTF8 = "the codec's name in capitals: 'UTF-8' is 'utf-8'"
_MISSING_OK = (
    "unlink(missing_ok=…) of a journal this very call wrote or read: it is there to be removed"
)
EQUIVALENT |= {
    **{
        _ATOMIC + f"x__remove__mutmut_{n}": (
            "rmtree's ignore_errors on a leftover folder of a dead writer: nothing else removes "
            "it meanwhile, and the tests run as a user who may remove it"
        )
        for n in (4, 6, 7)
    },
    _ATOMIC + "x_atomic_write__mutmut_7": _UTF8,
    _ATOMIC + "xǁAtomicFilesǁwrite__mutmut_8": _UTF8,
    _ATOMIC + "xǁAtomicFilesǁcommit__mutmut_5": (
        "a journal for a single file too: one more synced write, the same files in the end "
        "(one rename needs no journal)"
    ),
    **{_ATOMIC + f"xǁAtomicFilesǁcommit__mutmut_{n}": _MISSING_OK for n in (17, 18)},
    **{_ATOMIC + f"x_finish_commit__mutmut_{n}": _MISSING_OK for n in (47, 48)},
    **{
        _ATOMIC + f"x__alive__mutmut_{n}": (
            "pid 0 and pid 1 probed or not: signal 0 to pid 0 (this process group) succeeds and "
            "init (pid 1) always runs, so both count as running either way"
        )
        for n in (1, 2)
    },
    **{
        _ATOMIC + f"x__journal_entries__mutmut_{n}": (
            "a journal is JSON of ASCII (json.dumps escapes every other character): read in "
            "any codec it is the same"
        )
        for n in (3, 5)
    },
    _ATOMIC + "x__journal_entries__mutmut_22": (
        "'.' as a final name is refused by Path(final).name == final already (Path('.').name is '')"
    ),
    _ATOMIC + "x_remove_leftovers__mutmut_42": (
        "an age of exactly min_age_s seconds (a float of the clock) is never met"
    ),
}


_FILES = "kxnet.predict.files."
EQUIVALENT |= {
    _FILES + "x_output_names__mutmut_20": (
        "lstrip('XX.XX') strips the same leading dot: no image suffix begins with 'X'"
    ),
    _FILES + "x_output_names__mutmut_34": (
        "the stages folder left out of the names taken: a later stem that would produce the "
        "same folder is the same stem, whose .png is taken already"
    ),
    **{
        _FILES + f"x_kernel_picture__mutmut_{n}": "a kernel is p×p: its last two axes are both p"
        for n in (16, 17)
    },
    _FILES + "x_save_picture__mutmut_12": "Pillow reads the format's name in any case",
    _FILES + "xǁStripsǁ__init____mutmut_11": (
        "the buffers before the first start(), which sets them: never read"
    ),
    **{_FILES + f"xǁStripsǁpaste__mutmut_{n}": _STRICT for n in (14, 17, 18)},
    **{_FILES + f"xǁStripsǁfinish__mutmut_{n}": _STRICT for n in (3, 6, 7)},
}


_ROLLBACK = "kxnet.train.callbacks."
_LOG_DEFAULTS = (
    "on_step/on_epoch left to Lightning in a training-batch hook: on_step=True, on_epoch=False, "
    "what is given"
)
EQUIVALENT |= {
    **{
        _ROLLBACK + f"x_peak_memory_gib__mutmut_{n}": (
            "the CUDA branch: never taken on a machine without a GPU (the GPU runs check it)"
        )
        for n in range(2, 9)
    },
    _ROLLBACK + "xǁRankSeedǁsetup__mutmut_6": "verbose=None is as quiet as verbose=False",
    **{
        _ROLLBACK + f"xǁResourceMonitorǁ__init____mutmut_{n}": (
            "the start and the step count are set again by on_train_start before any use"
        )
        for n in (3, 5, 6)
    },
    **{
        _ROLLBACK + f"xǁResourceMonitorǁon_train_batch_end__mutmut_{n}": _LOG_DEFAULTS
        for n in (17, 18, 20, 21)
    },
    **{
        _ROLLBACK + f"xǁNonFiniteRollbackǁon_train_batch_end__mutmut_{n}": _LOG_DEFAULTS
        for n in (18, 19, 22, 23, 38, 39, 42, 43)
    },
    **{_ROLLBACK + f"x__cpu_copy__mutmut_{n}": _CPU for n in (8, 10)},
    _ROLLBACK + "xǁNonFiniteRollbackǁ__init____mutmut_32": (
        "'' or None before on_train_start keeps the first state: a roll-back comes after it"
    ),
    **{
        _ROLLBACK + f"xǁNonFiniteRollbackǁ_roll_back__mutmut_{n}": _STRICT
        for n in (15, 18, 21, 27, 30, 31)
    },
}


CONFIG = """[tool.mutmut]
source_paths = ["src/kxnet"]
only_mutate = {only}
pytest_add_cli_args_test_selection = {tests}
pytest_add_cli_args = ["-m", "not slow", "-p", "no:cacheprovider", "-q", "-x"]
also_copy = ["conf", "data", "notebooks", "experiments", "README.md"]
process_isolation = "forkserver"
"""


def fingerprint() -> str:
    """A hash of the code, configs and tests that the mutants are made from and run against."""
    digest = hashlib.sha256()
    for folder in ("src", "conf", "tests"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and path.suffix in (".py", ".yaml") and path.name != "mutants.py":
                digest.update(str(path.relative_to(ROOT)).encode() + path.read_bytes())
    return digest.hexdigest()


def prepare(name: str, workdir: Path) -> None:
    """``workdir`` holding the checkout's files and a mutmut configuration for ``name``: the
    one of an interrupted run of the same code and tests is kept (mutmut goes on where it
    stopped), any other made afresh."""
    files, tests = MODULES[name]
    stamp = workdir / "fingerprint"
    if stamp.is_file() and stamp.read_text() == fingerprint():
        return
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    stamp.write_text(fingerprint())
    for entry in ("src", "tests", "conf", "data", "notebooks", "experiments", "README.md"):
        (workdir / entry).symlink_to(ROOT / entry)
    only = json.dumps([f"src/kxnet/{f}" for f in files])
    selection = json.dumps([f"tests/{t}" for t in tests])
    pyproject = (ROOT / "pyproject.toml").read_text()
    (workdir / "pyproject.toml").write_text(
        pyproject + "\n" + CONFIG.format(only=only, tests=selection)
    )


def run(name: str, workdir: Path, children: int) -> None:
    """Runs mutmut on ``name`` (its output in ``workdir/mutmut.log``)."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.setdefault("KXNET_SHARED_DATA", str(ROOT.parent / "shared" / "data"))
    # One thread a mutant: mutmut runs one mutant a core, and torch's thread pool on a busy core
    # makes the small tensors' tests several times slower.
    env.setdefault("OMP_NUM_THREADS", "1")
    with (workdir / "mutmut.log").open("w") as log:
        subprocess.run(
            [sys.executable, "-m", "mutmut", "run", "--max-children", str(children)],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )


def outcomes(workdir: Path) -> dict[str, str]:
    """Each mutant's outcome as mutmut recorded it: killed, survived, no tests, timeout, not
    checked, …"""
    from mutmut.stats import status_by_exit_code

    found: dict[str, str] = {}
    for meta in sorted((workdir / "mutants").rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        found |= {key: status_by_exit_code[code] for key, code in codes.items()}
    return found


def score(name: str, found: dict[str, str]) -> dict[str, int | float]:
    """The counts of one module; its score: the mutants killed (a test failed, or it hung past
    mutmut's timeout) out of those checked, the equivalent ones left out."""
    counts = {s: sum(v == s for v in found.values()) for s in ("killed", "timeout", "survived")}
    counts["equivalent"] = sum(k in EQUIVALENT for k, v in found.items() if v == "survived")
    counts["no tests"] = sum(v == "no tests" for v in found.values())
    counts["not checked"] = sum(v == "not checked" for v in found.values())
    checked = len(found) - counts["not checked"] - counts["equivalent"]
    detected = counts["killed"] + counts["timeout"]
    counts |= {"mutants": len(found), "score": 100.0 * detected / checked if checked else 100.0}
    counts["survived"] -= counts["equivalent"]
    return counts


def main(argv: list[str]) -> int:
    report_only = "--report" in argv
    names = [a for a in argv if a != "--report"] or list(MODULES)
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        print(f"mutants: unknown module {', '.join(unknown)}; pick from {', '.join(MODULES)}")
        return 2
    children = int(os.environ.get("MUTANTS_JOBS", os.cpu_count() or 1))
    rows = []
    for name in names:
        workdir = ROOT / "outputs" / "mutants" / name
        if not report_only:
            prepare(name, workdir)
            run(name, workdir, children)
        found = outcomes(workdir) if (workdir / "mutants").is_dir() else {}
        if not found:
            print(f"mutants: mutmut did not finish on {name}: see {workdir / 'mutmut.log'}")
            return 1
        rows.append((name, score(name, found)))
        print(f"{name}: {rows[-1][1]['score']:.1f} % of the mutants killed", flush=True)
        for key, outcome in found.items():
            if outcome in ("survived", "no tests") and key not in EQUIVALENT:
                print(f"  {outcome}: {key}", flush=True)
    columns = ("mutants", "killed", "timeout", "survived", "no tests", "equivalent", "not checked")
    print("\n| module | " + " | ".join(columns) + " | score |")
    print("| --- |" + " ---: |" * (len(columns) + 1))
    for name, counts in rows:
        cells = " | ".join(str(counts[c]) for c in columns)
        print(f"| {name} | {cells} | {counts['score']:.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
