"""The state layer: the one source of truth that the views observe and a user drives from code.

`ModelState` holds a model, an image and what is chosen (layer, channel, filter, display options), validates
them and gives the computed arrays; `TrainingState` adds the steps of a training run. Both are traitlets objects
and implement `cnnviz_widgets.network.feed.ModelFeed`, the protocol the core computes from.
"""

from cnnviz_widgets.lazy import lazy_names

__all__ = ["ModelState", "TrainingState"]
__getattr__, __dir__ = lazy_names(__name__, {"ModelState": "model_state", "TrainingState": "training_state"})
