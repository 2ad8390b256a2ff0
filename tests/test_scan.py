"""Dataset examples (cnnviz_widgets.scan) on a hand-built model whose filters are known detectors."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

import cnnviz_widgets as cw
from cnnviz_widgets import ModelState
from cnnviz_widgets.errors import CnnvizError, LayerError

SIDE = 24
CHECKER = np.array([[1, -1, 1], [-1, 1, -1], [1, -1, 1]], np.float32)


def detector_model(k):
    """conv1: f0 red detector (R − G − B at the centre tap), f1 a 3×3 checker detector, f2 dead (always 0);
    pool 2×2; conv2: f0 / f1 pass conv1's f0 / f1 through at the centre tap."""
    inputs = k.Input((SIDE, SIDE, 3), name="pixels")
    x = k.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = k.layers.MaxPooling2D(name="pool1")(x)
    x = k.layers.Conv2D(2, 3, padding="same", activation="relu", name="conv2")(x)
    model = k.Model(inputs, x, name="detectors")
    kernel = np.zeros((3, 3, 3, 3), np.float32)
    kernel[1, 1, :, 0] = [1, -1, -1]
    kernel[:, :, :, 1] = CHECKER[:, :, None]
    bias = np.array([0, -330, -1], np.float32)  # the checker's flat response (sum 1 × 3 channels × ~105) is cut
    model.get_layer("conv1").set_weights([kernel, bias])
    kernel2 = np.zeros((3, 3, 3, 2), np.float32)
    kernel2[1, 1, 0, 0] = kernel2[1, 1, 1, 1] = 1
    model.get_layer("conv2").set_weights([kernel2, np.zeros(2, np.float32)])
    return model


def collection():
    """12 grey noisy pictures; red dots of 255 (image 3 at (10, 12)), 200 (7 at (5, 20)) and 150 (9 at the
    border, (23, 0)); a ±50 checker centred at (8, 8) in image 5."""
    rng = np.random.default_rng(0)
    pictures = [rng.integers(100, 104, (SIDE, SIDE, 3)).astype(np.uint8) for _ in range(12)]
    for index, (y, x), red in ((3, (10, 12), 255), (7, (5, 20), 200), (9, (23, 0), 150)):
        pictures[index][y, x] = (red, 0, 0)
    pictures[5][7:10, 7:10] = (100 + 50 * CHECKER)[:, :, None].astype(np.uint8)
    return pictures


@pytest.fixture(scope="module")
def state(k):
    return ModelState(detector_model(k), image=collection()[0], preprocess=None)


@pytest.fixture(scope="module")
def pictures():
    return collection()


@pytest.fixture(scope="module")
def single(state, pictures):
    return cw.top_examples(state, pictures, k=4, batch_size=5, cache=False, progress=False)


def test_planted_patterns_are_found_at_their_images_and_positions(single):
    assert single.layers == ["conv1", "conv2"]
    assert single.sources("conv1", 0)[:3] == [(3, 10, 12), (7, 5, 20), (9, 23, 0)]
    assert single.scores("conv1", 0)[:3] == [255.0, 200.0, 150.0]
    assert single.sources("conv1", 1)[0] == (5, 8, 8)
    assert single.scores("conv1", 1)[0] == pytest.approx((5 * 150 - 4 * 50) * 3 - 330)  # every tap on its cell
    # conv2 sees through the 2×2 pooling: field 8 px, jump 2, offset -3; its centre is the dot's pooled cell.
    assert single.sources("conv2", 0)[:3] == [(3, 10, 12), (7, 4, 20), (9, 22, 0)]
    assert single.sources("conv2", 1)[0][0] == 5


def test_crops_are_the_receptive_fields_clipped_at_the_border(single, pictures):
    crops = single.crops("conv1", 0)
    np.testing.assert_array_equal(crops[0], pictures[3][9:12, 11:14])
    np.testing.assert_array_equal(crops[2], pictures[9][22:24, 0:2])  # clipped: the dot is in the corner
    assert single.boxes("conv2", 0)[0] == (7, 9, 15, 17)  # rows -3 + 2·5 .. +8, cols -3 + 2·6 .. +8
    np.testing.assert_array_equal(single.crops("conv2", 0)[0], pictures[3][7:15, 9:17])
    assert all(c.dtype == np.uint8 and c.shape[2] == 3 for c in single.crops("conv1", 1))


def test_scores_equal_the_maps_computed_by_keras(single, state, pictures, k):
    model = k.Model(state.model.inputs, [state.model.get_layer("conv1").output, state.model.output])
    maps = model.predict(np.stack(pictures).astype(np.float32), verbose=0)
    for name, out in zip(["conv1", "conv2"], maps, strict=True):
        best = out.reshape(len(pictures), -1, out.shape[-1]).max(axis=1)  # (images, filters)
        for f in range(out.shape[-1]):
            order = sorted(range(len(pictures)), key=lambda i: (-best[i, f], i))[:4]
            assert [s[0] for s in single.sources(name, f)] == order
            np.testing.assert_allclose(single.scores(name, f), best[order, f], rtol=1e-6)


def test_a_dead_filter_ties_at_zero_and_is_ordered_by_id(single):
    assert single.scores("conv1", 2) == [0.0] * 4
    assert [s[0] for s in single.sources("conv1", 2)] == [0, 1, 2, 3]


def test_merged_shards_equal_the_single_scan(state, pictures, single):
    kw = dict(k=4, batch_size=3, cache=False, progress=False)
    a = cw.top_examples(state, pictures[:5], ids=range(0, 5), **kw)
    b = cw.top_examples(state, pictures[5:9], ids=range(5, 9), **kw)
    c = cw.top_examples(state, pictures[9:], ids=range(9, 12), **kw)
    assert a.merge(b).merge(c) == single
    assert a.merge(b.merge(c)) == single
    assert c.merge(a).merge(b) == single  # order of shards does not matter
    np.testing.assert_array_equal(c.merge(a).merge(b).crops("conv2", 0)[0], single.crops("conv2", 0)[0])
    with pytest.raises(CnnvizError, match="different images"):
        a.merge(a)


def test_cache_resume_and_cancel(state, pictures, single, tmp_path):
    stop = threading.Event()
    calls = []

    def progress(done, total):
        calls.append((done, total))
        stop.set()  # cancel after the first batch

    kw = dict(k=4, batch_size=4, cache=tmp_path)
    first = cw.top_examples(state, pictures, progress=progress, cancel=stop, **kw)
    assert (first.complete, first.n_done, first.scanned) == (False, 4, 4)
    assert calls == [(4, 12)]
    assert list((tmp_path / "scans").glob("*.partial.npz"))
    resumed = cw.top_examples(state, pictures, progress=False, **kw)
    assert (resumed.complete, resumed.scanned) == (True, 8)  # only the 8 images left ran
    assert resumed == single
    again = cw.top_examples(state, pictures, progress=False, **kw)
    assert (again.from_cache, again.scanned) == (True, 0) and again == single
    np.testing.assert_array_equal(again.crops("conv1", 0)[2], single.crops("conv1", 0)[2])
    assert not list((tmp_path / "scans").glob("*.partial.npz"))
    changed = [p.copy() for p in pictures]
    changed[0][0, 0] = (255, 0, 0)  # new content: a new key
    assert cw.top_examples(state, changed, progress=False, **kw).scanned == 12


def test_an_interrupted_scan_resumes(state, pictures, single, tmp_path):
    def interrupt(done, total):
        raise KeyboardInterrupt  # Ctrl-C in a notebook, after the first batch

    kw = dict(k=4, batch_size=4, cache=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        cw.top_examples(state, pictures, progress=interrupt, **kw)
    resumed = cw.top_examples(state, pictures, progress=False, **kw)
    assert (resumed.complete, resumed.scanned) == (True, 8) and resumed == single


def test_new_weights_give_a_new_cache_key(k, pictures, tmp_path):
    model = detector_model(k)
    state = ModelState(model, image=pictures[0], preprocess=None)
    kw = dict(k=2, layers=["conv1"], cache=tmp_path, progress=False)
    assert cw.top_examples(state, pictures, **kw).scanned == 12
    assert cw.top_examples(state, pictures, **kw).scanned == 0
    kernel, bias = model.get_layer("conv1").get_weights()
    model.get_layer("conv1").set_weights([kernel, bias + 1])
    assert cw.top_examples(state, pictures, **kw).scanned == 12


def test_folder_and_tf_data_sources(state, pictures, single, tmp_path, k):
    for i, picture in enumerate(pictures):
        Image.fromarray(picture).save(tmp_path / f"img{i:02d}.png")
    folder = cw.top_examples(state, str(tmp_path), k=4, cache=False, progress=False)
    assert folder.sources("conv1", 0)[0] == (str(tmp_path / "img03.png"), 10, 12)
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices(np.stack(pictures)).batch(1).unbatch()
    assert cw.top_examples(state, dataset, k=4, cache=False, progress=False) == single


def test_errors_name_the_bad_value(state, pictures):
    with pytest.raises(CnnvizError, match="k must be a positive int; got 0"):
        cw.top_examples(state, pictures, k=0, cache=False)
    with pytest.raises(LayerError, match="pool9"):
        cw.top_examples(state, pictures, layers=["pool9"], cache=False)
    with pytest.raises(CnnvizError, match="one identifier per image: 12 images, 2 ids"):
        cw.top_examples(state, pictures, ids=["a", "b"], cache=False)
    with pytest.raises(CnnvizError, match="not a folder"):
        cw.top_examples(state, "/no/such/folder", cache=False)
    top = cw.top_examples(state, pictures[:2], k=3, layers="conv1", cache=False, progress=False)
    assert len(top.sources("conv1", 0)) == 2  # fewer images than k: what there is
    with pytest.raises(LayerError, match=r"conv1 has 3 filters \(0..2\); got filter 3"):
        top.scores("conv1", 3)


def test_sample_collection_tiles_and_mirrors_the_bundled_photos():
    pictures, ids = cw.sample_collection(64, skimage=False)
    assert len(pictures) == len(ids) == len(set(ids)) and len(pictures) >= 2 * len(cw.sample_names())
    assert all(p.shape == (64, 64, 3) and p.dtype == np.uint8 for p in pictures)
    assert ids[0] == "astronaut[0:64, 0:64]" and ids[1] == "astronaut[0:64, 0:64] flipped"
    np.testing.assert_array_equal(pictures[1], pictures[0][:, ::-1])
    assert len(cw.sample_collection(64, skimage=False, limit=7)[0]) == 7
    with pytest.raises(CnnvizError, match="side must be an int of at least 8 pixels; got 4"):
        cw.sample_collection(4)


def test_the_core_takes_any_model_feed_not_only_a_model_state(state, pictures, single):
    """scan.top_examples reads only the public protocol `feed.ModelFeed`: a plain object that delegates to a
    state's public names (and is no ModelState) gives the same scan."""

    class Feed:
        def __init__(self, inner):
            self.model, self.graph, self.extractor, self.max_side = (inner.model, inner.graph, inner.extractor,
                                                                    inner.max_side)
            self.layers, self.input_layer, self.preprocessing = inner.layers, inner.input_layer, inner.preprocessing
            self.prepare, self.layer_kind, self.n_filters = inner.prepare, inner.layer_kind, inner.n_filters
            self.previous_layer, self.weights = inner.previous_layer, inner.weights

    feed = Feed(state)
    assert not isinstance(feed, ModelState)
    top = cw.top_examples(feed, pictures, k=4, batch_size=5, cache=False, progress=False)
    for layer in ("conv1", "conv2"):
        for f in range(2):
            assert top.sources(layer, f) == single.sources(layer, f)
            np.testing.assert_array_equal(top.scores(layer, f), single.scores(layer, f))
