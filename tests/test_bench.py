import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kxnet.bench.runner import HOT_SPOTS, TARGETS

ROOT = Path(__file__).resolve().parents[1]


def test_bench_on_a_tiny_config_writes_every_field(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)).save(tmp_path / "tiny.png")
    run_dir = tmp_path / "run"
    overrides = [
        "setting=aniso",
        "scale=2",
        "model.net.stages=1",
        "batch=1",
        "lr_size=8",
        "warmup=0",
        "repeats=2",
        "hot_spots.warmup=0",
        "hot_spots.repeats=1",
        "threads=1",
        "device=cpu",
        "rss=false",
        f"paths.benchmark_dir={tmp_path}",
        "infer.image=tiny.png",
        f"hydra.run.dir={run_dir}",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "kxnet.bench", *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Hot spots" in done.stdout and "Targets" in done.stdout
    report = json.loads((run_dir / "bench.json").read_text())

    assert report["device"]["type"] == "cpu" and report["device"]["threads"] == 1
    assert report["infer_input"]["lr_shape"] == [1, 3, 12, 15]
    assert report["matmul_peak_flops_per_s"]["float32"] > 0
    phases = ["train", "infer", "synthesis"] + [f"hot_spot/{name}" for name in HOT_SPOTS]
    expected = {f"{phase}/{side}" for phase in phases for side in ("kxnet", "authors")}
    extra = {"train/kxnet_checkpointed", "synthesis/kxnet_realistic"}
    assert set(report["results"]) == expected | extra
    for name, result in report["results"].items():
        assert len(result["wall_s"]["all"]) == (1 if name.startswith("hot_spot/") else 2), name
        assert result["cpu_s"]["median"] > 0 and result["first_call_s"] > 0
        assert result["memory"]["peak_bytes"] > 0 and "rss" not in result
        if not name.endswith("/authors"):
            assert set(result["vs_authors"]) == {"wall_s", "cpu_s", "memory"}, name
    for name in ("train/kxnet", "train/authors", "infer/kxnet", "train/kxnet_checkpointed"):
        result = report["results"][name]
        assert 0 < result["conv_flops"] <= result["flops"]
        assert result["conv_s"] > 0 and result["conv_fraction_of_peak"] > 0
    # recomputing the stages in the backward pass costs FLOPs
    train = report["results"]["train/kxnet"]["flops"]
    assert report["results"]["train/kxnet_checkpointed"]["flops"] > train
    assert set(report["targets"]) == set(TARGETS)
    assert report["targets"]["train_time_ratio"]["value"] > 0
    for synthesis in ("synthesis_fraction_of_step", "realistic_synthesis_fraction_of_step"):
        assert report["targets"][synthesis]["value"] > 0


def test_phases_can_be_chosen_and_bad_options_are_refused(tmp_path):
    def bench(*overrides):
        return subprocess.run(
            [sys.executable, "-m", "kxnet.bench", *overrides, f"hydra.run.dir={tmp_path}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )

    for overrides, message in [
        (["phases=[train,bogus]"], "phases must be a non-empty list"),
        (["dtype=float16"], "dtype must be one of"),
        (["infer.image=Set5/missing.png"], "missing.png does not exist"),
        (["degradations=[paper,bogus]"], "no data/degradation preset 'bogus'"),
    ]:
        done = bench(*overrides)
        assert done.returncode != 0 and message in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "bench.json").exists()
    done = bench(
        "phases=[synthesis]", "model.net.stages=1", "batch=1", "lr_size=8", "threads=1", "rss=false"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    assert set(report["results"]) == {
        "synthesis/kxnet",
        "synthesis/kxnet_realistic",
        "synthesis/authors",
    }
    assert report["infer_input"] is None
    assert report["targets"]["synthesis_fraction_of_step"]["value"] is None


@pytest.mark.slow
def test_gpu_script_runs_in_its_reduced_cpu_form(tmp_path):
    done = subprocess.run(
        [sys.executable, "experiments/bench_gpu.py", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "failed" not in done.stdout, done.stdout[-3000:]
    reports = sorted(tmp_path.glob("*/bench.json"))
    assert len(reports) == 5
    compiled = json.loads(reports[2].read_text())
    assert compiled["config"]["model"]["net"]["compile"] is True
