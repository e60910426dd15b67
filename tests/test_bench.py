import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from commandhelp import run_bench
from kxnet.bench.backends import BACKENDS
from kxnet.bench.formulations import FORMULATIONS
from kxnet.bench.profile import PARTS
from kxnet.bench.tables import TARGETS
from kxnet.bench.variants import HOT_SPOTS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_on_a_tiny_config_writes_every_field(tmp_path):
    """Every phase of ``make bench`` in processes of their own (about 45 s on 2 cores: slow)."""
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
        "phases=[train,infer,synthesis,hot_spots,profile,conv,scaling,loader]",
        "profile.warmup=0",
        "profile.repeats=1",
        "threads=1",
        "matmul_size=64",
        "device=cpu",
        "rss=false",
        f"paths.benchmark_dir={tmp_path}",
        "infer.image=tiny.png",
        "compare.compile=false",
        "conv.warmup=0",
        "conv.repeats=1",
        "scaling.stages=[1,2]",
        "scaling.lr_sizes=[8,12]",
        "scaling.batches=[1]",
        "scaling.checkpointing=[false,true]",
        "scaling.warmup=0",
        "scaling.repeats=1",
        "loader.images=2",
        "loader.workers=1",
        "loader.batch=2",
        "loader.seconds=0.1",
        "loader.gpu_step_s=0.05",
        f"loader.cache_dir={tmp_path / 'loader'}",
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
    assert set(report["matmul_peak_flops_per_s"]) == {"float32", "bfloat16"}
    assert report["device"]["name"] and isinstance(report["device"]["native_bf16"], bool)
    phases = ["train", "infer", "synthesis"] + [f"hot_spot/{name}" for name in HOT_SPOTS]
    expected = {f"{phase}/{side}" for phase in phases for side in ("kxnet", "authors")}
    expected |= {"train/kxnet_checkpointed", "train/kxnet_bf16", "infer/kxnet_bf16"}
    expected |= {"synthesis/kxnet_realistic"}
    assert set(report["results"]) == expected
    bf16 = report["results"]["train/kxnet_bf16"]
    assert bf16["vs_fp32"] > 0 and bf16["flops"] == report["results"]["train/kxnet"]["flops"]
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
    conv = report["conv"]["results"]
    assert set(conv) == {f"{f}/{p}" for f in FORMULATIONS for p in ("float32", "bfloat16")}
    assert all(r["flops_per_s"] > 0 and r["fraction_of_peak"] > 0 for r in conv.values())
    scaling = report["scaling"]
    # S 1, 2; LR 8, 12; batch 1 around (1, 8, 1): 3 distinct points, with and without
    assert len(scaling["points"]) == 2 * 3
    assert all(m["seconds"] > 0 for m in scaling["points"].values())
    for kind in ("plain", "checkpointed"):  # memory, unlike time at this size, is not noisy
        assert scaling["fits"][kind]["peak_bytes"]["per_stage"]["slope"] > 0
        assert scaling["paper"][kind]["peak_bytes"] > 0
    plain, ckpt = (
        scaling["fits"][k]["peak_bytes"]["per_stage"]["slope"] for k in ("plain", "checkpointed")
    )
    assert ckpt < plain  # checkpointing keeps less per stage
    loader_targets = {
        "loader_prepared_vs_png",
        "loader_prepared_crops_per_s",
        "loader_keeps_a_gpu_fed",
    }
    assert set(report["targets"]) == set(TARGETS) | loader_targets
    assert report["targets"]["train_time_ratio"]["value"] > 0
    loader = report["loader"]
    assert "Loader: HR 256² crops/s" in done.stdout
    assert loader["images"] == 2 and loader["patch"] == 256 and loader["batch"] == 2
    assert set(loader["forms"]) == {"png", "prepared", "cached"}
    assert all(
        form["crops_per_s"] > 0 and form["batches"] >= 3 for form in loader["forms"].values()
    )
    assert loader["needed_crops_per_s"] == pytest.approx(12 / 0.05)
    assert loader["gpu_step_basis"] == "measured by make bench-gpu"
    assert 1e12 < loader["paper_step_flops"] < 1e14
    for synthesis in ("synthesis_fraction_of_step", "realistic_synthesis_fraction_of_step"):
        assert report["targets"][synthesis]["value"] > 0
    assert "Where the training step's time goes" in done.stdout
    for precision in ("float32", "bfloat16"):
        parts = report["profile"][precision]
        assert set(parts) == {*PARTS.values(), "rest", "step"}
        assert all(parts[part] > 0 for part in PARTS.values())
        assert sum(v for k, v in parts.items() if k != "step") == pytest.approx(parts["step"])


@pytest.mark.slow
def test_the_backends_phase_times_one_image_through_each_backend(tmp_path):
    run_dir = tmp_path / "run"
    overrides = ["scale=2", "model.net.stages=1", "threads=1", "device=cpu", "phases=[backends]"]
    overrides += ["backends.lr_size=24", "backends.warmup=0", "backends.repeats=2"]
    done = subprocess.run(
        [sys.executable, "-m", "kxnet.bench", *overrides, f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((run_dir / "bench.json").read_text())
    results = report["backends"]["results"]
    assert set(results) == set(BACKENDS)
    for result in results.values():
        assert len(result["wall_s"]["all"]) == 2 and result["rss"]["step"] >= 0
    assert (run_dir / "kxnet.onnx").is_file()
    assert report["targets"]["backend_time_ratio"]["value"] > 0


@pytest.mark.parametrize(
    "overrides,expected",
    [
        ([], set(BACKENDS)),
        (["precisions=[float32]"], {"torch", "torch_compiled", "onnxruntime", "authors"}),
        (["compare.compile=false"], {"torch", "torch_bf16", "onnxruntime", "authors"}),
    ],
)
def test_the_backends_are_those_of_the_chosen_precisions_and_compilation(
    overrides, expected, tmp_path
):
    import torch

    from commandhelp import typed_config
    from kxnet.bench.plan import backend_specs

    config = typed_config("bench", [*overrides, f"paths.output_dir={tmp_path}"])
    specs = backend_specs(config, torch.device("cpu"))
    assert set(specs) == expected
    for name, spec in specs.items():
        _, backend, dtype, formulation, compiled = BACKENDS[name]
        assert (spec["backend"], spec["dtype"], spec["compile"]) == (backend, dtype, compiled)


def test_phases_can_be_chosen_and_bad_options_are_refused(tmp_path, capsys):
    def bench(*overrides):
        return run_bench([*overrides, f"paths.output_dir={tmp_path}"])

    for overrides, message in [
        (["phases=[train,bogus]"], "phases must be a non-empty list"),
        (["precisions=[float16]"], "precisions must list float32"),
        (["infer.image=Set5/missing.png"], "missing.png does not exist"),
        (["degradations=[paper,bogus]"], "no data/degradation preset 'bogus'"),
        (["matmul_size=-1"], "matmul_size=-1 must be an integer >= 0"),
        (["scaling.stages=[5,5]"], r"give scaling.stages two values or more \(got \[5, 5\]\)"),
        (["scaling.lr_sizes=[32]", "scaling.batches=[2]"], r"between them \(got \[2048\]\)"),
    ]:
        assert bench(*overrides) == 2
        error = capsys.readouterr().err
        assert re.search(message, error) and len(error.strip().splitlines()) == 1, error
    assert not (tmp_path / "bench.json").exists()
    tiny = ["model.net.stages=1", "batch=1", "lr_size=8", "threads=1", "rss=false"]
    assert bench("phases=[synthesis]", *tiny) == 0
    report = json.loads((tmp_path / "bench.json").read_text())
    assert set(report["results"]) == {
        "synthesis/kxnet",
        "synthesis/kxnet_realistic",
        "synthesis/authors",
    }
    assert report["infer_input"] is None
    assert report["targets"]["synthesis_fraction_of_step"]["value"] is None


@pytest.mark.slow
@pytest.mark.timeout(1300)  # its own limit, 1200 s, comes first
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
    reports = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("*/bench.json"))]
    assert "GPU runs' options compose and pass their checks" in done.stdout, done.stdout[-3000:]
    assert len(reports) == 3  # x4 training step, scaling in bfloat16, Set5 x2
    assert "train/kxnet_compiled" in reports[0]["results"]
    assert reports[1]["scaling"]["precision"] == "bfloat16"
    assert set(reports[2]["results"]) == {"infer/kxnet", "infer/authors"}
