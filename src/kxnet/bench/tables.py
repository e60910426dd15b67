"""The figures of a :mod:`kxnet.bench` run: the ratios to the authors' formulation, the targets
this project sets itself, and the tables that present them."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.table import Table

from kxnet.bench import variants
from kxnet.bench.backends import BACKENDS

__all__ = [
    "TARGETS",
    "ratios",
    "targets",
    "loader_targets",
    "backend_targets",
    "format_seconds",
    "format_bytes",
    "format_ratio",
    "print_report",
]

# The goals this project sets itself against the authors' code (ratios ours / theirs).
TARGETS = {
    "train_time_ratio": ("training step time / authors'", "<=", 0.7),
    "train_memory_ratio": ("training step memory / authors'", "<=", 0.5),
    "train_checkpointed_memory_ratio": ("checkpointed training memory / authors'", "<=", 0.25),
    "infer_time_ratio": ("inference time / authors'", "<=", 0.7),
    "conv_fraction_of_peak": ("convolution FLOP/s / matmul peak", ">=", 0.8),
    "synthesis_fraction_of_step": ("synthesis time / training step", "<=", 0.01),
    "realistic_synthesis_fraction_of_step": (
        "realistic synthesis time / training step",
        "<=",
        0.01,
    ),
    "bf16_train_time_ratio": ("bf16 training step / authors' float32 step", "<=", 0.35),
    "bf16_conv_fraction_of_peak": ("bf16 convolution FLOP/s / bf16 matmul peak", ">=", 0.5),
}


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not b or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def ratios(results: dict[str, dict]) -> None:
    """Add to each result of ours its time and memory as a ratio to the authors' (same phase),
    and its time as a ratio to ours in float32, eager (``kxnet``)."""
    for name, result in results.items():
        phase, side = name.rsplit("/", 1)
        theirs = results.get(f"{phase}/authors")
        fp32 = results.get(f"{phase}/kxnet")
        if side != "authors" and fp32 is not None:
            result["vs_fp32"] = _ratio(result["wall_s"]["median"], fp32["wall_s"]["median"])
        if side == "authors" or theirs is None:
            continue
        result["vs_authors"] = {
            "wall_s": _ratio(result["wall_s"]["median"], theirs["wall_s"]["median"]),
            "cpu_s": _ratio(result["cpu_s"]["median"], theirs["cpu_s"]["median"]),
            "memory": _ratio(result["memory"]["peak_bytes"], theirs["memory"]["peak_bytes"]),
        }
        if "rss" in result and "rss" in theirs:
            result["vs_authors"]["rss"] = _ratio(result["rss"]["step"], theirs["rss"]["step"])


def targets(results: dict[str, dict], checkpointed: bool) -> dict[str, Any]:
    """The measured value of each of :data:`TARGETS` (``None`` where not measured)."""

    def vs(name: str, key: str) -> float | None:
        return results.get(name, {}).get("vs_authors", {}).get(key)

    train = results.get("train/kxnet", {})
    step = train.get("wall_s", {}).get("median")
    bf16 = results.get("train/kxnet_bf16", {})
    synthesis = results.get("synthesis/kxnet", {}).get("wall_s", {}).get("median")
    realistic = results.get("synthesis/kxnet_realistic", {}).get("wall_s", {}).get("median")
    measured = {
        "train_time_ratio": vs("train/kxnet", "wall_s"),
        "train_memory_ratio": None if checkpointed else vs("train/kxnet", "memory"),
        "train_checkpointed_memory_ratio": vs(
            "train/kxnet" if checkpointed else "train/kxnet_checkpointed", "memory"
        ),
        "infer_time_ratio": vs("infer/kxnet", "wall_s"),
        "conv_fraction_of_peak": train.get("conv_fraction_of_peak"),
        "synthesis_fraction_of_step": _ratio(synthesis, step),
        "bf16_train_time_ratio": vs("train/kxnet_bf16", "wall_s"),
        "bf16_conv_fraction_of_peak": bf16.get("conv_fraction_of_peak"),
        "realistic_synthesis_fraction_of_step": _ratio(realistic, step),
    }
    targets = {}
    for key, (label, op, bound) in TARGETS.items():
        value = measured[key]
        met = None if value is None else (value <= bound if op == "<=" else value >= bound)
        targets[key] = {"label": label, "value": value, "target": f"{op} {bound}", "met": met}
    return targets


def loader_targets(result: dict[str, Any]) -> dict[str, Any]:
    prepared = result["forms"]["prepared"]["crops_per_s"]
    measured = {
        "loader_prepared_vs_png": (
            "prepared folder crops/s / PNG-per-crop", ">=", 10.0, result["prepared_vs_png"]
        ),
        "loader_prepared_crops_per_s": (
            f"prepared HR {result['patch']}² crops/s, {result['workers']} workers", ">=", 1000.0,
            prepared,
        ),
        "loader_keeps_a_gpu_fed": (
            "prepared crops/s / what the paper's GPU step needs", ">=", 1.0,
            prepared / result["needed_crops_per_s"],
        ),
    }  # fmt: skip
    return {
        key: {"label": label, "value": value, "target": f"{op} {bound}", "met": value >= bound}
        for key, (label, op, bound, value) in measured.items()
    }


def format_seconds(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "–"
    return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def format_bytes(n: float | None) -> str:
    return "–" if n is None else f"{n / 2**20:.1f} MiB"


def format_ratio(r: float | None) -> str:
    return "–" if r is None else f"{r:.2f}×"


def _table(title: str, columns: tuple[str, ...]) -> Table:
    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right", no_wrap=True)
    return table


def _profile_table(result: dict[str, dict[str, float]], config: dict) -> Table:
    title = (
        f"Where the training step's time goes (torch.profiler; x{config['scale']}, "
        f"S={config['model']['net']['stages']}, batch {config['batch']}, LR {config['lr_size']}²)"
    )
    columns = ["part"]
    for precision in result:
        columns += [precision, "share"]
    table = _table(title, tuple(columns))
    parts = [p for p in next(iter(result.values())) if p != "step"]
    for part in [*parts, "step"]:
        row = [part if part != "step" else "the step (profiled)"]
        for seconds in result.values():
            row += [format_seconds(seconds[part]), f"{seconds[part] / seconds['step']:.0%}"]
        table.add_row(*row)
    return table


def _backends_table(result: dict[str, Any], config: dict) -> Table:
    size = result["lr_size"]
    title = (
        f"Inference of one {size}×{size} LR image at x{config['scale']}, "
        f"S={config['model']['net']['stages']}, on the CPU, per backend"
    )
    table = _table(title, ("backend", "time", "spread", "memory (RSS growth)", "time ×authors'"))
    theirs = result["results"].get("authors", {}).get("wall_s", {}).get("median")
    for name, r in result["results"].items():
        wall = r["wall_s"]
        table.add_row(
            BACKENDS[name][0],
            format_seconds(wall["median"]),
            f"±{(wall['max'] - wall['min']) / 2 / wall['median']:.0%}",
            format_bytes(r["rss"]["step"]),
            format_ratio(_ratio(wall["median"], theirs)),
        )
    return table


def backend_targets(result: dict[str, Any]) -> dict[str, Any]:
    """The fastest of our CPU backends against the authors' network."""
    times = {name: r["wall_s"]["median"] for name, r in result["results"].items()}
    theirs = times.pop("authors", None)
    fastest = min(times, key=times.get)
    value = _ratio(times[fastest], theirs)
    label = f"fastest CPU inference ({BACKENDS[fastest][0]}) / authors'"
    met = None if value is None else value <= 0.5
    return {"backend_time_ratio": {"label": label, "value": value, "target": "<= 0.5", "met": met}}


def _conv_table(result: dict[str, Any], config: dict) -> Table:
    peaks = ", ".join(f"{k} {v / 1e9:.0f}" for k, v in result["matmul_peak"].items())
    title = (
        f"proxNet_X convolution, {result['channels']} channels, batch {config['batch']}, LR "
        f"{config['lr_size']}², forward + both gradients (matmul peak GFLOP/s: {peaks})"
    )
    table = _table(title, ("formulation", "precision", "time", "GFLOP/s", "of peak"))
    for name, r in result["results"].items():
        form, precision = name.split("/")
        table.add_row(
            form,
            precision,
            format_seconds(r["seconds"]),
            f"{r['flops_per_s'] / 1e9:.0f}",
            f"{r['fraction_of_peak']:.0%}",
        )
    return table


def _scaling_tables(result: dict[str, Any]) -> list[Table]:
    base = result["base"]
    points = _table(
        f"Training step against S, LR patch and batch ({result['precision']}; around S = "
        f"{base['stages']}, LR {base['lr_size']}, batch {base['batch']})",
        ("S", "LR", "batch", "checkpointed", "time", "memory"),
    )
    for m in result["points"].values():
        p = m["point"]
        points.add_row(
            str(p["stages"]),
            str(p["lr_size"]),
            str(p["batch"]),
            "yes" if p["checkpoint_stages"] else "no",
            format_seconds(m["seconds"]),
            format_bytes(m["peak_bytes"]),
        )
    fits = _table(
        "Fitted growth: a + b·S (at the base patch and batch), a + b·(batch · LR pixels) (at "
        "the base S); the paper's x4 step (S = 19, batch 12, LR 64²) read off them",
        ("", "time a", "time b", "max error", "memory a", "memory b", "max error", "paper step"),
    )
    for kind, entry in result["fits"].items():
        paper = result["paper"][kind]
        for axis, label in (("per_stage", "per stage"), ("per_pixel", "per LR pixel")):
            t, m = entry["seconds"][axis], entry["peak_bytes"][axis]
            fits.add_row(
                f"{kind}, {label}",
                format_seconds(t["intercept"]),
                f"{t['slope'] * (1e3 if axis == 'per_stage' else 1e6):.3g} "
                + ("ms" if axis == "per_stage" else "µs"),
                f"{t['max_rel_error']:.0%}",
                format_bytes(m["intercept"]),
                f"{m['slope'] / (2**20 if axis == 'per_stage' else 2**10):.3g} "
                + ("MiB" if axis == "per_stage" else "KiB"),
                f"{m['max_rel_error']:.0%}",
                f"{format_seconds(paper['seconds'])}, {format_bytes(paper['peak_bytes'])}"
                if axis == "per_pixel"
                else "",
            )
    return [points, fits]


def _loader_table(result: dict[str, Any]) -> Table:
    title = (
        f"Loader: HR {result['patch']}² crops/s, batch {result['batch']}, {result['workers']} "
        f"workers, {result['images']} PNG images of {result['image_bytes'] / 2**20:.1f} MiB in "
        f"{result['folder']}"
    )
    table = _table(title, ("form", "crops/s", "× PNG-per-crop", "× needed"))
    png, needed = result["forms"]["png"]["crops_per_s"], result["needed_crops_per_s"]
    for form, rate in result["forms"].items():
        value = rate["crops_per_s"]
        table.add_row(form, f"{value:.0f}", format_ratio(value / png), format_ratio(value / needed))
    step = format_seconds(result["gpu_step_s"])
    table.add_row(f"needed ({step} a step: {result['gpu_step_basis']})", f"{needed:.0f}", "", "")
    return table


def print_report(report: dict[str, Any], console: Console) -> None:
    res, config, dev = report["results"], report["config"], report["device"]
    net, infer = config["model"]["net"], report["infer_input"]
    shape = "" if infer is None else f" · infer: LR {infer['lr_shape'][-1]}×{infer['lr_shape'][-2]}"
    title = (
        f"KXNet x{config['scale']}, S={net['stages']}, {config['setting']['name']}, "
        f"p={net['kernel_size']} · train: batch {config['batch']}, "
        f"LR {config['lr_size']}×{config['lr_size']}{shape} · {dev['name']}, "
        f"{dev['threads']} threads"
        + (f", native bf16: {', '.join(dev['bf16'])}" if dev.get("bf16") else "")
    )
    columns = ("task", "time", "spread", "CPU time", "memory", "RSS", "GFLOP", "conv/peak")
    ratio_columns = ("time ×fp32", "time ×auth.", "CPU ×auth.", "memory ×auth.")
    table = _table(title, columns + ratio_columns)
    spots = _table(
        "Hot spots alone, ours against the authors' formulation (float32)",
        ("operator", "ours", "authors'", "time ×", "CPU ×", "ours memory", "authors'", "memory ×"),
    )
    for name, r in res.items():
        wall, vs = r["wall_s"], r.get("vs_authors", {})
        ratios = [format_ratio(vs.get(key)) if vs else "" for key in ("wall_s", "cpu_s", "memory")]
        if name.startswith("hot_spot/"):
            if not name.endswith("/kxnet"):
                continue
            theirs = res[name.replace("/kxnet", "/authors")]
            spots.add_row(
                variants.HOT_SPOTS[name.split("/")[1]][0],
                format_seconds(wall["median"]),
                format_seconds(theirs["wall_s"]["median"]),
                *ratios[:2],
                format_bytes(r["memory"]["peak_bytes"]),
                format_bytes(theirs["memory"]["peak_bytes"]),
                ratios[2],
            )
            continue
        table.add_row(
            name,
            format_seconds(wall["median"]),
            f"±{(wall['max'] - wall['min']) / 2 / wall['median']:.0%}",
            format_seconds(r["cpu_s"]["median"]),
            format_bytes(r["memory"]["peak_bytes"]),
            format_bytes(r["rss"]["step"]) if "rss" in r else "–",
            f"{r['flops'] / 1e9:.1f}" if "flops" in r else "–",
            f"{r['conv_fraction_of_peak']:.0%}" if "conv_fraction_of_peak" in r else "–",
            format_ratio(r["vs_fp32"]) if "vs_fp32" in r else "",
            *ratios,
        )
    if table.row_count:
        console.print(table)
    if any(name.startswith("hot_spot/") for name in res):
        console.print(spots)
    peaks = ", ".join(f"{k} {v / 1e9:.0f}" for k, v in report["matmul_peak_flops_per_s"].items())
    title = f"Targets (matmul peak GFLOP/s: {peaks})" if peaks else "Targets"
    goals = _table(title, ("target", "measured", "goal", "met"))
    for t in report["targets"].values():
        value = "–" if t["value"] is None else f"{t['value']:.3f}"
        met = {True: "yes", False: "no", None: "–"}[t["met"]]
        goals.add_row(t["label"], value, t["target"], met)
    if "profile" in report:
        console.print(_profile_table(report["profile"], config))
    if "backends" in report:
        console.print(_backends_table(report["backends"], config))
    if "conv" in report:
        console.print(_conv_table(report["conv"], config))
    if "scaling" in report:
        for table in _scaling_tables(report["scaling"]):
            console.print(table)
    if "loader" in report:
        console.print(_loader_table(report["loader"]))
    console.print(goals)
