"""checks: one integer check for the whole package, with messages that name the value and what is accepted."""

from __future__ import annotations

import numpy as np
import pytest

from cnnviz_widgets.checks import check_filter, check_int, check_positive, is_int
from cnnviz_widgets.errors import CnnvizError, LayerError


def test_an_integer_is_a_python_or_numpy_int_never_a_bool():
    assert is_int(3) and is_int(np.int64(3)) and is_int(np.uint8(0))
    assert not any(is_int(v) for v in (True, False, 3.0, "3", None, np.array([3])))


def test_check_int_returns_a_plain_int_within_its_bounds():
    assert check_int(np.int32(4), "n", 1) == 4 and type(check_int(np.int32(4), "n", 1)) is int
    assert check_int(0, "row", 0, 5) == 0 and check_int(5, "row", 0, 5) == 5


@pytest.mark.parametrize(("value", "bounds", "message"), [
    (0, (1, None), r"n must be an integer >= 1; got 0"),
    (True, (1, None), r"n must be an integer >= 1; got True"),
    (6, (0, 5), r"n must be an integer in 0\.\.5; got 6"),
    (2.0, (None, 5), r"n must be an integer <= 5; got 2\.0"),
    ("x", (None, None), r"n must be an integer; got 'x'"),
])
def test_check_int_says_what_is_accepted(value, bounds, message):
    with pytest.raises(CnnvizError, match=f"^{message}$"):
        check_int(value, "n", *bounds)


def test_a_caller_keeps_its_own_words_and_error():
    with pytest.raises(LayerError, match=r"^block1_conv1 has 64 filters \(0\.\.63\); got filter 64$"):
        check_filter(64, "block1_conv1", 64)
    with pytest.raises(CnnvizError, match=r"^k must be a positive int; got -1$"):
        check_positive(-1, "k")
    with pytest.raises(CnnvizError, match="^custom$"):
        check_int(None, "x", message="custom")
