"""Training, recorded for teaching: weight snapshots under a byte budget, and each batch's own values.

`snapshots` keeps the watched layers' weights at chosen steps and measures how filters change; `history` keeps
Keras' logs and the per-batch metric values (not Keras' running means), and smooths them for display.
"""

from cnnviz_widgets.lazy import lazy_names

_EXPORTS = {"TrainingHistory": "history", "metric_counts": "history", "smooth": "history",
            "SnapshotStore": "snapshots", "upstream_variables": "snapshots", "thin_steps": "snapshots",
            "spread_steps": "snapshots", "describe_steps": "snapshots", "filter_change": "snapshots",
            "rank_by_change": "snapshots", "DEFAULT_BUDGET_BYTES": "snapshots"}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_names(__name__, _EXPORTS)
