"""How the training step's time and memory grow: with the stage count S, the LR patch and the
batch, with and without stage checkpointing, and the fitted growth.

The sweep varies one factor at a time around the configured point (every other factor at its
configured value). Each point is one training step measured in a process of its own (time after
warm-up, the tensors' memory peak). The fits are least squares of the form ``a + b·S`` over the
stage sweep and ``a + b·(batch · LR pixels)`` over the patch and batch sweeps together (KXNet's
work is per stage and, in X-net, per LR pixel); the paper's x4 configuration (S = 19, batch 12,
LR 64×64) is then read off the fits.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["PAPER", "points", "fit", "paper_estimate"]

PAPER = {"stages": 19, "batch": 12, "lr_size": 64}
FACTORS = ("stages", "lr_size", "batch")


def points(base: dict[str, int], sweep: dict[str, list[int]], checkpointing: list[bool]) -> dict:
    """``{name: {stages, lr_size, batch, checkpoint_stages}}``: each factor of ``sweep`` varied
    alone around ``base``, with each ``checkpointing`` choice."""
    out = {}
    for checkpointed in checkpointing:
        for factor in FACTORS:
            for value in sweep[factor]:
                point = dict(base) | {factor: int(value), "checkpoint_stages": bool(checkpointed)}
                key = "S{stages}_lr{lr_size}_b{batch}".format(**point)
                out[key + ("_ckpt" if checkpointed else "")] = point
    return out


def _line(x: list[float], y: list[float]) -> dict[str, float]:
    """Least-squares ``y ≈ a + b·x`` with its largest relative error."""
    slope, intercept = np.polyfit(np.asarray(x, float), np.asarray(y, float), 1)
    predicted = intercept + slope * np.asarray(x, float)
    error = float(np.max(np.abs(predicted - y) / np.abs(y)))
    return {"intercept": float(intercept), "slope": float(slope), "max_rel_error": error}


def fit(measured: dict[str, dict[str, Any]], base: dict[str, int]) -> dict[str, Any]:
    """The fits of time (s) and memory (bytes) against S and against batch · LR pixels, for
    each checkpointing choice; ``measured`` maps a point's name to its point and figures."""
    fits: dict[str, Any] = {}
    for checkpointed in sorted({m["point"]["checkpoint_stages"] for m in measured.values()}):
        group = [m for m in measured.values() if m["point"]["checkpoint_stages"] == checkpointed]

        def along(factor: str, group=group) -> list[dict]:
            others = [f for f in FACTORS if f != factor]
            return [m for m in group if all(m["point"][f] == base[f] for f in others)]

        by_stages = along("stages")
        by_pixels = {id(m): m for m in along("lr_size") + along("batch")}.values()

        def pixels(m: dict) -> float:
            return m["point"]["batch"] * m["point"]["lr_size"] ** 2

        entry = {}
        for quantity in ("seconds", "peak_bytes"):
            entry[quantity] = {
                "per_stage": _line([m["point"]["stages"] for m in by_stages],
                                   [m[quantity] for m in by_stages]),
                "per_pixel": _line([pixels(m) for m in by_pixels],
                                   [m[quantity] for m in by_pixels]),
            }  # fmt: skip
        fits["checkpointed" if checkpointed else "plain"] = entry
    return fits


def paper_estimate(fits: dict[str, Any], base: dict[str, int]) -> dict[str, Any]:
    """Time and memory of the paper's x4 step from the fits: the pixel fit (measured at the
    base S) scaled by the stage fit's ratio at S = 19 to the base S."""
    out = {}
    pixels = PAPER["batch"] * PAPER["lr_size"] ** 2
    for kind, entry in fits.items():
        out[kind] = {}
        for quantity, lines in entry.items():
            per_stage, per_pixel = lines["per_stage"], lines["per_pixel"]
            at_base = per_stage["intercept"] + per_stage["slope"] * base["stages"]
            at_paper = per_stage["intercept"] + per_stage["slope"] * PAPER["stages"]
            value = (per_pixel["intercept"] + per_pixel["slope"] * pixels) * at_paper / at_base
            out[kind][quantity] = value
    return out
