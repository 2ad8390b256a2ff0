"""Small helpers shared by the views."""

from __future__ import annotations

from typing import Any

from ..state import ModelState


def as_state(state_or_model: Any) -> ModelState:
    """The ModelState a view observes: the one given, or a new one for a model or preset name."""
    return state_or_model if isinstance(state_or_model, ModelState) else ModelState(state_or_model)


def format_number(value: float) -> str:
    """Short readable number for labels and tooltips: 0.00, 0.215, 35.1, 1234."""
    size = abs(value)
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 0.01 or size == 0:
        return f"{value:.2f}"
    return f"{value:.2g}"
