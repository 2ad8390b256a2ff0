"""Run a notebook top to bottom in a fresh kernel, as a reader's Run All does, and measure the kernel's memory.

The peak is the largest resident size of the kernel process and its children together, sampled every 30 ms
with psutil from the moment the kernel starts until the last cell ends (a Binder session is killed on that
figure). Shared by tests/test_notebooks.py (budgets) and benchmarks/ (the memory table).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import psutil
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

CELL_TIMEOUT_S = 120
"""A notebook "must execute in well under 2 minutes here on 2 cores"; this is the hard limit per cell."""

# Not passed on to the kernel, or checks would pass for the wrong reason:
# - TF_CPP_MIN_LOG_LEVEL, KERAS_BACKEND: set in the test process once Keras is loaded (tests/conftest.py), they
#   would silence TensorFlow in the kernel on the library's behalf;
# - PYTEST_CURRENT_TEST: ipykernel sees it and stops forwarding file descriptor 2 into the cell outputs, the
#   very channel TensorFlow's native start-up lines take.
NOT_INHERITED = ("TF_CPP_MIN_LOG_LEVEL", "KERAS_BACKEND", "PYTEST_CURRENT_TEST")


@dataclass
class KernelMemory:
    """Resident-size samples of a kernel process tree (bytes), taken in a background thread."""

    pid: int
    interval_s: float = 0.03
    peak_bytes: int = 0
    samples: int = 0
    cell_peaks: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._poll, name="kernel-memory", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()  # the state at the end counts too

    def sample(self) -> int:
        try:
            root = psutil.Process(self.pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        total = 0
        for process in processes:
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        self.samples += 1
        self.peak_bytes = max(self.peak_bytes, total)
        if self.cell_peaks:
            self.cell_peaks[-1] = max(self.cell_peaks[-1], total)
        return total

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(self.interval_s)


def run_notebook(nb: nbformat.NotebookNode, workdir: Path, env: Mapping[str, str] | None = None,
                 cell_timeout_s: int = CELL_TIMEOUT_S) -> KernelMemory:
    """Execute every cell of `nb` (in place) in a fresh kernel of this interpreter, in `workdir`.

    Returns the kernel's memory record; `CellExecutionError` propagates as nbclient raises it.
    """
    # kernel_dirs=[]: only the native "python3" spec, i.e. this interpreter, whatever kernels a user installed.
    km = KernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))
    assert km.kernel_spec.argv[0] in (sys.executable, "python"), km.kernel_spec.argv  # "python" -> sys.executable
    base = {name: value for name, value in os.environ.items() if name not in NOT_INHERITED}
    base.update(env or {})
    memory: dict[str, KernelMemory] = {}

    def started(**_: object) -> None:
        memory["kernel"] = KernelMemory(pid=km.provisioner.process.pid)
        memory["kernel"].start()

    def cell_started(**_: object) -> None:
        memory["kernel"].cell_peaks.append(0)

    client = NotebookClient(nb, km=km, timeout=cell_timeout_s, resources={"metadata": {"path": str(workdir)}},
                            on_notebook_start=started, on_cell_execute=cell_started)
    try:
        client.execute(env=base)
    finally:
        if "kernel" in memory:
            memory["kernel"].stop()
    return memory["kernel"]
