"""The look of every view, in one place: the stylesheets, the colours and the coloured message text.

Text and surfaces take JupyterLab's theme variables (``var(--jp-…)``), so light and dark themes need no code of
their own; the fallbacks serve front ends without them (Voila's plain template). The few colours drawn into
bqplot marks or pictures (an SVG attribute cannot read a CSS variable) are named here once, chosen to read on
both themes and apart under the common colour-vision deficiencies.
"""

from __future__ import annotations

import html

import ipywidgets

# -- colours drawn into marks and pictures ------------------------------------------------------------------

HIGHLIGHT_COLOR = "#ff7f0e"
"""The selection, everywhere: tile outlines, the selected bar, the picked pixel (orange stands out on grey,
coolwarm, viridis and magma alike)."""
BAR_COLOR = "#4c72b0"
"""Bars of a chart that are not selected."""
TRAIN_COLOR = "#1f77b4"
"""Training curves: blue, a line."""
VALIDATION_COLOR = "#e66100"
"""Validation values: orange, points (apart from training in colour AND in shape)."""
SELECTED_STEP_COLOR = VALIDATION_COLOR
"""The rule at the training step shown, and the selected filter's bar in the monitor."""
RULE_COLOR = "#9e9e9e"
"""Dotted rules (epoch ends): a neutral grey on both themes."""
PAD_RGB = (150, 150, 150)
"""Taps that fall in the zero padding: grey, so they do not pass for a real 0 (white in coolwarm)."""
VIRIDIS_CSS = "#440154, #3b528b, #21918c, #5ec962, #fde725"
"""bqplot's "viridis" colour scheme as CSS gradient stops (a colour scale said in words under a heat map)."""

# -- text -----------------------------------------------------------------------------------------------------

TEXT_COLORS = {
    "note": "var(--jp-ui-font-color2, #555)",
    "error": "var(--jp-error-color1, #c62828)",
}
"""The colour of a view's message of each kind ("note": muted, "error"); "text" is the notebook's own."""
LINK_COLOR = "var(--jp-content-link-color, #1976d2)"
"""Links the views offer (the exported PNG)."""


def colored(text: str, kind: str = "note") -> str:
    """`text` as HTML in the theme's colour for `kind`: "note" (muted), "error", or "text" (plain text)."""
    if kind == "text":
        return html.escape(text, quote=False)
    return f'<span style="color: {TEXT_COLORS[kind]}">{html.escape(text)}</span>'


# -- stylesheets ---------------------------------------------------------------------------------------------

_BQPLOT_CSS = """
/* bqplot's own dark-theme colours paint captions orange: take the notebook's text colours instead */
.bqplot[class*="cnnviz-"] { --bq-axislabel-fill: var(--jp-ui-font-color1, #212121) !important;
                            --bq-axis-tick-text-fill: var(--jp-ui-font-color2, #616161) !important;
                            --bq-axis-path-stroke: var(--jp-ui-font-color2, #616161) !important;
                            --bq-axis-tick-stroke: var(--jp-ui-font-color2, #616161) !important; }
"""

THEME_CSS = """
.cnnviz-explorer, .cnnviz-explorer .widget-label, .cnnviz-explorer .widget-readout,
.cnnviz-mosaic-title, .cnnviz-view-message, .cnnviz-header { color: var(--jp-ui-font-color1, #212121); }
.cnnviz-status { color: var(--jp-ui-font-color2, #616161); }
.cnnviz-tabs .lm-TabBar-content { flex-wrap: wrap; }
.cnnviz-tabs .lm-TabBar-tab { flex: 0 0 auto !important; min-width: max-content !important;
                              max-width: none !important; }
.cnnviz-tabs > .lm-TabBar, .cnnviz-tabs > .p-TabBar { height: auto !important; overflow: visible !important; }
.cnnviz-index-controls, .cnnviz-display-controls, .cnnviz-view-controls { flex-wrap: wrap; column-gap: 16px;
                                                                          row-gap: 4px; }
.cnnviz-explorer .widget-readout { overflow: visible; min-width: max-content; }
.cnnviz-index-controls > .widget-slider { flex: 1 1 280px; width: auto; min-width: 240px; max-width: 560px; }
.cnnviz-display-controls > .widget-dropdown { flex: 1 1 200px; width: auto; min-width: 180px; max-width: 320px; }
.cnnviz-explorer .jupyter-button, .cnnviz-explorer .widget-upload { width: auto; min-width: max-content;
                                                                    padding: 0 10px; }
.cnnviz-mosaic-title .widget-html-content { white-space: normal; line-height: 1.35; }
.cnnviz-lines { min-height: 26px; justify-content: space-between; column-gap: 16px; }
.cnnviz-status { margin-left: auto; }
.cnnviz-busy .cnnviz-mosaic-figure, .cnnviz-busy img { opacity: 0.45; transition: opacity 0.1s; }
.cnnviz-busy { cursor: progress; }
.cnnviz-tabs .widget-tab-contents { min-height: 60vh; }
.cnnviz-download { color: var(--jp-content-link-color, #1976d2); }
.cnnviz-controls { padding: 0 8px; box-sizing: border-box; }
.cnnviz-index-controls > .widget-slider { padding-right: 8px; }
""" + _BQPLOT_CSS + """
.cnnviz-compare-sides, .cnnviz-grid-body, .cnnviz-pixel-top { column-gap: 24px; }
/* pictures side by side start level: each title keeps room for two lines */
.cnnviz-compare-sides .cnnviz-mosaic-title, .cnnviz-pixel-top .cnnviz-mosaic-title { min-height: 2.8em; }
.cnnviz-pixel-top, .cnnviz-compare-sides { flex-wrap: wrap; row-gap: 12px; }
.cnnviz-pixel-top > .widget-vbox { max-width: calc(50% - 12px); }  /* wrapped alone, a figure stays half wide */
/* BusyFrame: the picture stays, dimmed, with a note floating over its top while its update computes */
.cnnviz-busy-frame { position: relative; }
.cnnviz-busy-note { position: absolute !important; top: 64px; left: 50%; transform: translateX(-50%); z-index: 3;
                    width: auto !important; max-width: 90%; padding: 6px 16px; border-radius: 4px;
                    background: var(--jp-layout-color1, #fff); color: var(--jp-ui-font-color1, #212121);
                    border: 1px solid var(--jp-border-color1, #bdbdbd); box-shadow: 0 1px 6px rgba(0, 0, 0, 0.35);
                    font-weight: bold; pointer-events: none; }
.cnnviz-busy-note .widget-html-content::before { content: ""; display: inline-block; width: 10px; height: 10px;
    margin-right: 8px; border: 2px solid currentColor; border-right-color: transparent; border-radius: 50%;
    animation: cnnviz-spin 0.8s linear infinite; vertical-align: -1px; }
@keyframes cnnviz-spin { to { transform: rotate(360deg); } }
"""
"""Every view's look (the Explorer carries it in `stylesheet()`; each `MosaicFigure` carries it too)."""

CAPTIONS_CSS = """
.cnnviz-mosaic-captions { box-sizing: border-box; padding: 0 2px; width: 100%; }
.cnnviz-mosaic-captions .widget-html-content { display: block; }
.cnnviz-caption-grid { display: grid; column-gap: 4px; align-items: start; font-size: 12px; line-height: 1.3;
                       color: var(--jp-ui-font-color1, #212121); }
.cnnviz-caption-grid > div { text-align: center; min-width: 0; overflow-wrap: anywhere; }
"""
"""Captions under a one-row mosaic: one grid column per tile, the figure's own width and margins, so each caption
sits under its tile at any width."""

MONITOR_CSS = """
.cnnviz-training-monitor .widget-html-content, .cnnviz-training-monitor .widget-label,
.cnnviz-training-monitor .widget-readout { color: var(--jp-ui-font-color1, #212121); }
.cnnviz-training-row { flex-wrap: wrap; column-gap: 16px; row-gap: 8px; align-items: flex-start; width: 100%; }
.cnnviz-training-row > .cnnviz-training-column { flex: 1 1 300px; min-width: 280px; max-width: 640px; }
.cnnviz-training-row > .cnnviz-training-chart { flex: 1 1 320px; min-width: 300px; max-width: 720px; }
/* a flex item's least width is its content's by default: a figure drawn wide would then never let its column
   shrink when the window narrows */
.cnnviz-training-column > *, .cnnviz-training-chart > *, .cnnviz-training-column .widget-box { min-width: 0; }
.cnnviz-training-controls { flex-wrap: wrap; column-gap: 16px; row-gap: 4px; align-items: center; }
.cnnviz-training-controls .jupyter-button { width: auto; min-width: max-content; padding: 0 12px; }
.cnnviz-training-monitor .widget-readout { overflow: visible; min-width: max-content; }
.cnnviz-chart-caption .widget-html-content, .cnnviz-training-monitor .cnnviz-mosaic-title .widget-html-content {
    white-space: normal; line-height: 1.35; }
.cnnviz-chart-caption { color: var(--jp-ui-font-color2, #616161); }
.cnnviz-legend-swatch { display: inline-block; width: 18px; height: 0; vertical-align: middle; margin: 0 4px 0 10px; }
.cnnviz-legend-dot { display: inline-block; width: 8px; height: 8px; border-radius: 50%; vertical-align: middle;
                     margin: 0 4px 0 10px; }
""" + _BQPLOT_CSS
"""The training monitor's look (its views' rows and captions)."""

SUMMARY_CSS = """
.cnnviz-layer-summary .cnnviz-summary-row, .cnnviz-layer-summary .cnnviz-summary-head {
  font-family: var(--jp-code-font-family, monospace); font-size: 12px; white-space: pre;
  text-align: left; justify-content: flex-start; padding: 0 6px; margin: 0; line-height: 22px;
}
.cnnviz-layer-summary .cnnviz-summary-row:disabled { opacity: 0.7; cursor: help; }
/* the current row in the theme's own colours (the "info" style is white on bright cyan in the dark theme) */
.cnnviz-layer-summary .cnnviz-summary-row.mod-info {
  background: var(--jp-layout-color3, #e0e0e0); color: var(--jp-ui-font-color0, #000); font-weight: bold;
  box-shadow: inset 4px 0 var(--jp-brand-color1, #1976d2);
}
"""
"""The layer table: monospaced rows so the space-padded columns line up; the current row (button style "info")."""

LOOKSFOR_CSS = """
.cnnviz-looksfor-crops { max-width: 72vh; }
.cnnviz-looksfor-crops img, .cnnviz-looksfor-side img { width: 100%; height: auto; object-fit: contain; }
.cnnviz-looksfor-crops img { aspect-ratio: 1; image-rendering: pixelated; }
.cnnviz-looksfor-weights { image-rendering: pixelated; }
.cnnviz-looksfor-side { max-width: 360px; }
.cnnviz-looksfor-body { column-gap: 24px; }
.cnnviz-looksfor-placeholder { border: 1px dashed var(--jp-border-color1, #bdbdbd); border-radius: 4px;
  padding: 16px; min-height: 160px; box-sizing: border-box; color: var(--jp-ui-font-color2, #616161); }
.cnnviz-looksfor-note .widget-html-content, .cnnviz-looksfor-side .widget-html-content {
  white-space: normal; line-height: 1.35; }
"""
"""`WhatItLooksFor`: pictures that follow the tab's width up to about the window's height, crisp when enlarged."""


def stylesheet(css: str = THEME_CSS, css_class: str = "cnnviz-stylesheet") -> ipywidgets.HTML:
    """A hidden widget carrying `css` (a <style> applies wherever it sits in the page)."""
    style = ipywidgets.HTML(f"<style>{css}</style>", layout=ipywidgets.Layout(display="none"))
    style.add_class(css_class)
    return style
