"""The notebooks in notebooks/ run top to bottom on a tiny checkpoint and show what they promise."""

import json
import re

import pytest
import torch

from kxnet import analysis, metrics, physics
from kxnet.checkpoint import load_model, save_weights
from kxnet.config import project_root
from kxnet.data.images import read_image
from kxnet.nn import KXNet

NOTEBOOKS = project_root() / "notebooks"
STAGES = 2


def test_notebooks_are_committed_without_outputs():
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    assert [p.name for p in paths] == ["kernel_robustness.ipynb", "stage_visualisation.ipynb"]
    for path in paths:
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, path.name


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """Exported weights of a 2-stage x2 Setting 2 network (p = 11) after one training step."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = KXNet(2, STAGES, setting="aniso")
        hr = torch.rand(1, 3, 16, 16)
        kernel = (torch.eye(11) / 11)[None]
        out = model(physics.blur_downsample(hr, kernel, 2))
        loss = (out.sr - hr).abs().mean() + (out.kernel - kernel).abs().mean()
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
        loss.backward()
        optimiser.step()
    return save_weights(model.eval(), tmp_path_factory.mktemp("ckpt") / "weights.pt")


def _execute(name: str, monkeypatch, checkpoint, **knobs):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("KXNET_CHECKPOINT", str(checkpoint))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    for key, value in knobs.items():
        monkeypatch.setenv(f"KXNET_NOTEBOOK_{key}", str(value))
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": NOTEBOOKS}}
    )
    client.execute()
    return [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]


def _text(outputs, stream: str) -> str:
    return "".join(o.text for o in outputs if o.output_type == "stream" and o.name == stream)


def _tables(outputs) -> list[list[list[str]]]:
    """The markdown tables shown, each a list of rows of cells (header first, no rule line)."""
    tables = []
    for o in outputs:
        text = o.get("data", {}).get("text/markdown")
        if text:
            lines = [line for line in text.splitlines() if line.startswith("|")]
            rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
            tables.append([r for r in rows if not re.fullmatch(r"-+:?", r[-1])])
    return tables


def _pngs(outputs) -> int:
    return sum("image/png" in o.get("data", {}) for o in outputs)


@pytest.mark.slow
def test_stage_visualisation_notebook(tiny_checkpoint, monkeypatch):
    outputs = _execute(
        "stage_visualisation.ipynb", monkeypatch, tiny_checkpoint, IMAGE="monarch", CROP=64
    )
    stdout = _text(outputs, "stdout")
    assert f"Network: {tiny_checkpoint}: x2, setting aniso, {STAGES} stages" in stdout
    assert "Set14/monarch: HR 64×64 → LR 32×32 (x2), kernel σ=(2, 4) θ=45°" in stdout
    assert "Untrained" not in _text(outputs, "stderr")
    ((header, *rows),) = _tables(outputs)
    assert header[:3] == ["Stage", "PSNR-Y (dB)", "SSIM-Y"]
    assert [r[0] for r in rows] == [str(t) for t in range(STAGES + 1)]
    expected = _stage_figures(tiny_checkpoint, "monarch", 64, kernel_index=5)
    for row, (psnr, ssim) in zip(rows, expected, strict=True):
        assert abs(float(row[1]) - psnr) <= 0.006 and abs(float(row[2]) - ssim) <= 6e-5, row
    assert _pngs(outputs) == 2


def _stage_figures(checkpoint, image: str, crop: int, kernel_index: int) -> list[tuple]:
    """PSNR-Y and SSIM-Y of every stage, recomputed here: the centre crop of Set14's image,
    blurred with the test kernel, subsampled and rounded to 8 bit, through the exported weights."""
    model = load_model(checkpoint).eval()
    hr = read_image(project_root() / "data" / "benchmarks" / "Set14" / f"{image}.png")
    top, left = (hr.shape[1] - crop) // 2, (hr.shape[2] - crop) // 2
    hr = hr[None, :, top : top + crop, left : left + crop]
    _, kernel = analysis.test_kernel(model.setting, model.scale, kernel_index, model.kernel_size)
    lr = physics.blur_downsample(hr.double(), kernel[None].double(), model.scale)
    lr = ((lr.clamp(0, 1) * 255).round() / 255).float()
    with torch.inference_mode():
        images = model(lr).images
    return [tuple(v.item() for v in metrics.psnr_ssim(x, hr, model.scale)) for x in images]


@pytest.mark.slow
def test_kernel_robustness_notebook(tiny_checkpoint, monkeypatch):
    outputs = _execute(
        "kernel_robustness.ipynb", monkeypatch, tiny_checkpoint, IMAGES=2, CROP=48, KERNELS=3
    )
    stdout = _text(outputs, "stdout")
    assert f"Network: {tiny_checkpoint}" in stdout
    assert "Set14: 2 images (48 px), x2, noise 0" in stdout
    assert "18 SR images" in stdout
    methods = ["Bicubic (S=0)", f"KXNet (S={STAGES})", f"KXNet (S={STAGES}, GT kernel)"]
    psnr, ssim = _tables(outputs)
    for table in (psnr, ssim):
        assert table[0] == ["Kernel", *methods]
        labels = [r[0] for r in table[1:]]
        assert labels == [
            "σ=(1, 1) θ=0°",
            "σ=(2.5, 2.5) θ=0°",
            "σ=(4, 4) θ=0°",
            "mean",
            "spread (max − min)",
        ]
    for table in (psnr, ssim):
        values = [[float(v) for v in r[1:]] for r in table[1:]]
        per_kernel = values[:3]
        for column, method in enumerate(methods):
            figures = [row[column] for row in per_kernel]
            # every cell is rounded to its last digit: half a unit of it off, at most, each
            half = 0.005 if table is psnr else 5e-5
            assert abs(values[3][column] - sum(figures) / 3) <= 2.01 * half, method
            assert abs(values[4][column] - (max(figures) - min(figures))) <= 3.01 * half, method
    kxnet_, gt_kernel = [[float(r[i]) for r in psnr[1:4]] for i in (2, 3)]
    assert kxnet_ != gt_kernel  # the true kernel given to X-net changes the images
    assert all(10 < float(v) < 60 for r in psnr[1:4] for v in r[1:])
    assert _pngs(outputs) == 2
