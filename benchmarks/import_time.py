"""Benchmark group "import": ``import cnnviz_widgets`` and then the widgets, in fresh interpreters."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from harness import REPO, Row, at_most, stats

_IMPORT_PROBE = """
import json, sys, time
start = time.perf_counter()
import cnnviz_widgets
package = time.perf_counter() - start
tensorflow_loaded = "tensorflow" in sys.modules
start = time.perf_counter()
import cnnviz_widgets.widgets.explorer
widgets = time.perf_counter() - start
print(json.dumps(dict(package=package, widgets=widgets, tensorflow_loaded=tensorflow_loaded,
                      tensorflow_after_widgets="tensorflow" in sys.modules)))
"""


def bench_import(repeats: int = 5) -> list[Row]:
    """``import cnnviz_widgets`` (no model) in fresh interpreters: in-process time and whole-process wall time."""
    runs, walls = [], []
    for _ in range(repeats + 1):  # the first one warms the OS file cache
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", _IMPORT_PROBE], capture_output=True, text=True, check=True,
                             cwd=REPO)
        walls.append(time.perf_counter() - start)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    runs, walls = runs[1:], walls[1:]
    package = stats([r["package"] for r in runs])
    widgets = stats([r["widgets"] for r in runs])
    tf_loaded = any(r["tensorflow_loaded"] for r in runs)
    tf_after_widgets = any(r["tensorflow_after_widgets"] for r in runs)
    wall = stats(walls)
    target, met = at_most(package["median"], 0.5)
    return [
        Row("import", "import cnnviz_widgets", package["median"], "s", target, met and not tf_loaded,
            f"TensorFlow loaded: {'YES' if tf_loaded else 'no'}; python -c wall {wall['median']:.2f} s",
            dict(package=package, wall=wall, tensorflow_loaded=tf_loaded)),
        Row("import", "+ cnnviz_widgets.widgets.explorer", widgets["median"], "s",
            note=f"ipywidgets + bqplot; TensorFlow loaded: {'YES' if tf_after_widgets else 'no'}",
            extra=dict(widgets=widgets, tensorflow_loaded=tf_after_widgets)),
    ]
