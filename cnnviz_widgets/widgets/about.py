"""What a learner is told about the model in front of them: which network, what its weights learned, and the
size of picture it sees. Plain sentences for the Explorer's header and the layer table; the Python names
(`max_side`, the preprocessing mode) appear only in hover help, for whoever wants to change them.
"""

from __future__ import annotations

import html
import re
from typing import Any

_IMAGENET = "ImageNet (1.3 million photos of 1,000 kinds of things)"

# The weights labels `models.load_model` records, as a learner would want them said (first match wins).
_WEIGHTS = (
    (r"^ImageNet", f"Its weights were learned from {_IMAGENET}."),
    (r"^BSDS500", "Its weights were learned from ImageNet photos, then fine-tuned to trace edges: they are the "
                  "first 13 layers of the HED edge detector, trained on the BSDS500 photos."),
    (r"^random", "Its weights are random: this network has learned nothing yet."),
    (r"^none", "It has no weights: only its structure."),
    (r"^the model's own", "A model of your own, shown with the weights it has now."),
)

# Preprocessing modes of `inputs.PREPROCESSING`, in words (for hover help).
_PREPROCESS = {
    "caffe": "the colours are put in blue, green, red order and the average ImageNet colour is subtracted",
    "tf": "the colour values are scaled to -1..1",
    "torch": "the colour values are scaled to 0..1 and standardised with the ImageNet mean and spread",
    "unit": "the colour values are scaled to 0..1",
    "none": "the colour values go in as they are (0..255)",
}


def weights_sentence(state: Any) -> str:
    """One sentence: what the model's weights learned (or where they come from)."""
    label = str(state.info.weights)
    for pattern, sentence in _WEIGHTS:
        if re.match(pattern, label):
            return sentence
    if label.startswith("from "):
        return f"Its weights were loaded from the file {label.removeprefix('from ')}."
    return f"Weights: {label}."


def size_sentence(state: Any) -> str:
    """One sentence: the size of picture the network sees, and why it differs from the photo, if it does."""
    fed_h, fed_w = state.model_input.picture.shape[:2]
    photo_h, photo_w = state.image.shape[:2]
    seen = f"The network sees this image at {fed_w}×{fed_h} pixels"
    fixed_h, fixed_w = state.graph.input_shape[:2]
    if fixed_h and fixed_w:
        if (photo_h, photo_w) == (fed_h, fed_w):
            return f"{seen}, the fixed size this network was built for."
        return f"{seen}, the fixed size this network was built for: it was resized from {photo_w}×{photo_h}."
    if (photo_h, photo_w) == (fed_h, fed_w):
        return f"{seen}, its own size (this network takes images of any size)."
    return (f"{seen}: it was made smaller from {photo_w}×{photo_h}, so that its longest side is at most "
            f"{state.max_side} pixels, which keeps every step quick.")


def size_help(state: Any) -> str:
    """Hover help for the size sentence: where to change it, and what happens to the colours."""
    parts = []
    fixed_h, fixed_w = state.graph.input_shape[:2]
    if not (fixed_h and fixed_w):
        parts.append(f"To change the largest side (now {state.max_side} pixels), make the state with "
                     f"cw.ModelState(model, max_side={max(state.max_side * 2, 512)}) in Python: larger pictures "
                     "show more detail and take longer.")
    mode = state.model_input.preprocess
    if mode in _PREPROCESS:
        parts.append(f"Before the picture goes in, {_PREPROCESS[mode]} (preprocessing '{mode}').")
    return " ".join(parts)


def model_line(state: Any) -> str:
    """HTML: the model's name and what its weights learned."""
    return f"<b>{html.escape(str(state.info.name))}</b>. {html.escape(weights_sentence(state))}"


def model_header(state: Any) -> str:
    """HTML: the model's name and what its weights learned, then (smaller) the size of picture it sees."""
    helptext = size_help(state)
    fixed = all(state.graph.input_shape[:2])
    hint = (f' <span class="cnnviz-help" title="{html.escape(helptext)}" style="cursor: help; '
            f'text-decoration: underline dotted">{"Details" if fixed else "How to change it"}</span>'
            ) if helptext else ""
    # the widget's own line height is a control's (28 px): text lines sit closer
    return (f'<div style="line-height: 1.45">{model_line(state)}<br>'
            f"<small>{html.escape(size_sentence(state))}{hint}</small></div>")
