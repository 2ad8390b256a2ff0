"""`WhatItLooksFor`: for the current layer and filter, the image patches that excite it most, the picture
optimised to excite it, and its weights.

The patches come from a scan (`cnnviz_widgets.scan.top_examples`), made once over a collection: after that,
moving the layer or filter slider only slices and encodes k small crops, at slider speed. Without a scan the
view offers one over the bundled samples (tiles of them) or over a folder. Clicking "open" under a crop makes
that image the state's image and marks the unit (`marked`: layer, filter, row and column in the layer's map).
The optimised picture (`cnnviz_widgets.maximization`) is made on request, then kept for that filter. On a state
whose weights change (a `TrainingState`), the weights picture follows them, an optimised picture is kept only for
the weights it was made with, and a scan made with other weights says so.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets
import numpy as np
import traitlets

from cnnviz_widgets.errors import CnnvizError
from cnnviz_widgets.features.examples import TopExamples
from cnnviz_widgets.features.scanning import top_examples
from cnnviz_widgets.features.sources import sample_collection
from cnnviz_widgets.features.visualisation import maximize
from cnnviz_widgets.pictures import render
from cnnviz_widgets.widgets.theme import LOOKSFOR_CSS, stylesheet
from cnnviz_widgets.widgets.view import View, as_state

_CROP_PX = 96  # each crop is sent at about this size: a 3-px block1 field and a 200-px block5 field alike
class WhatItLooksFor(View):
    """Top image patches, optimised picture and weights of the current filter of a `ModelState`.

    Parameters
    ----------
    state_or_model
        A `ModelState` (shared with other views), or anything `ModelState` takes as a model.
    top
        A finished scan (`TopExamples`) to show; None: the view offers to run one.
    k
        Patches shown per filter (at most the scan's k).
    maximize_steps, maximize_size
        Settings of the optimised picture (see `cnnviz_widgets.maximization`).
    """

    marked = traitlets.Tuple(help="(layer, filter, row, col) of the unit whose patch was opened last, in the layer's "
                                  "map; empty before any.")

    def __init__(self, state_or_model: Any, top: TopExamples | None = None, *, k: int = 9,
                 maximize_steps: int = 128, maximize_size: int = 96, css_class: str = "cnnviz-looksfor",
                 active: bool | None = None):
        self.state = as_state(state_or_model)
        self.k = int(k)
        self.maximize_steps, self.maximize_size = int(maximize_steps), int(maximize_size)
        self.top: TopExamples | None = None
        self._top_version: int | None = None  # the weights the scan was made with (see View._weights_version)
        # (layer, filter, weights version) -> FeatureVisualization
        self._pictures: dict[tuple[str, int, int | None], Any] = {}

        self.title = ipywidgets.HTML("")
        self.title.add_class(f"{css_class}-note")
        self._style = stylesheet(LOOKSFOR_CSS, f"{css_class}-stylesheet")
        # an Image is only ever shown with a picture in it: an empty one is the browser's broken-picture icon
        self.crops = [ipywidgets.Image(format="png", layout=ipywidgets.Layout(width="100%")) for _ in range(self.k)]
        self.captions = [ipywidgets.HTML("") for _ in range(self.k)]
        self.open_buttons = [ipywidgets.Button(description="open", layout=ipywidgets.Layout(width="100%"),
                                               tooltip="make this image the current one and mark the unit")
                             for _ in range(self.k)]
        for index, button in enumerate(self.open_buttons):
            button.on_click(lambda _b, i=index: self.open_example(i))
        self._cells = [ipywidgets.VBox([img, cap, btn], layout=ipywidgets.Layout(min_width="0"))
                       for img, cap, btn in zip(self.crops, self.captions, self.open_buttons, strict=True)]
        self.grid = ipywidgets.GridBox(self._cells, layout=ipywidgets.Layout(
            grid_template_columns=f"repeat({min(3, self.k)}, minmax({_CROP_PX}px, 1fr))", grid_gap="8px",
            width="100%"))
        self.grid.add_class(f"{css_class}-crops")
        # before a scan, a sentence where the patches will be (rather than empty picture frames)
        self.placeholder = ipywidgets.HTML("")
        self.placeholder.add_class(f"{css_class}-note")
        self.placeholder.add_class(f"{css_class}-placeholder")

        self.folder = ipywidgets.Text(placeholder="a folder of images, or empty for the samples",
                                      layout=ipywidgets.Layout(width="400px", max_width="100%"))
        self.scan_button = ipywidgets.Button(description="scan", icon="search",
                                             tooltip="find the patches that excite every filter most")
        self.scan_button.on_click(lambda _b: self.run_scan(self.folder.value.strip() or None))
        # shown only while a scan or an optimisation runs: idle, it would be an empty bar
        self.progress = ipywidgets.IntProgress(value=0, min=0, max=1,
                                               layout=ipywidgets.Layout(width="200px", display="none"))
        self.scan_box = ipywidgets.HBox([self.folder, self.scan_button])
        self.scan_box.add_class(f"{css_class}-scan")

        self.optimised = ipywidgets.Image(format="png", layout=ipywidgets.Layout(width="100%"))
        self.optimise_button = ipywidgets.Button(description="optimise picture", icon="magic",
                                                 tooltip="the picture that excites this filter most",
                                                 layout=ipywidgets.Layout(width="auto"))
        self.optimise_button.on_click(lambda _b: self.optimise())
        self.optimised_caption = ipywidgets.HTML("")
        self.weights = ipywidgets.Image(format="png", layout=ipywidgets.Layout(width="100%"))
        self.weights.add_class(f"{css_class}-weights")
        self.weights_caption = ipywidgets.HTML("")
        side = ipywidgets.VBox([ipywidgets.HTML("<b>Optimised picture</b>"), self.optimised, self.optimise_button,
                                self.optimised_caption, ipywidgets.HTML("<b>Weights</b>"), self.weights,
                                self.weights_caption], layout=ipywidgets.Layout(flex="2 1 0%", min_width="200px"))
        side.add_class(f"{css_class}-side")
        left = ipywidgets.VBox([self.placeholder, self.grid], layout=ipywidgets.Layout(flex="3 1 0%", min_width="0"))
        body = ipywidgets.HBox([left, side], layout=ipywidgets.Layout(width="100%"))
        body.add_class(f"{css_class}-body")
        # the progress bar has its own row: an optimisation after a scan runs while the scan row is hidden
        # active None: View's default (hidden when made inside starting_hidden())
        super().__init__([self._style, self.title, self.scan_box, self.progress, body], css_class=css_class,
                         active=active)
        self.follow_state(["layer", "filter"])
        if top is not None:
            self.set_top(top)
        self.redraw()

    # -- what the buttons do (callable from code) -------------------------------------------------------

    def set_top(self, top: TopExamples, version: int | None = None) -> None:
        """Show this scan (`version`: the state's `version` it was made at; None: the weights shown now)."""
        if not isinstance(top, TopExamples):
            raise CnnvizError(f"top must be a TopExamples (from cw.top_examples); got {type(top).__name__}")
        self.top = top
        self._top_version = self._weights_version if version is None else version
        self._forget_drawn()
        self.redraw()

    def run_scan(self, folder: str | None = None, **kwargs: Any) -> TopExamples:
        """Scan a folder, or tiles of the bundled samples (None), with a progress bar in the view."""
        if folder is None:
            images, ids = sample_collection(112)
        else:
            images, ids = folder, None

        def progress(done: int, total: int) -> None:
            self.progress.max, self.progress.value = max(total, 1), done

        kwargs.setdefault("k", self.k)
        self.scan_button.disabled = True
        self.progress.layout.display = None
        try:
            with self._computing():  # a TrainingState's training thread does not refresh it half way
                top = top_examples(self.state, images, ids=ids, progress=progress, **kwargs)
                version = self._weights_version
        finally:
            self.scan_button.disabled = False
            self.progress.layout.display = "none"
        self.set_top(top, version)
        return top

    def open_example(self, index: int) -> None:
        """Make the image of crop `index` the state's image and mark its unit (`marked`)."""
        if self.top is None or self.state.layer not in self.top.layers:
            return
        layer, f = self.state.layer, self.state.filter
        if index >= len(self.top.sources(layer, f)):
            return
        image_id = self.top.sources(layer, f)[index][0]
        row, col = int(self.top.row[layer][f, index]), int(self.top.col[layer][f, index])
        self.state.set_image(self.top.picture(image_id), name=str(image_id))
        self.marked = (layer, f, row, col)

    def optimise(self) -> Any:
        """The optimised picture of the current filter (made once per filter, cached on disk too)."""
        layer, f = self.state.layer, self.state.filter

        def progress(done: int, total: int) -> None:
            self.progress.max, self.progress.value = total, done

        self.optimise_button.disabled = True
        self.progress.layout.display = None
        try:
            with self._computing():
                result = maximize(self.state, layer, f, steps=self.maximize_steps, size=self.maximize_size,
                                  progress=progress)
                version = self._weights_version
        finally:
            self.optimise_button.disabled = False
            self.progress.layout.display = "none"
        self._pictures[(layer, f, version)] = result
        self._forget_drawn()
        self.redraw()
        return result

    # -- drawing ---------------------------------------------------------------------------------------

    def _key(self) -> tuple:
        s = self.state
        version = self._weights_version
        return (s.layer, s.filter, id(self.top), (s.layer, s.filter, version) in self._pictures, version)

    def _draw(self) -> None:
        s = self.state
        version = self._weights_version
        layer, f = s.layer, s.filter
        if s.layer_kind() == "input":
            raise CnnvizError(f"{layer} is the model input: pick a conv or pooling layer to see what a filter "
                              "looks for")
        self._draw_crops(layer, f)
        self._draw_weights(layer, f)
        # a picture made with other weights would pass for these: only this version's are kept
        self._pictures = {made: kept for made, kept in self._pictures.items() if made[2] == version}
        picture = self._pictures.get((layer, f, version))
        # An empty Image shows the browser's broken-picture icon: hidden until there is a picture.
        self.optimised.layout.display = "none" if picture is None else None
        if picture is None:
            self.optimised.value = b""
            self.optimised_caption.value = (f"Not made yet. “Optimise picture” changes a noise picture, step by "
                                            f"step ({self.maximize_steps} steps), until it excites filter {f} "
                                            "as much as it can; it takes a while, once per filter.")
        else:
            self.optimised.value = render.encode_png(picture.image)
            self.optimised_caption.value = (f"How strongly it excites the filter: {picture.objective:.3g} (the "
                                            f"starting noise: {picture.start:.3g}), after {picture.steps} steps.")

    def _draw_crops(self, layer: str, f: int) -> None:
        top = self.top
        scanned = top is not None and layer in top.layers
        self.scan_box.layout.display = "none" if scanned else None
        self.grid.layout.display = None if scanned else "none"
        self.placeholder.layout.display = "none" if scanned else None
        if not scanned and top is not None:  # a scan exists, of other layers (the conv layers)
            self.title.value = (f"<b>{html.escape(layer)}, filter {f}</b>: the scan covers "
                                f"{len(top.layers)} layers, not this one.")
            self.placeholder.value = (f"<i>Pick one of the scanned layers ({html.escape(_short(top.layers))}) to "
                                      "see the image patches that excite its filters most, or scan again.</i>")
        elif not scanned:
            self.title.value = (f"<b>{html.escape(layer)}, filter {f}</b>: no scan of this layer yet. Scan the "
                                "bundled samples or a folder to see the patches that excite each filter most.")
            self.placeholder.value = (
                f"<i>After a scan, the {self.k} image patches that excite this filter most will be here, strongest "
                "first: the part of each image its receptive field sees, with an “open” button that shows the whole "
                "image. One scan covers every conv layer, so after it the sliders move through them at once.</i>")
        if not scanned:
            for img, cap, btn in zip(self.crops, self.captions, self.open_buttons, strict=True):
                img.value, cap.value, btn.disabled = b"", "", True
            return
        assert top is not None
        crops, sources, scores = top.crops(layer, f), top.sources(layer, f), top.scores(layer, f)
        self.title.value = (f"<b>{html.escape(layer)}, filter {f}</b>: the {len(crops)} image patches of "
                            f"{len(top.ids)} that excite it most (its receptive field, strongest first)")
        if self._top_version != self._weights_version:
            self.title.value += (" · <i>found with the weights of another training step: scan again for the "
                                 "patches these weights prefer</i>")
        for i, (img, cap, btn) in enumerate(zip(self.crops, self.captions, self.open_buttons, strict=True)):
            self._cells[i].layout.display = None if i < len(crops) else "none"
            if i < len(crops):
                img.value = render.encode_png(_fit(crops[i], _CROP_PX))
                where = html.escape(f"the filter's strongest value in image {sources[i][0]}", quote=True)
                cap.value = f'<span title="{where}">response {scores[i]:.3g}</span>'
                btn.disabled = False
            else:
                img.value, cap.value, btn.disabled = b"", "", True

    def _draw_weights(self, layer: str, f: int) -> None:
        conv = self.state.layer_kind(layer) == "conv"
        self.weights.layout.display = None if conv else "none"  # never an empty picture frame
        if not conv:
            self.weights.value, self.weights_caption.value = b"", "A pooling layer has no weights."
            return
        kernel = self.state.weights(layer)[0][:, :, :, f]  # (kh, kw, C)
        if kernel.shape[2] == 3 and self.state.previous_layer(layer) == self.state.input_layer:
            unit, _ = render.normalize(kernel.reshape(*kernel.shape[:2], 3), "symmetric")
            picture = (unit * 255).astype(np.uint8)  # one colour picture: the filter's colours
            if self.state.fed_channel_names() == ("B", "G", "R"):
                picture = picture[..., ::-1]
            picture = render.scale_up(picture, max(1, 96 // max(kernel.shape[:2])))
            caption = "The kernel as colours (grey = 0)."
        else:
            shown = min(kernel.shape[2], 64)
            mosaic, _ = render.render_mosaic(kernel, "symmetric", "coolwarm", indices=range(shown))
            picture = render.scale_up(mosaic.image, max(1, 192 // max(mosaic.image.shape[:2])))
            caption = (f"Its kernel slices for {shown} of {kernel.shape[2]} input channels (blue < 0, white = 0, "
                       "red > 0).")
        self.weights.value = render.encode_png(picture)
        self.weights_caption.value = caption


def _short(names: list[str] | tuple[str, ...]) -> str:
    names = list(names)
    return ", ".join(names) if len(names) <= 4 else f"{names[0]}, {names[1]} … {names[-1]}"


def _fit(crop: np.ndarray, side: int) -> np.ndarray:
    """A crop enlarged (nearest, crisp) or left, so its longer side is about `side`."""
    factor = max(1, side // max(crop.shape[:2]))
    return render.scale_up(crop, factor) if factor > 1 else crop
