"""The session's memory is read from the container (cgroup v1/v2) and the machine, and steps that would not fit
stop with one sentence instead of a dead kernel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import cnnviz_widgets as cw
from cnnviz_widgets.network import memory
from cnnviz_widgets.network.memory import MemoryBudgetError, MemoryFacts

GB = 10**9


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def meminfo(tmp_path) -> Path:
    path = tmp_path / "meminfo"
    _write(path, "MemTotal:       24000000 kB\nMemFree:        20000000 kB\nMemAvailable:   23000000 kB\n")
    return path


def test_cgroup_v2_limit_minus_what_is_used(tmp_path, meminfo):
    root = tmp_path / "cg"
    _write(root / "memory.max", f"{2 * GB}\n")
    _write(root / "memory.current", f"{int(1.3 * GB)}\n")
    _write(root / "memory.stat", f"anon 1000\ninactive_file {int(0.1 * GB)}\nactive_file 5\n")
    _write(tmp_path / "self_cgroup", "0::/\n")
    facts = memory.memory_facts(root, meminfo, tmp_path / "self_cgroup")
    assert facts.limit == 2 * GB
    assert facts.used == int(1.2 * GB)  # reclaimable page cache does not count as used
    assert facts.available == int(0.8 * GB)
    assert "2.0 GB" in facts.describe() and "0.8 GB" in facts.describe()


def test_cgroup_v2_in_a_nested_path_and_no_limit(tmp_path, meminfo):
    root = tmp_path / "cg"
    _write(root / "memory.max", "max\n")  # the root says no limit; this process's own group has one
    _write(root / "user.slice" / "kernel" / "memory.max", f"{GB}\n")
    _write(root / "user.slice" / "kernel" / "memory.current", f"{GB // 4}\n")
    _write(tmp_path / "self_cgroup", "0::/user.slice/kernel\n")
    facts = memory.memory_facts(root, meminfo, tmp_path / "self_cgroup")
    assert (facts.limit, facts.available) == (GB, GB - GB // 4)
    _write(tmp_path / "self_cgroup", "0::/\n")
    facts = memory.memory_facts(root, meminfo, tmp_path / "self_cgroup")
    assert facts.limit is None and facts.available == 23000000 * 1024  # the machine's MemAvailable


def test_cgroup_v1_limit_and_unlimited(tmp_path, meminfo):
    root = tmp_path / "cg"
    group = root / "memory" / "docker" / "abc"
    _write(group / "memory.limit_in_bytes", f"{3 * GB}\n")
    _write(group / "memory.usage_in_bytes", f"{GB}\n")
    _write(group / "memory.stat", f"cache 5\ntotal_inactive_file {GB // 2}\n")
    _write(tmp_path / "self_cgroup", "4:memory:/docker/abc\n3:cpuset:/\n")
    facts = memory.memory_facts(root, meminfo, tmp_path / "self_cgroup")
    assert (facts.limit, facts.used, facts.available) == (3 * GB, GB // 2, 3 * GB - GB // 2)
    _write(group / "memory.limit_in_bytes", "9223372036854771712\n")  # v1's "no limit"
    facts = memory.memory_facts(root, meminfo, tmp_path / "self_cgroup")
    assert facts.limit is None


def test_machine_memory_is_the_bound_when_tighter_than_the_container(tmp_path):
    root = tmp_path / "cg"
    _write(root / "memory.max", f"{8 * GB}\n")
    _write(root / "memory.current", "0\n")
    info = tmp_path / "meminfo"
    _write(info, "MemAvailable:   1000000 kB\n")
    facts = memory.memory_facts(root, info, tmp_path / "missing")
    assert facts.available == 1000000 * 1024


def test_cache_budget_is_the_default_unless_memory_is_short():
    assert memory.cache_budget(MemoryFacts(available=20 * GB)) == (memory.DEFAULT_CACHE_BYTES, None)
    budget, note = memory.cache_budget(MemoryFacts(available=int(0.6 * GB), limit=2 * GB, used=int(1.4 * GB)))
    assert budget == int(0.6 * GB * memory.CACHE_SHARE)
    assert "150 MB instead of 671 MB" in note and "limit is 2.0 GB" in note
    assert memory.cache_budget(MemoryFacts(available=0))[0] == memory.MIN_CACHE_BYTES


def test_check_fits_names_the_step_the_need_and_the_way_out():
    memory.check_fits(GB, "a step", "do less", MemoryFacts(available=2 * GB))
    with pytest.raises(MemoryBudgetError, match=r"a step needs about 3\.0 GB, but this session has 2\.0 GB of "
                                                r"memory left \(this session's limit is 2\.0 GB\): do less\."):
        memory.check_fits(3 * GB, "a step", "do less", MemoryFacts(available=2 * GB, limit=2 * GB))
    assert issubclass(MemoryBudgetError, cw.CnnvizError) and issubclass(MemoryBudgetError, MemoryError)


@pytest.fixture
def short_of_memory(monkeypatch):
    """This session has `left` bytes of memory left, in a 2 GB container."""

    def set_left(left: int) -> None:
        facts = MemoryFacts(available=left, limit=2 * GB, used=2 * GB - left)
        monkeypatch.setattr(memory, "memory_facts", lambda *a, **k: facts)

    return set_left


def test_state_shrinks_its_cache_and_says_so(tiny_model, short_of_memory):
    short_of_memory(int(0.4 * GB))
    state = cw.ModelState(tiny_model, image=np.zeros((32, 32, 3), np.uint8))
    assert state.extractor.budget_bytes == int(0.4 * GB * memory.CACHE_SHARE)
    assert "activation cache keeps 100 MB instead of 671 MB" in state.cache_note
    roomy = cw.ModelState(tiny_model, image=np.zeros((32, 32, 3), np.uint8), cache_budget_mb=64)
    assert roomy.extractor.budget_bytes == 64 * 2**20 and roomy.cache_note is None


def test_explorer_status_line_tells_of_a_reduced_cache(tiny_model, short_of_memory):
    from cnnviz_widgets.widgets import Explorer

    short_of_memory(int(0.4 * GB))
    explorer = Explorer(cw.ModelState(tiny_model, image=np.zeros((32, 32, 3), np.uint8)))
    try:
        assert "activation cache keeps 100 MB" in explorer.status.value
    finally:
        explorer.close()


def test_forward_pass_that_would_not_fit_is_refused_before_it_runs(vgg16_bsds, short_of_memory):
    state = cw.ModelState(vgg16_bsds, image="astronaut", max_side=64, cache_budget_mb=64)
    state.activation()
    passes = state.forward_passes
    big = np.zeros((2048, 2048, 3), np.uint8)
    needed = 2 * state.extractor.output_bytes((2048, 2048, 3))
    assert needed > 3 * GB  # every VGG16 conv and pool output at 2048², twice over
    short_of_memory(int(1.5 * GB))
    state.max_side = 2048
    with pytest.raises(MemoryBudgetError, match=r"a forward pass on a 2048×2048 input needs about .* smaller "
                                                r"max_side"):
        state.set_image(big)
        state.activation()
    assert state.forward_passes == passes  # nothing ran


def test_model_too_large_for_the_memory_left_is_refused_before_loading(short_of_memory):
    short_of_memory(int(0.3 * GB))
    with pytest.raises(MemoryBudgetError, match=r"loading VGG16 \(138,357,544 parameters\) needs about 0\.6 GB"):
        cw.load_model("vgg16", weights=None, include_top=True)


def test_gradient_pass_that_would_not_fit_is_refused(vgg16_bsds, short_of_memory):
    state = cw.ModelState(vgg16_bsds, image="astronaut", max_side=512, cache_budget_mb=64, layer="block4_conv1")
    needed = 3 * state.extractor.output_bytes(state.model_input.array.shape)
    short_of_memory(int(needed * 0.9))
    with pytest.raises(MemoryBudgetError, match=r"grad-cam on a 512×512 input needs about .*smaller max_side"):
        state.explanation("grad-cam")
    short_of_memory(int(needed * 1.1))
    assert state.explanation("grad-cam").raw.shape[:2] == state.activation("block3_conv3").shape[:2]


def test_output_bytes_are_exact_for_the_first_size_and_scaled_for_others(vgg16_bsds):
    state = cw.ModelState(vgg16_bsds, image="astronaut", max_side=64, cache_budget_mb=64)
    extractor = state.extractor
    fed = state.model_input.array.shape
    exact = sum(a.nbytes for a in (state.activation(name) for name in extractor.layers))
    assert extractor.output_bytes(fed) == exact  # what one forward pass really returns
    doubled = extractor.output_bytes((fed[0] * 2, fed[1] * 2, 3))
    assert doubled == 4 * exact  # four times the pixels
