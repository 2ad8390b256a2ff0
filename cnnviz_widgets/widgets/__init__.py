"""Widgets: views and controls bound to a ModelState (ipywidgets + bqplot); no computation here."""
