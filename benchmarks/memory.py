"""Benchmark group "memory": peak RSS of a fresh process holding an Explorer, over the model's own.

`bench_memory` runs this file once per case as a child (``python benchmarks/memory.py --memory-child SPEC
CASE``), so that each peak is that of a process which held nothing else.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import REPO, Row, astronaut, at_most, build_model, conv_layers, synthetic_photo

MEMORY_CASES = ("224", "512", "photo")
"""Explorer on the astronaut at max_side 224 and 512, and on a synthesised 4000×3000 photo (max_side 512)."""


def _proc_status_kb(field_name: str) -> int:
    """A "VmHWM"/"VmRSS" line of /proc/self/status in KiB; ru_maxrss where /proc is missing (HWM only)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def memory_child(spec: str, case: str) -> dict[str, Any]:
    """Run in a fresh process: load the model, then show it in an Explorer; peak RSS after each step."""
    from cnnviz_widgets import ModelState

    model = build_model(spec)
    after_model = _proc_status_kb("VmHWM")
    picture = synthetic_photo() if case == "photo" else astronaut()
    max_side = 224 if case == "224" else 512
    state = ModelState(model, image=picture, max_side=max_side)
    view = _explorer(state)
    for name in conv_layers(state):  # everything a user could scrub to: the whole cache
        state.activation(name)
    return dict(after_model_kb=after_model, peak_kb=_proc_status_kb("VmHWM"), rss_kb=_proc_status_kb("VmRSS"),
                cached_bytes=state.extractor.cached_bytes, budget_bytes=state.extractor.budget_bytes,
                fed="{1}×{0}".format(*state.model_input.array.shape[:2]), picture_bytes=int(state.image.nbytes),
                view=type(view).__name__, forward_passes=state.forward_passes)


def _explorer(state: Any) -> Any:
    """The Explorer on `state` if the widgets import, else the state alone (what it holds is what counts)."""
    try:
        from cnnviz_widgets.widgets.explorer import Explorer
    except ImportError:
        return state
    return Explorer(state)


def bench_memory(spec: str = "vgg16", cases: Sequence[str] = MEMORY_CASES) -> list[Row]:
    """Peak RSS of a fresh process holding an Explorer: the model alone, then with the image's activations."""
    rows = []
    for case in cases:
        out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--memory-child", spec, case],
                             capture_output=True, text=True, cwd=REPO)
        if out.returncode != 0:
            raise RuntimeError(f"memory child {spec} {case} failed:\n{out.stderr[-3000:]}")
        child = json.loads(out.stdout.strip().splitlines()[-1])
        peak_mb, model_mb = child["peak_kb"] / 1024, child["after_model_kb"] / 1024
        budget_mb = child["budget_bytes"] / 2**20
        added_mb = peak_mb - model_mb
        target, met = at_most(added_mb, budget_mb)
        label = {"224": "astronaut", "512": "astronaut", "photo": "4000×3000 photo"}.get(case, case)
        rows.append(Row("memory", f"{label} → {child['fed']}", peak_mb, "MB", note=(
            f"model+TF {model_mb:.0f} MB, +{added_mb:.0f} MB over it (target ≤ budget {budget_mb:.0f} MB: "
            f"{'yes' if met else 'NO'}); cache {child['cached_bytes'] / 2**20:.0f} MB; {child['view']}"),
            extra=dict(child, added_mb=added_mb, added_target=target, added_met=met)))
    return rows



def main(argv: Sequence[str] | None = None) -> int:
    """The child of `bench_memory`: print `memory_child`'s figures as one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory-child", nargs=2, metavar=("SPEC", "CASE"), required=True,
                        help="model spec (vgg16, tiny) and case (" + ", ".join(MEMORY_CASES) + ")")
    print(json.dumps(memory_child(*parser.parse_args(argv).memory_child)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
