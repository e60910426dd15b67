"""Tables in the paper's layout from evaluation results, as markdown and CSV.

A *results payload* is what ``python -m kxnet.eval`` writes to ``results.json``: ``method``,
``config`` (scale, stages, kernel_size, setting, parameters, ckpt_path, true_kernel), ``device``,
``command``, ``summary`` (averages per setting, scale, noise and dataset, see
:func:`kxnet.eval.per_image.summarize`) and ``records`` (one per image, kernel and noise level).

- :func:`run_files`: the tables of one run (PSNR/SSIM, kernel error, per-stage PSNR), written
  beside its ``results.json`` by :func:`write_files`;
- :func:`paper_table`: Tables 1-4 of the paper from several runs (a multirun over scales or
  stages, or runs of several methods), with the paper's numbers beside ours;
- :class:`PaperTableCallback`: a Hydra callback that ends a multirun with :func:`paper_table`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from kxnet.atomic import AtomicFiles
from kxnet.data.benchmarks import DATASETS
from kxnet.errors import ReportError

__all__ = [
    "PAPER_DATASETS",
    "Row",
    "method_of",
    "result_rows",
    "results_markdown",
    "results_csv",
    "stages_markdown",
    "stages_csv",
    "kernels_markdown",
    "kernels_csv",
    "run_files",
    "write_files",
    "load_results",
    "paper_table",
    "PaperTableCallback",
    "PAPER_TABLES",
]

log = logging.getLogger(__name__)

# The paper's tables list the benchmark sets largest first.
PAPER_DATASETS = tuple(reversed(DATASETS))
SETTING_NAMES = {"iso": "Setting 1", "aniso": "Setting 2"}
RESULTS_FILE = "results.json"
REPORT_FILE = "report.json"
TABLES = ("table1", "table2", "table3", "table4")
# The paper's numbers (Tables 1-4, every method, the non-blind check of §5.3), transcribed from
# the paper; shipped with the package, so that the presets find them outside a checkout too.
PAPER_TABLES = Path(__file__).resolve().with_name("paper_tables.json")


@dataclass
class Row:
    """One table row: a method at a setting, scale and noise level; dataset → (PSNR, SSIM)."""

    method: str
    setting: str
    scale: int
    noise: float
    cells: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)


def _datasets(names: Iterable[str]) -> list[str]:
    """The paper's column order (Urban100, BSD100, Set14, Set5), other names after, sorted."""
    names = set(names)
    return [n for n in PAPER_DATASETS if n in names] + sorted(names - set(PAPER_DATASETS))


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _markdown(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _csv(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(["" if v is None else v for v in row] for row in rows)
    return out.getvalue()


def _block_title(setting: str, noise: float) -> str:
    name = SETTING_NAMES.get(setting, setting)
    return f"{name} ({setting}), noise σ = {noise:g}"


def method_of(payload: Mapping) -> str:
    """The run's method name; results without one (a training run's final evaluation) are
    named from their stage count."""
    if payload.get("method"):
        return payload["method"]
    stages = payload["config"]["stages"]
    return "Bicubic" if stages == 0 else f"KXNet (S={stages})"


def result_rows(payload: Mapping) -> list[Row]:
    """One row per (setting, scale, noise) of a results payload."""
    rows: dict[tuple, Row] = {}
    for s in payload["summary"]:
        key = (s["setting"], s["scale"], float(s["noise"]))
        row = rows.setdefault(key, Row(method_of(payload), *key))
        row.cells[s["dataset"]] = (s["psnr_y"], s["ssim_y"])
    return list(rows.values())


def _blocks(rows: Sequence[Row]) -> dict[tuple[str, float], list[Row]]:
    """Rows per (setting, noise), each block sorted by scale (keeping the order within one)."""
    blocks: dict[tuple[str, float], list[Row]] = {}
    for row in rows:
        blocks.setdefault((row.setting, row.noise), []).append(row)
    return {
        key: sorted(blocks[key], key=lambda r: r.scale)
        for key in sorted(blocks, key=lambda k: (k[0] != "iso", k[1]))
    }


def results_markdown(rows: Sequence[Row]) -> str:
    """The paper's Tables 1-2 layout: Method, Scale, then PSNR and SSIM per dataset; a block
    per (setting, noise level)."""
    names = _datasets(n for r in rows for n in r.cells)
    header = ["Method", "Scale", *(f"{n} {m}" for n in names for m in ("PSNR", "SSIM"))]
    parts = []
    for (setting, noise), block in _blocks(rows).items():
        body = [
            [
                r.method,
                f"x{r.scale}",
                *(
                    _fmt(v, d)
                    for n in names
                    for v, d in zip(r.cells.get(n, (None, None)), (2, 4), strict=True)
                ),
            ]
            for r in block
        ]
        parts.append(f"**{_block_title(setting, noise)}**\n\n" + _markdown(header, body))
    return "\n\n".join(parts)


def results_csv(rows: Sequence[Row]) -> str:
    """One line per row: method, setting, scale, noise, then ``<dataset>_psnr``, ``_ssim``."""
    names = _datasets(n for r in rows for n in r.cells)
    header = ["method", "setting", "scale", "noise"]
    header += [f"{n}_{m}" for n in names for m in ("psnr", "ssim")]
    body = [
        [
            r.method,
            r.setting,
            r.scale,
            r.noise,
            *(v for n in names for v in r.cells.get(n, ("", ""))),
        ]
        for block in _blocks(rows).values()
        for r in block
    ]
    return _csv(header, body)


def _summary_blocks(payload: Mapping) -> dict[tuple[str, int, float], dict[str, Mapping]]:
    blocks: dict[tuple[str, int, float], dict[str, Mapping]] = {}
    for s in payload["summary"]:
        blocks.setdefault((s["setting"], s["scale"], float(s["noise"])), {})[s["dataset"]] = s
    return blocks


def stages_markdown(payload: Mapping) -> str:
    """Mean PSNR-Y of X⁽ᵗ⁾ at every stage t (the paper's Table 3 / Fig. 5a), per dataset."""
    parts = []
    for (setting, scale, noise), cells in _summary_blocks(payload).items():
        names = _datasets(cells)
        stages = max(len(cells[n]["stage_psnr_y"]) for n in names)
        body = [
            [str(t), *(_fmt(_at(cells[n]["stage_psnr_y"], t), 2) for n in names)]
            for t in range(stages)
        ]
        title = f"{_block_title(setting, noise)}, x{scale}: PSNR-Y (dB) of X⁽ᵗ⁾"
        parts.append(f"**{title}**\n\n" + _markdown(["Stage t", *names], body))
    return "\n\n".join(parts)


def _at(values: Sequence, index: int):
    return values[index] if index < len(values) else None


def stages_csv(payload: Mapping) -> str:
    """One line per (setting, scale, noise, dataset, stage): the mean PSNR-Y of X⁽ᵗ⁾."""
    body = [
        [method_of(payload), s["setting"], s["scale"], s["noise"], s["dataset"], t, value]
        for s in payload["summary"]
        for t, value in enumerate(s["stage_psnr_y"])
    ]
    return _csv(["method", "setting", "scale", "noise", "dataset", "stage", "psnr_y"], body)


def kernels_markdown(payload: Mapping) -> str:
    """Mean error of the final kernel estimate per dataset: L1 and kernel PSNR."""
    body = [
        [
            f"x{s['scale']}",
            f"{s['noise']:g}",
            s["dataset"],
            _fmt(s["kernel_l1"], 6),
            _fmt(s["kernel_psnr"], 2),
        ]
        for s in sorted(payload["summary"], key=lambda s: (s["scale"], s["noise"]))
    ]
    header = ["Scale", "Noise", "Dataset", "Kernel L1", "Kernel PSNR (dB)"]
    return _markdown(header, body)


def kernels_csv(payload: Mapping) -> str:
    """One line per (setting, scale, noise, dataset): mean kernel L1 and kernel PSNR."""
    body = [
        [
            method_of(payload),
            s["setting"],
            s["scale"],
            s["noise"],
            s["dataset"],
            s["kernel_l1"],
            s["kernel_psnr"],
        ]
        for s in payload["summary"]
    ]
    header = ["method", "setting", "scale", "noise", "dataset", "kernel_l1", "kernel_psnr"]
    return _csv(header, body)


def _describe(payload: Mapping) -> str:
    config = payload["config"]
    source = config.get("ckpt_path") or "no checkpoint (bicubic)"
    return (
        f"{method_of(payload)}: {SETTING_NAMES.get(config['setting'], config['setting'])}, "
        f"x{config['scale']}, S = {config['stages']}, p = {config['kernel_size']}; "
        f"weights: {source}; device: {payload.get('device', '?')}"
    )


def run_files(payload: Mapping) -> dict[str, str]:
    """The files of one evaluation run, name → content: results.json, table.md and CSVs."""
    markdown = "\n\n".join(
        [
            f"# {_describe(payload)}",
            "## PSNR / SSIM on Y (paper Tables 1-2 layout)",
            results_markdown(result_rows(payload)),
            "## Kernel error of the final estimate",
            kernels_markdown(payload),
            "## PSNR-Y per stage (paper Table 3 / Fig. 5a)",
            stages_markdown(payload),
        ]
    )
    return {
        RESULTS_FILE: json.dumps(payload, indent=1) + "\n",
        "table.md": markdown + "\n",
        "table.csv": results_csv(result_rows(payload)),
        "stages.csv": stages_csv(payload),
        "kernels.csv": kernels_csv(payload),
    }


def write_files(folder: str | os.PathLike, files: Mapping[str, str]) -> list[Path]:
    """Write every file under a temporary name first, then rename them all into place
    (:class:`~kxnet.atomic.AtomicFiles`): a failure while writing leaves the folder as it was."""
    with AtomicFiles(folder) as staged:
        for name, text in files.items():
            staged.write(name, text)
        return [staged.folder / name for name in files]


def load_results(paths: Iterable[str | os.PathLike]) -> list[tuple[Path, dict]]:
    """``(file, payload)`` for every results.json given or found under the folders given
    (a multirun folder holds one per job), sorted by file name within a folder."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            files = sorted(path.rglob(RESULTS_FILE), key=lambda p: (len(p.parts), str(p)))
            if not files:
                raise ReportError(f"{path}: no {RESULTS_FILE} under this folder")
        elif path.is_file():
            files = [path]
        else:
            raise ReportError(f"{path}: no such file or folder")
        for file in files:
            try:
                payload = json.loads(file.read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise ReportError(f"{file}: not a readable results file ({err})") from err
            if not isinstance(payload, dict) or "summary" not in payload:
                raise ReportError(f"{file}: not written by python -m kxnet.eval (no summary)")
            found.append((file, payload))
    return found


def _pick(file: Path, payload: Mapping, setting: str, scale: int | None, dataset: str, noise):
    """The summary row of ``dataset`` at ``noise`` (and ``scale``) of one run, checked."""
    config = payload["config"]
    if config["setting"] != setting or (scale is not None and config["scale"] != scale):
        raise ReportError(
            f"{file}: a {config['setting']} x{config['scale']} run, but this table is "
            f"{setting}{'' if scale is None else f' x{scale}'}"
        )
    for s in payload["summary"]:
        if s["dataset"] == dataset and float(s["noise"]) == float(noise):
            return s
    raise ReportError(f"{file}: no {dataset} at noise {noise:g} (evaluate with it)")


def _paper_method(method: str) -> str:
    """The paper's row name for one of ours: "KXNet (S=19)" → "KXNet"."""
    return method.split(" (")[0]


def _benchmark_table(name: str, runs: Sequence[tuple[Path, dict]], paper: Mapping | None):
    spec = paper.get(name, {}) if paper else {}
    setting = "iso" if name == "table1" else "aniso"
    merged: dict[tuple, Row] = {}
    for file, payload in runs:
        if payload["config"]["setting"] != setting:
            raise ReportError(
                f"{file}: a {payload['config']['setting']} run, but {name} is "
                f"{SETTING_NAMES[setting]} ({setting})"
            )
        for row in result_rows(payload):
            # Runs of one method on different datasets (e.g. Urban100 apart) share a row.
            key = (row.method, row.setting, row.scale, row.noise)
            into = merged.setdefault(key, Row(*key))
            twice = sorted(set(into.cells) & set(row.cells))
            if twice:
                raise ReportError(
                    f"{file}: {row.method} x{row.scale} at noise {row.noise:g} on "
                    f"{', '.join(twice)} is in another of the runs too: give each once"
                )
            into.cells.update(row.cells)
    ours = list(merged.values())
    theirs = {
        (e["method"], e["scale"], float(e["noise"])): {d: tuple(v) for d, v in e["cells"].items()}
        for e in spec.get("rows", [])
    }
    rows: list[Row] = []
    for row in ours:
        key = (_paper_method(row.method), row.scale, row.noise)
        label = f"{key[0]} (paper)"
        if key in theirs and not any(
            (r.method, r.scale, r.noise) == (label, *key[1:]) for r in rows
        ):
            rows.append(Row(label, setting, row.scale, row.noise, theirs[key]))
        rows.append(row)
    return rows


def _table3(runs: Sequence[tuple[Path, dict]], paper: Mapping | None) -> tuple[str, str]:
    spec = (paper or {}).get("table3", {})
    theirs = {r["stages"]: r for r in spec.get("rows", [])}
    ours: dict[int, dict] = {}
    for file, payload in runs:
        s = _pick(file, payload, "aniso", 2, "Set14", 0)
        stages = payload["config"]["stages"]
        if stages in ours:
            raise ReportError(f"{file}: a second run with S = {stages}")
        params = payload["config"].get("parameters") if stages else None
        ours[stages] = {
            "psnr": s["psnr_y"],
            "ssim": s["ssim_y"],
            "params_m": params / 1e6 if params else None,
            "seconds": s["seconds"],
            "device": payload.get("device"),
        }
    header = ["S", "PSNR", "SSIM", "Params (M)", "Seconds/image"]
    header += ["Paper PSNR", "Paper SSIM", "Paper params (M)", "Paper seconds"]
    body_md, body_csv = [], []
    for stages in sorted(set(ours) | set(theirs)):
        a, b = ours.get(stages, {}), theirs.get(stages, {})
        values = [a.get(k) for k in ("psnr", "ssim", "params_m", "seconds")]
        values += [b.get(k) for k in ("psnr", "ssim", "params_m", "seconds")]
        body_md.append(
            [str(stages), *(_fmt(v, d) for v, d in zip(values, (2, 4, 2, 3) * 2, strict=True))]
        )
        body_csv.append([stages, *values])
    devices = sorted({v["device"] for v in ours.values() if v["device"]})
    note = (
        f"Setting 2, x2, Set14, noise 0. Our seconds: {', '.join(devices) or '?'}; "
        f"the paper's: {spec.get('device', 'its GPU (not stated)')}."
    )
    csv_header = ["stages", "psnr", "ssim", "params_m", "seconds"]
    csv_header += ["paper_psnr", "paper_ssim", "paper_params_m", "paper_seconds"]
    return f"{note}\n\n{_markdown(header, body_md)}", _csv(csv_header, body_csv)


def _table4(runs: Sequence[tuple[Path, dict]], paper: Mapping | None) -> tuple[str, str]:
    spec = (paper or {}).get("table4", {})
    rows = [
        [f"{r['method']} (paper)", r["seconds"], spec.get("device", "")]
        for r in spec.get("rows", [])
    ]
    for file, payload in runs:
        s = _pick(file, payload, "aniso", 2, "Set5", 0)
        rows.append([method_of(payload), s["seconds"], payload.get("device", "")])
    body = [[m, _fmt(t, 3), d] for m, t, d in rows]
    note = "Seconds per Set5 image, Setting 2, x2, noise 0 (forward pass only)."
    return (
        f"{note}\n\n{_markdown(['Method', 'Seconds/image', 'Device'], body)}",
        _csv(["method", "seconds", "device"], rows),
    )


def paper_table(
    name: str, runs: Sequence[tuple[Path, dict]], paper: Mapping | None = None
) -> dict[str, str]:
    """Table ``name`` (table1 … table4) of our runs, the paper's numbers beside them when
    ``paper`` (the content of :data:`PAPER_TABLES`) is given: file → content.

    table1/table2: every run's rows, each after the paper's row of the same method ("Bicubic",
    "KXNet"), one block per noise level; table3: one row per S (runs on Setting 2 x2 Set14
    noise 0, the stage count and parameters from each checkpoint); table4: seconds per Set5
    image.
    """
    if name not in TABLES:
        raise ReportError(f"unknown table {name!r}: one of {', '.join(TABLES)}")
    if not runs:
        raise ReportError(f"{name}: no results to report")
    title = (paper or {}).get(name, {}).get("title", name)
    if name in ("table1", "table2"):
        rows = _benchmark_table(name, runs, paper)
        markdown, table_csv = results_markdown(rows), results_csv(rows)
    elif name == "table3":
        markdown, table_csv = _table3(runs, paper)
    else:
        markdown, table_csv = _table4(runs, paper)
    summary = {
        "table": name,
        "runs": [
            {"file": str(file), **{k: v for k, v in payload.items() if k != "records"}}
            for file, payload in runs
        ],
    }
    return {
        "table.md": f"# {title}\n\n{markdown}\n",
        "table.csv": table_csv,
        REPORT_FILE: json.dumps(summary, indent=1) + "\n",
    }


class PaperTableCallback(Callback):
    """Ends a ``python -m kxnet.eval`` multirun with :func:`paper_table` of its jobs' results,
    written to the sweep folder (table.md, table.csv and report.json: the runs without their
    per-image records).

    Args:
        table: table1 … table4.
        paper: path of the paper's numbers; by default :data:`PAPER_TABLES` (shipped with
            kxnet), None leaves the paper's columns out (so does a missing file, with a warning).
    """

    def __init__(self, table: str, paper: str | os.PathLike | None = PAPER_TABLES) -> None:
        self.table = table
        self.paper = Path(paper) if paper else None

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        paper = None
        if self.paper is not None and self.paper.is_file():
            paper = json.loads(self.paper.read_text())
        elif self.paper is not None:
            log.warning("%s not found: the table leaves the paper's numbers out", self.paper)
        try:
            files = paper_table(self.table, load_results([sweep_dir]), paper)
        except ReportError as err:
            log.error("no %s table: %s", self.table, err)
            return
        written = write_files(sweep_dir, files)
        print(files["table.md"], flush=True)
        print(f"{self.table}: {', '.join(str(p) for p in written)}", flush=True)
