"""The shipped Dask example: a scan over shards on a `distributed` LocalCluster equals one process."""

from __future__ import annotations

import sys

import pytest

import cnnviz_widgets as cw
from cnnviz_widgets import ModelState
from cnnviz_widgets.features.scanning import scan_shards

from .test_scan import collection, detector_model

distributed = pytest.importorskip("distributed", reason="the [scale] extra (dask[distributed]) is not installed")


def make_state():
    """Built once per worker process: the model is made (or loaded) where it runs."""
    from cnnviz_widgets.network.backend import keras

    return ModelState(detector_model(keras()), image=collection()[0], preprocess=None)


def test_dask_local_cluster_equals_one_process(k):
    # Thread workers: process workers run the same code (the factory is pickled by value, see below) but each
    # imports TensorFlow first, about a minute on this 2-core machine.
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # process workers need not import tests/
    cloudpickle.register_pickle_by_value(sys.modules["tests.test_scan"])
    pictures = collection()
    single = cw.top_examples(make_state(), pictures, k=4, cache=False, progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None,
                                  silence_logs=40) as cluster, distributed.Client(cluster) as client:
        sharded = scan_shards(make_state, pictures, 3, client, k=4, batch_size=2, cache=False)
    assert sharded == single
    assert sharded.sources("conv1", 0)[:3] == [(3, 10, 12), (7, 5, 20), (9, 23, 0)]
