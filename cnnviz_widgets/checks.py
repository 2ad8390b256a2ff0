"""Argument checks shared by the whole package, each raising the library's own error with a clear sentence.

Python counts `True` as the integer 1, and numpy has its own integer types: `is_int` says what the package
means by an integer argument (a Python or numpy integer, never a bool), and `check_int` checks one against its
bounds and returns it as a plain int. The message names the bad value and what is accepted; a caller with its
own wording passes it as `message`.
"""

from __future__ import annotations

import numpy as np

from cnnviz_widgets.errors import CnnvizError, LayerError


def is_int(value: object) -> bool:
    """True for a Python or numpy integer; False for a bool and for everything else."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_int(value: object, name: str, minimum: int | None = None, maximum: int | None = None, *,
              message: str | None = None, error: type[CnnvizError] = CnnvizError) -> int:
    """`value` as an int, if it is an integer (`is_int`) in `minimum`..`maximum` (either bound may be None).

    Otherwise `error` with `message`, or by default "<name> must be an integer >= <minimum>; got <value>"
    (or "... in <minimum>..<maximum>" with both bounds).
    """
    if (not is_int(value) or (minimum is not None and value < minimum)  # type: ignore[operator]
            or (maximum is not None and value > maximum)):  # type: ignore[operator]
        if message is None:
            if minimum is not None and maximum is not None:
                accepted = f"in {minimum}..{maximum}"
            elif maximum is not None:
                accepted = f"<= {maximum}"
            elif minimum is not None:
                accepted = f">= {minimum}"
            else:
                accepted = ""
            message = f"{name} must be an integer{' ' + accepted if accepted else ''}; got {value!r}"
        raise error(message)
    return int(value)  # type: ignore[call-overload]


def check_filter(filter: object, layer: str, n_filters: int, error: type[CnnvizError] = LayerError) -> int:
    """`filter` as an int if it indexes one of the `n_filters` output channels of `layer`; else `error` saying so."""
    return check_int(filter, "filter", 0, n_filters - 1, error=error,
                     message=f"{layer} has {n_filters} filters (0..{n_filters - 1}); got filter {filter!r}")


def check_positive(value: object, name: str) -> int:
    """`value` as an int if it is an integer >= 1 (a count: steps, examples, a batch size); else CnnvizError."""
    return check_int(value, name, 1, message=f"{name} must be a positive int; got {value!r}")
