"""Benchmark group "limit": what this machine reaches (a large TF sgemm) beside its estimated peak (`cpu_peak`)."""

from __future__ import annotations

import numpy as np
from harness import Row, cpu_peak, stats, time_calls


def bench_gemm(n: int = 2048, repeats: int = 5) -> list[Row]:
    """A large float32 matrix product through TensorFlow (oneDNN): the speed this machine really reaches."""
    from cnnviz_widgets.network.backend import keras

    ops = keras().ops
    rng = np.random.default_rng(0)
    a = ops.convert_to_tensor(rng.standard_normal((n, n), dtype=np.float32))
    b = ops.convert_to_tensor(rng.standard_normal((n, n), dtype=np.float32))
    gemm = stats(time_calls(lambda: np.asarray(ops.matmul(a, b)), repeats, warmup=2))
    # a ceiling: the best run (other processes on a shared machine only ever slow a run down)
    best, typical = 2.0 * n**3 / gemm["min"] / 1e9, 2.0 * n**3 / gemm["median"] / 1e9
    peak = cpu_peak()
    return [
        Row("limit", f"sgemm {n}² (TF), best of {repeats}", best, "GFLOP/s",
            note=f"{best / peak['gflops']:.0%} of the estimate below; median run {typical:.0f} GFLOP/s",
            extra=dict(gemm=gemm, median_gflops=typical)),
        Row("limit", "peak estimate", peak["gflops"], "GFLOP/s", note=peak["how"], extra=peak),
    ]
