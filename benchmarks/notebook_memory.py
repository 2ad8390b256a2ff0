"""Benchmark group "binder": the kernel's peak resident memory, as a mybinder.org session (2 GB) would see it.

Every figure is the largest resident size of a fresh kernel process and its children, sampled every 30 ms
while a notebook runs top to bottom (tests/notebook_runner.py, the harness the notebook tests use).

- Each notebook in notebooks/, as Run All runs it. "before" is the figure recorded in memory_before.json:
  the same harness on commit c092c2b (Keras' own VGG16 loading, the `tensorflow` wheel).
- The Explorer on VGG16 with each weights choice (offline BSDS500, random with the classifier, an ImageNet
  file), every tab opened on three images. "before" loads the model the way Keras does (random
  initialisation, then the file's values over it); "after" with `cw.load_model`. Both are measured here.
  The ImageNet file is one of the real file's shapes and layout (random values: no internet here), in a
  temporary Keras cache, so the ImageNet code path reads it as it would read the downloaded one.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
NOTEBOOK_BUDGET = 1.5e9
BINDER_BUDGET = 1.8e9
WEIGHTS = ("bsds500", "random", "imagenet")

_KERAS_LOAD = {  # the model as Keras' own loaders build it: random initialisation first
    "bsds500": "import keras\nfrom cnnviz_widgets.network import loading\n"
               "model = keras.applications.VGG16(weights=None, include_top=False)\n"
               "arrays = loading._hed_conv_weights(loading._hed_weights_path())\n"
               "for name, values in arrays.items():\n    model.get_layer(name).set_weights(values)",
    "random": "import keras\nmodel = keras.applications.VGG16(weights=None)",
    "imagenet": "import keras, os\nmodel = keras.applications.VGG16(weights=os.environ['KERAS_HOME'] + "
                "'/models/vgg16_weights_tf_dim_ordering_tf_kernels.h5')",
}
_OUR_LOAD = {
    "bsds500": "model = cw.load_model('vgg16', weights='bsds500')",
    "random": "model = cw.load_model('vgg16', weights=None)",
    "imagenet": "model = cw.load_model('vgg16', weights='imagenet')",
}
_EXPLORE = [
    "explorer = Explorer(cw.ModelState(model, image='astronaut', max_side=224))\nexplorer",
    "for image in ('astronaut', 'cat', 'coffee'):\n"
    "    explorer.state.set_image(image)\n"
    "    for tab in range(len(explorer.views)):\n"
    "        explorer.tabs.selected_index = tab\n"
    "        explorer.state.layer = explorer.state.layers[(tab * 3) % len(explorer.state.layers)]",
]


def _runner() -> Any:
    sys.path.insert(0, str(REPO))
    from tests import notebook_runner

    return notebook_runner


def _fake_imagenet_home(directory: Path) -> Path:
    sys.path.insert(0, str(REPO))
    import cnnviz_widgets as cw
    from tests.conftest import write_legacy_weights

    (directory / "models").mkdir(parents=True, exist_ok=True)
    write_legacy_weights(cw.architecture("vgg16", include_top=True),
                         directory / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels.h5")
    return directory


def notebook_peak(path: Path) -> float:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory() as workdir:
        return _runner().run_notebook(nb, Path(workdir)).peak_bytes


def explorer_peak(weights: str, how: str, keras_home: Path) -> float:
    import nbformat

    load = (_KERAS_LOAD if how == "keras" else _OUR_LOAD)[weights]
    cells = ["import cnnviz_widgets as cw\nfrom cnnviz_widgets.widgets import Explorer\n" + load, *_EXPLORE]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    with tempfile.TemporaryDirectory() as workdir:
        return _runner().run_notebook(nb, Path(workdir), env={"KERAS_HOME": str(keras_home)}).peak_bytes


def bench_binder(quick: bool = False) -> list[dict[str, Any]]:
    """Rows for benchmarks/run.py: notebooks (after, with the recorded before) and the Explorer per weights."""
    before = json.loads((HERE / "memory_before.json").read_text())
    rows: list[dict[str, Any]] = []
    notebooks = sorted((REPO / "notebooks").glob("*.ipynb"))
    for path in notebooks[:1] if quick else notebooks:
        peak = notebook_peak(path)
        was = before["notebooks"].get(path.name)
        rows.append(dict(figure="kernel peak, Run All", case=path.name, value=peak / 1e9, unit="GB",
                         target=f"≤ {NOTEBOOK_BUDGET / 1e9:.1f}", met=peak <= NOTEBOOK_BUDGET,
                         note=f"before {was:.2f} GB (recorded)" if was else "new notebook",
                         extra=dict(peak_bytes=peak, before_gb=was)))
    with tempfile.TemporaryDirectory() as home:
        keras_home = _fake_imagenet_home(Path(home))
        for weights in WEIGHTS[:1] if quick else WEIGHTS:
            old = explorer_peak(weights, "keras", keras_home)
            new = explorer_peak(weights, "ours", keras_home)
            budget = NOTEBOOK_BUDGET if weights == "bsds500" else BINDER_BUDGET
            rows.append(dict(figure="kernel peak, Explorer: every tab, 3 images", case=f"VGG16 {weights}",
                             value=new / 1e9, unit="GB", target=f"≤ {budget / 1e9:.1f}", met=new <= budget,
                             note=f"before {old / 1e9:.2f} GB (Keras' own loading, measured now)",
                             extra=dict(peak_bytes=new, before_bytes=old)))
    return rows
