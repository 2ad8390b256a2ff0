"""How much memory this session may still use, and one clear sentence before a step that would not fit.

A hosted notebook (mybinder.org: 2 GB) runs in a container whose kernel is killed, not slowed, past its
limit. The limit is the container's cgroup (v2 ``memory.max``, v1 ``memory.limit_in_bytes``) where one is
set, and the machine's available memory otherwise. Memory the kernel can reclaim (inactive page cache)
counts as free. The activation cache sizes itself from it, and steps that would need more than is left
(a huge input, a model too large, a gradient pass on a big picture) stop with `MemoryBudgetError` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cnnviz_widgets.errors import CnnvizError

DEFAULT_CACHE_BYTES = 640 * 2**20
"""Two images' worth of VGG16 activations at 512×512 (conv, pool and input outputs: about 320 MB each)."""
CACHE_SHARE = 0.25
"""The share of the memory still free that the activation cache may take: the rest is the user's."""
MIN_CACHE_BYTES = 16 * 2**20
_UNLIMITED = 2**60  # cgroup v1 writes "no limit" as a page-rounded 2**63


class MemoryBudgetError(CnnvizError, MemoryError):
    """A step would need more memory than this session has left; nothing was started."""


@dataclass(frozen=True)
class MemoryFacts:
    """What the session can use, in bytes. `limit` is the container's, None where none is set."""

    available: int
    limit: int | None = None
    used: int | None = None

    def describe(self) -> str:
        left = f"{_gb(self.available)} of memory left"
        if self.limit is not None:
            return f"{left} (this session's limit is {_gb(self.limit)})"
        return left


def memory_facts(cgroup_root: Path = Path("/sys/fs/cgroup"), meminfo: Path = Path("/proc/meminfo"),
                 self_cgroup: Path = Path("/proc/self/cgroup")) -> MemoryFacts:
    """The memory this process may still use: the tighter of the container's limit and the machine's."""
    machine = _meminfo_available(meminfo)
    limit, used = _cgroup_limit_and_use(cgroup_root, self_cgroup)
    if limit is None:
        return MemoryFacts(available=machine if machine is not None else _UNLIMITED)
    left = max(0, limit - (used or 0))
    return MemoryFacts(available=min(left, machine) if machine is not None else left, limit=limit, used=used)


def cache_budget(facts: MemoryFacts | None = None, default: int = DEFAULT_CACHE_BYTES) -> tuple[int, str | None]:
    """Bytes the activation cache may hold, and a sentence for the user when that is less than `default`."""
    facts = facts or memory_facts()
    budget = int(max(MIN_CACHE_BYTES, min(default, facts.available * CACHE_SHARE)))
    if budget >= default:
        return default, None
    return budget, (f"The activation cache keeps {_mb(budget)} instead of {_mb(default)}: {facts.describe()}. "
                    "Revisiting an earlier image may run the network again.")


def check_fits(needed_bytes: float, what: str, advice: str, facts: MemoryFacts | None = None) -> None:
    """Raise MemoryBudgetError when `what` needs more than this session has left.

    `advice` is the way out, e.g. "choose a max_side of 1024 or less".
    """
    facts = facts or memory_facts()
    if needed_bytes > facts.available:
        raise MemoryBudgetError(f"{what} needs about {_gb(needed_bytes)}, but this session has "
                                f"{facts.describe()}: {advice}.")


def _meminfo_available(meminfo: Path) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_limit_and_use(root: Path, self_cgroup: Path) -> tuple[int | None, int | None]:
    """(limit, used) of this process's memory cgroup, v2 then v1; (None, None) where no limit is set."""
    v2_path, v1_path = "", ""
    try:
        for line in self_cgroup.read_text().splitlines():
            number, controllers, path = line.split(":", 2)
            if number == "0" and controllers == "":
                v2_path = path.lstrip("/")
            elif "memory" in controllers.split(","):
                v1_path = path.lstrip("/")
    except (OSError, ValueError):
        pass
    # Inside a container the cgroup is usually mounted as the root; on a host it sits at its path.
    for directory in dict.fromkeys([root / v2_path, root]):
        limit = _read_int(directory / "memory.max")
        if limit is not None:
            used = _read_int(directory / "memory.current")
            return limit, _minus_reclaimable(used, directory / "memory.stat", "inactive_file")
    for directory in dict.fromkeys([root / "memory" / v1_path, root / "memory"]):
        limit = _read_int(directory / "memory.limit_in_bytes")
        if limit is not None:
            used = _read_int(directory / "memory.usage_in_bytes")
            return limit, _minus_reclaimable(used, directory / "memory.stat", "total_inactive_file")
    return None, None


def _read_int(path: Path) -> int | None:
    """An integer cgroup file; None where it is missing, unreadable, "max" or v1's unlimited value."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text.isdigit():
        return None
    value = int(text)
    return None if value >= _UNLIMITED else value


def _minus_reclaimable(used: int | None, stat: Path, key: str) -> int | None:
    if used is None:
        return None
    try:
        for line in stat.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return max(0, used - int(value))
    except (OSError, ValueError):
        pass
    return used


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def _mb(n: float) -> str:
    return f"{n / 1e6:.0f} MB"
