"""The benchmarks (benchmarks/run.py, its harness and groups) still run: every figure on tiny models, tiny repeats.

Only the structure of the results is checked (rows, units, targets, the numbers behind them), never a
timing: benchmarks are not tests, and these shared machines make times drift.
"""

from __future__ import annotations

import importlib
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.conftest import load_benchmark

RUN_PY = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"
MODULES = ("harness", "forward", "scaling", "widgets", "import_time", "memory", "limit")


@pytest.fixture(scope="module")
def bench():
    """run.py, and the harness and groups as it imports them (by name, from its folder)."""
    run = load_benchmark(RUN_PY, "cnnviz_benchmarks_run")
    return SimpleNamespace(run=run, **{name: importlib.import_module(name) for name in MODULES})


@pytest.fixture(scope="module")
def tiny_fcn(bench):
    """A small fully convolutional model (any input size), so the size-dependent figures really vary."""
    return bench.harness.build_model("tiny")


def _check_rows(bench, rows, figures):
    assert rows, "no rows"
    assert {r.figure for r in rows} <= set(figures), {r.figure for r in rows}
    for row in rows:
        assert isinstance(row.value, float) and math.isfinite(row.value) and row.value >= 0, row
        assert row.unit and row.case
        assert (row.met is None) == (row.target == ""), row  # a verdict exactly where there is a target
        json.dumps(row.extra, default=bench.harness.jsonable)  # everything behind the value can be written out


def test_stats_and_at_most(bench):
    s = bench.harness.stats([0.3, 0.1, 0.2, 0.4, 10.0])
    assert s["median"] == 0.3 and s["min"] == 0.1 and s["n"] == 5
    assert s["p95"] == pytest.approx(np.percentile([0.1, 0.2, 0.3, 0.4, 10.0], 95))
    assert bench.harness.at_most(1.2, 1.25) == ("≤ 1.25", True)
    assert bench.harness.at_most(300.5, 300)[1] is False


def test_new_pictures_differ_after_resize(bench):
    from cnnviz_widgets.pictures.images import resize_image

    picture = bench.harness.astronaut()
    variants = bench.harness.new_pictures(picture, 3)
    small = {resize_image(v, (56, 56)).tobytes() for v in [picture, *variants]}
    assert len(small) == 4  # each would be a cache miss even after downscaling


def test_conv_flops_of_vgg16_at_224_is_30_7_gflop(bench, vgg16_bsds):
    from cnnviz_widgets import ModelState

    state = ModelState(vgg16_bsds, max_side=224)
    convs = bench.harness.conv_layers(state)
    assert convs[0] == "block1_conv1" and len(convs) == 13
    # 15.35 G multiply-adds (the well-known VGG16 conv-base count), times 2
    assert bench.forward.conv_flops(state) / 1e9 == pytest.approx(30.7, abs=0.05)


def test_forward_rows(bench, tiny_fcn):
    rows = bench.forward.bench_forward(tiny_fcn, sides=(32,), repeats=2, naive_repeats=1)
    _check_rows(bench, rows, {"forward overhead", "naive ratio", "limit"})
    assert [r.figure for r in rows] == ["forward overhead", "naive ratio", "limit"]
    overhead = rows[0]
    assert overhead.case == "32×32" and overhead.target == "≤ 1.25"
    assert overhead.extra["passes_per_image"] == 1  # one forward pass per new image, never more
    assert overhead.value == pytest.approx(overhead.extra["ours"]["median"] / overhead.extra["plain"]["median"])
    assert len(rows[1].extra["samples"]["naive"]) == 1
    # tiny_fcn: conv 3->4 at 32×32 and conv 4->6 at 16×16, 3×3 kernels
    assert rows[2].extra["gflop"] == pytest.approx(2 * (32 * 32 * 9 * 3 * 4 + 16 * 16 * 9 * 4 * 6) / 1e9)


def test_explorer_new_image_row(bench, tiny_fcn):
    row = bench.forward.bench_explorer_new_image(tiny_fcn, side=32, repeats=2)
    _check_rows(bench, [row], {"new image, Explorer open"})
    times = row.extra["times"]
    assert row.case == "32×32" and row.target == "≤ 1.25"
    assert all(len(row.extra["samples"][name]) == 2 for name in ("explorer", "bare"))
    assert row.value == pytest.approx(times["explorer"]["median"] / times["bare"]["median"])


def test_scaling_rows(bench, tiny_fcn):
    rows = bench.scaling.bench_scaling(tiny_fcn, sides=(16, 32), repeats=1)
    _check_rows(bench, rows, {"scaling"})
    assert [r.case for r in rows] == ["16×16", "32×32", "time/px 32 ÷ 16"]
    assert rows[1].extra["plain"]["n"] == 1
    assert rows[1].extra["megapixels"] == pytest.approx(32 * 32 / 1e6)
    assert rows[1].extra["passes_default_budget"] == 1  # tiny activations fit the default budget


def test_widget_rows(bench, tiny_fcn):
    rows = bench.widgets.bench_widgets(tiny_fcn, repeats=2, sides=(24,))
    _check_rows(bench, rows, {"scrub", "layer switch", "bytes per update"})
    scrubs = [r for r in rows if r.figure == "scrub"]
    assert any("ActivationGrid" in r.case for r in scrubs) and any("WeightGrid" in r.case for r in scrubs)
    assert any("FilterEffect" in r.case for r in scrubs)
    for row in scrubs:
        assert row.extra["forward_passes"] == 0  # scrubbing a cached layer never runs the network
        assert len(row.extra["samples"]) == 2
    weight_scrub = next(r for r in scrubs if "WeightGrid" in r.case)
    assert set(weight_scrub.extra["redrawn"]) == {1}  # every channel step redraws the weight grid once
    switch = next(r for r in rows if r.figure == "layer switch")
    assert switch.extra["forward_passes"] == 0 and len(switch.extra["samples"]) >= 2
    sizes = [r for r in rows if r.figure == "bytes per update"]
    assert sizes and all(r.value > 0 for r in sizes)


def test_import_rows(bench):
    rows = bench.import_time.bench_import(repeats=1)
    _check_rows(bench, rows, {"import"})
    assert rows[0].extra["tensorflow_loaded"] is False  # `import cnnviz_widgets` must not load TensorFlow


def test_memory_child_in_a_subprocess(bench):
    rows = bench.memory.bench_memory("tiny", cases=("224",))
    _check_rows(bench, rows, {"memory"})
    child = rows[0].extra
    assert child["peak_kb"] >= child["after_model_kb"] > 0
    assert child["cached_bytes"] > 0 and child["budget_bytes"] == 640 * 2**20
    assert child["view"] == "Explorer"


def test_gemm_and_peak(bench):
    rows = bench.limit.bench_gemm(n=64, repeats=1)
    _check_rows(bench, rows, {"limit"})
    peak = rows[1].extra
    assert peak["gflops"] == pytest.approx(peak["cores"] * peak["ghz"] * peak["lanes"] * 2 * peak["fma_units"])


def test_main_writes_table_and_json(bench, tmp_path, capsys):
    out = tmp_path / "latest.json"
    assert bench.run.main(["--only", "limit", "--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["quick"] is True and set(result["seconds"]) == {"limit"}
    assert [r["figure"] for r in result["rows"]] == ["limit", "limit"]
    printed = capsys.readouterr().out
    assert "| figure" in printed and "GFLOP/s" in printed and str(out) in printed


def test_unknown_group_is_refused(bench):
    with pytest.raises(ValueError, match="unknown benchmark group"):
        bench.run.run(["forward", "warp"])


def test_binder_group_is_wired(bench):
    """The "binder" group's recorded figures name notebooks that exist; each weights choice has both loaders.
    (Running it takes minutes of notebook kernels: `make bench` does.)"""
    sys.path.insert(0, str(RUN_PY.parent))
    import notebook_memory

    assert "binder" in bench.run.GROUPS
    before = json.loads((RUN_PY.parent / "memory_before.json").read_text())
    for name, peak in before["notebooks"].items():
        assert (RUN_PY.parents[1] / "notebooks" / name).is_file() and 0 < peak < 10
    assert set(notebook_memory._KERAS_LOAD) == set(notebook_memory._OUR_LOAD) == set(notebook_memory.WEIGHTS)


def test_each_module_imports_alone_and_none_imports_run_py():
    """run.py is the command line on top: every other module of benchmarks/ imports alone, without it."""
    for path in sorted(RUN_PY.parent.glob("*.py")):
        if path.name == "run.py":
            continue
        code = f"import sys, {path.stem}; assert 'run' not in sys.modules, sorted(sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], cwd=RUN_PY.parent, capture_output=True, text=True)
        assert out.returncode == 0, f"{path.name}: {out.stderr[-1500:]}"


def test_attribution_rows(bench, tiny_fcn):
    """Group "attribution": Grad-CAM++, LayerCAM and Score-CAM against tf-keras-vis, one row each."""
    pytest.importorskip("tf_keras_vis")
    sys.path.insert(0, str(RUN_PY.parent))
    import attribution

    assert "attribution" in bench.run.GROUPS
    rows = [bench.harness.Row(**row) for row in attribution.bench_cams(tiny_fcn, side=32, repeats=1,
                                                                        score_repeats=1, max_n=2)]
    _check_rows(bench, rows, {"CAM vs tf-keras-vis"})
    assert [row.case.split(",")[0] for row in rows] == ["Grad-CAM++", "LayerCAM", "Score-CAM"]
    assert [row.target for row in rows] == ["≥ 3", "≥ 3", "≥ 1.5"]
    for row in rows:
        assert row.extra["ours"]["n"] == row.extra["theirs"]["n"] == 1
        assert row.value == pytest.approx(row.extra["theirs"]["median"] / row.extra["ours"]["median"])
