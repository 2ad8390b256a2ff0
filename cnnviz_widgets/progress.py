"""Progress and cancellation for long computations (scans, optimisations, attribution batches).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def cancelled(cancel: Any) -> bool:
    """Whether `cancel` (None, a `threading.Event`, or a function returning a bool) asks to stop now."""
    if cancel is None:
        return False
    is_set = getattr(cancel, "is_set", None)  # a threading.Event
    return bool(is_set() if is_set is not None else cancel())


def progress_bar(progress: Any, total: int, done: int, *, unit: str = "img",
                 what: str = "scanning") -> tuple[Callable[[int], None], Callable[[], None]]:
    """(update(done), close()) for `progress`: True = a tqdm.auto bar if tqdm is installed (counting `unit`s,
    labelled `what`), a callable progress(done, total), or False for none."""
    if callable(progress):
        return (lambda n: progress(n, total)), (lambda: None)
    if progress:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            pass
        else:
            bar = tqdm(total=total, initial=done, unit=unit, desc=what, leave=False)
            return (lambda n: bar.update(n - bar.n)), bar.close
    return (lambda n: None), (lambda: None)
