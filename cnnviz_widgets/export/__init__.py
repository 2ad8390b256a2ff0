"""Export: a view as a slide PNG with its titles, colour bars and captions, and the code that rebuilds it.

`panels` turns a bqplot figure into a picture with its words, `slide` lays a whole view out at 1920 px,
`saving` writes the PNG with its metadata, `code` writes the lines that load the same model and image.
"""

from cnnviz_widgets.lazy import lazy_names

_EXPORTS = {"Panel": "panels", "compose": "panels", "figures_of": "panels", "panel_of": "panels",
            "enlargement": "panels", "layout_slide": "slide", "Slide": "slide", "TileBox": "slide",
            "export_png": "saving", "save_png": "saving", "reproduce_code": "code"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_names(__name__, _EXPORTS)
