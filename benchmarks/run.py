"""Benchmarks of cnnviz_widgets: speed and memory against a plain forward pass and the naive approach.

Run ``python benchmarks/run.py`` (``make bench``): it prints one table and writes it, with every sample, to
``benchmarks/results/latest.json``. CPU only, on the offline VGG16 conv weights and the astronaut sample.

This file is the command line only: it picks the groups and runs them in order. How a number is made (medians
after a warm-up, ratios of things timed in turns, fresh inputs, the load average) is in ``harness.py``, which
every group imports; each group is a module of its own in this folder, named in `run` (the "import" group is
``import_time.py``, "binder" is ``notebook_memory.py``). Nothing in ``make test`` depends on these numbers;
``tests/test_benchmarks_smoke.py`` runs the groups on a tiny model so that they cannot rot.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import attribution
import browser
import forward
import import_time
import interactive
import limit
import looksfor
import memory
import notebook_memory
import scaling
import training
import widgets
from harness import RESULTS, Row, format_table, load_vgg16, machine, print_result, write_json

GROUPS = ("import", "forward", "widgets", "scaling", "limit", "memory", "binder", "browser", "training",
          "interactive", "looksfor", "attribution")


def run(groups: Sequence[str] = GROUPS, quick: bool = False, model: Any = None,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the figure groups in order; return the JSON-able result: machine, rows, timings per group."""
    import cnnviz_widgets  # noqa: F401  (the import figure runs in subprocesses; this just checks it imports)

    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown benchmark group(s) {sorted(unknown)}: choose from {', '.join(GROUPS)}")
    n = 2 if quick else None
    started = time.perf_counter()
    load_before = os.getloadavg()
    rows: list[Row] = []
    seconds: dict[str, float] = {}
    vgg = None

    def the_model() -> Any:
        nonlocal vgg
        if model is not None:
            return model
        if vgg is None:
            vgg = load_vgg16()
        return vgg

    for group in [g for g in GROUPS if g in groups]:
        log(f"[{time.perf_counter() - started:5.0f} s] {group} …")
        t0 = time.perf_counter()
        if group == "import":
            rows += import_time.bench_import(repeats=n or 7)
        elif group == "forward":
            rows += forward.bench_forward(the_model(), repeats=n or 7, naive_repeats=n or 3)
            rows.append(forward.bench_explorer_new_image(the_model(), repeats=n or 15))
        elif group == "widgets":
            rows += widgets.bench_widgets(the_model(), repeats=n or 40)
        elif group == "scaling":
            rows += scaling.bench_scaling(the_model(), repeats=n or 3)
        elif group == "limit":
            rows += limit.bench_gemm(repeats=n or 5)
        elif group == "memory":
            rows += memory.bench_memory("vgg16" if model is None else "tiny")
        elif group == "browser":
            rows += browser.bench_browser(quick=quick)
        elif group == "binder":  # kernel peaks per notebook, as a Binder session
            rows += [Row(**row) for row in notebook_memory.bench_binder(quick=quick)]
        elif group == "training":
            rows += [Row(**row) for row in training.bench_training(quick=quick)]
        elif group == "interactive":  # issue 13's table
            rows += [Row(**row) for row in interactive.bench_interactive(model, quick=quick)]
        elif group == "looksfor":  # issue 15's scan and maximize
            rows += [Row(**row) for row in looksfor.bench_looksfor(model, quick=quick)]
        elif group == "attribution":  # issue 21's CAMs against tf-keras-vis
            rows += [Row(**row) for row in attribution.bench_attribution(the_model(), quick=quick)]
        seconds[group] = time.perf_counter() - t0
    return dict(machine=machine(), load_average_before=load_before, load_average_after=os.getloadavg(),
                seconds=seconds, elapsed_s=time.perf_counter() - started, quick=quick,
                rows=[asdict(r) for r in rows], table=format_table(rows))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(GROUPS),
                        help=f"comma-separated groups to run (default all): {', '.join(GROUPS)}")
    parser.add_argument("--quick", action="store_true", help="2 repeats each: checks the script, not the numbers")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON file to write (default {RESULTS})")
    args = parser.parse_args(argv)
    result = run([g.strip() for g in args.only.split(",") if g.strip()], quick=args.quick)
    write_json(result, args.out)
    print_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
