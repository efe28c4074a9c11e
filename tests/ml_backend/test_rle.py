"""Brush RLE: byte-identical to Label Studio SDK's encoder on real masks, decodes what the
SDK encodes (and streams the SDK's encoder never writes), round trips, malformed input, and
``import ml_backend.rle`` without the SDK converter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from ml_backend.rle import mask_to_rle, rle_to_mask
from tests.helpers import REPO, sammed2d_masks


def _real_masks(root: Path) -> list[tuple[str, np.ndarray]]:
    """Real masks of every kind in the shared data: organs, thin vessels, membranes, cells
    and a large lung mask (many runs, runs over 65,536 values)."""
    out = [(m.mask_path.name, m.load()[1]) for m in sammed2d_masks(root)[:10]]
    for i in (1, 2):
        path = root / "drive" / "test" / "manual1" / f"{i:02d}_manual1.gif"
        out.append((path.name, np.array(Image.open(path)) > 0))
    isbi = root / "isbi2012_em" / "train" / "label" / "0.png"
    out.append((isbi.name, np.array(Image.open(isbi)) == 0))
    cells = sorted((root / "bubil_cells" / "ExpertsAnnotations" / "Person1_Amira").glob("*.png"))
    out.append((cells[0].name, np.array(Image.open(cells[0]).convert("L")) < 128))
    lungs = sorted((root / "shenzhen_cxr" / "masks").iterdir())
    out.append((lungs[0].name, np.array(Image.open(lungs[0]).convert("L")) > 127))
    return out


def _longest_run(mask: np.ndarray) -> int:
    flat = mask.reshape(-1)
    bounds = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1, [flat.size]])
    return int(np.diff(bounds).max())


def test_encoder_is_byte_identical_to_the_sdk_on_real_masks(shared_data: Path) -> None:
    brush = pytest.importorskip("label_studio_sdk.converter.brush")
    masks = _real_masks(shared_data)
    # some run needs more than one 16-bit token (> 65,536 RGBA values = 16,384 pixels)
    assert max(_longest_run(m) for _, m in masks) > 2**14
    for name, mask in masks:
        assert mask.any() and not mask.all(), name
        ours = mask_to_rle(mask)
        sdk = [int(v) for v in brush.mask2rle(np.where(mask, 255, 0).astype(np.uint8))]
        assert ours == sdk, name


def test_decoder_matches_the_sdk_decoder_on_real_masks(shared_data: Path) -> None:
    brush = pytest.importorskip("label_studio_sdk.converter.brush")
    for name, mask in _real_masks(shared_data):
        canvas = np.where(mask, 255, 0).astype(np.uint8)
        sdk_rle = brush.mask2rle(canvas)
        h, w = mask.shape
        sdk_flat = brush.decode_rle(sdk_rle).reshape(h, w, 4)[:, :, 3] > 0
        ours = rle_to_mask(sdk_rle, h, w)
        np.testing.assert_array_equal(ours, sdk_flat, err_msg=name)
        np.testing.assert_array_equal(ours, mask, err_msg=name)


def _bits(value: int, width: int) -> str:
    return format(value, f"0{width}b")


def test_literal_runs_and_other_field_sizes_decode_like_the_sdk() -> None:
    """Streams with multi-value literal runs and non-default field sizes (the SDK's encoder
    never writes them; Label Studio's frontend encoder may): same values as the SDK."""
    brush = pytest.importorskip("label_studio_sdk.converter.brush")
    # 2x2 pixels = 16 values; word size 8; field sizes (2, 5, 8, 16)
    stream = _bits(16, 32) + _bits(7, 5) + "".join(_bits(s - 1, 4) for s in (2, 5, 8, 16))
    stream += "0" + "00" + _bits(2, 2) + "".join(_bits(v, 8) for v in (255, 0, 17))  # literal 3
    stream += "1" + "01" + _bits(4, 5) + _bits(255, 8)  # repeat 5 x 255
    stream += "1" + "00" + _bits(3, 2) + _bits(0, 8)  # repeat 4 x 0
    stream += "0" + "01" + _bits(3, 5) + "".join(_bits(v, 8) for v in (1, 2, 3, 200))
    stream += "0" * (8 - len(stream) % 8)
    rle = [int(stream[i : i + 8], 2) for i in range(0, len(stream), 8)]
    sdk = brush.decode_rle(rle).reshape(2, 2, 4)[:, :, 3] > 0
    ours = rle_to_mask(rle, 2, 2)
    np.testing.assert_array_equal(ours, sdk)
    # values 255 0 17 | 255 x5 | 0 x4 | 1 2 3 200: alphas (values 3, 7, 11, 15) 255 255 0 200
    np.testing.assert_array_equal(ours, [[True, True], [False, True]])


def test_import_does_not_load_the_sdk_converter() -> None:
    code = (
        "import sys, ml_backend.rle; "
        "print(sorted(m for m in ('label_studio_sdk', 'nltk', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 37).flatmap(
        lambda h: st.integers(1, 41).flatmap(lambda w: arrays(np.bool_, (h, w)))
    )
)
def test_round_trip_random_masks(mask: np.ndarray) -> None:
    rle = mask_to_rle(mask)
    assert all(0 <= v <= 255 for v in rle)
    back = rle_to_mask(rle, *mask.shape)
    assert back.dtype == np.bool_
    np.testing.assert_array_equal(back, mask)


@pytest.mark.parametrize("n", [16383, 16384, 16385, 32768, 90000])
def test_round_trip_long_runs(n: int) -> None:
    # runs of 4n values: around one 16-bit token (65,536 values) and several
    mask = np.ones((1, n + 1), dtype=bool)
    mask[0, -1] = False
    np.testing.assert_array_equal(rle_to_mask(mask_to_rle(mask), 1, n + 1), mask)


def test_uint8_255_and_01_encode_alike() -> None:
    m = np.zeros((5, 7), dtype=np.uint8)
    m[1:3, 2:6] = 1
    assert mask_to_rle(m) == mask_to_rle(m * 255) == mask_to_rle(m.astype(bool))


def test_wrong_size_is_a_clear_error() -> None:
    rle = mask_to_rle(np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="expected 4x5"):
        rle_to_mask(rle, 4, 5)


def _stream(n_values: int, tokens: str) -> list[int]:
    """An rle-pack stream: default header (word 8, fields 3, 4, 8, 16) + token bits."""
    bits = _bits(n_values, 32) + _bits(7, 5) + "".join(_bits(f - 1, 4) for f in (3, 4, 8, 16))
    bits += tokens
    bits += "0" * (8 - len(bits) % 8)
    return [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)]


@pytest.mark.parametrize(
    "bad",
    [
        [],
        [1, 2, 3],
        [*mask_to_rle(np.ones((4, 4), bool))[:-1], 256],  # not a byte
        _stream(64, "0" + "00" + _bits(7, 3) + _bits(255, 8)),  # literal run past the stream
        _stream(64, "0" + "11" + _bits(99, 16) + _bits(0, 8) * 100),  # literal past 64 values
    ],
)
def test_malformed_rle_is_a_value_error(bad: list[int]) -> None:
    with pytest.raises(ValueError, match="malformed brush RLE"):
        rle_to_mask(bad, 4, 4)


def test_header_size_is_checked_before_decoding() -> None:
    # a header claiming 2**32 - 1 values must not allocate them
    with pytest.raises(ValueError, match="expected 4x4"):
        rle_to_mask(_stream(2**32 - 1, ""), 4, 4)


def test_truncated_stream_is_a_value_error() -> None:
    rle = mask_to_rle(np.eye(8, dtype=bool))
    with pytest.raises(ValueError, match="malformed brush RLE"):
        rle_to_mask(rle[: len(rle) // 2], 8, 8)


@pytest.mark.parametrize("bad", [np.zeros((3,), bool), np.zeros((0, 4), bool)])
def test_bad_mask_shape(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="2-D"):
        mask_to_rle(bad)
