"""FusionResult behaves as the tuple ``(mask, reliability)`` the docs promise."""

from __future__ import annotations

import numpy as np
import pytest

from fusion import FusionResult, MajorityVote, Staple, WeightedVote


def _masks() -> np.ndarray:
    m = np.zeros((3, 8, 8), bool)
    m[:, 2:6, 2:6] = True
    m[2, 0, 0] = True
    return m


@pytest.mark.parametrize("method", ["mv", "staple", "weighted"])
def test_result_indexes_like_a_pair(method: str) -> None:
    masks = _masks()
    if method == "mv":
        res = MajorityVote().fit_predict(masks)
    elif method == "staple":
        res = Staple().fit_predict(masks)
    else:
        res = WeightedVote().fit_predict(masks, weights=[1.0, 1.0, 0.5])
    assert isinstance(res, FusionResult)
    assert len(res) == 2
    assert res[0] is res.mask and res[1] is res.reliability
    assert res[-1] is res.reliability and res[-2] is res.mask
    assert res[:] == tuple(res)
    assert res[:1][0] is res.mask and len(res[:1]) == 1
    assert res[1:][0] is res.reliability
    assert res[::-1][0] is res.reliability
    mask, reliability = res
    assert mask is res.mask and reliability is res.reliability
    assert res[0].shape == (8, 8) and res[1].shape == (3,)
    with pytest.raises(IndexError):
        res[2]
    with pytest.raises(IndexError):
        res[-3]


def test_probability_is_an_attribute_not_an_element() -> None:
    res = Staple().fit_predict(_masks())
    assert all(item is not res.probability for item in res)
    assert res.probability.shape == (8, 8)
