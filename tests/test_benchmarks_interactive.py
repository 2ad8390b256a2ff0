"""benchmarks/interactive.py (group "interactive", issue 13) still runs: every row on a tiny model, 2 repeats.

Only the structure is checked (figures, units, before/after numbers present), never a timing.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.conftest import load_benchmark

INTERACTIVE_PY = Path(__file__).resolve().parents[1] / "benchmarks" / "interactive.py"


@pytest.fixture(scope="module")
def interactive():
    return load_benchmark(INTERACTIVE_PY, "cnnviz_benchmarks_interactive")


def test_every_row_runs_on_a_tiny_model(interactive, k):
    pixels = k.Input((None, None, 3), name="pixels")
    x = k.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv_a")(pixels)
    x = k.layers.MaxPooling2D(name="pool_a")(x)
    x = k.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv_b")(x)
    model = k.Model(pixels, x, name="tiny_fcn")
    rows = interactive.bench_interactive(model, quick=True)
    cases = [row["case"] for row in rows]
    assert len(rows) == 7, cases
    for row in rows:
        assert row["figure"] == "interactive" and row["unit"] == "ms", row
        assert math.isfinite(row["value"]) and row["value"] > 0, row
    for row in rows[:5]:  # the rows with a before and an after
        assert {"before", "after"} <= set(row["extra"]), row["case"]
    assert rows[4]["extra"]["after"]["passes_per_step"] == 0  # revisits run nothing
    assert "Grad-CAM of a new filter, conv_b on conv_a" in rows[2]["case"]
