"""Label Studio brush masks: bool mask <-> the RLE list Label Studio stores.

Label Studio keeps a brush region as an RLE of the flattened RGBA canvas (4 values a pixel,
row-major, the mask in every channel), packed with thi.ng's ``rle-pack`` bit format
(https://github.com/thi-ng/umbrella/tree/develop/packages/rle-pack), which Label Studio's
frontend and its SDK (``label_studio_sdk.converter.brush``) both use. The format is
implemented here directly, so ``import ml_backend.rle`` costs milliseconds instead of the
SDK converter's seconds (it imports nltk, pandas and more). ``tests/ml_backend/test_rle.py``
checks both directions against the SDK's own encoder and decoder on real masks: the bytes
are identical.

The bit stream, most significant bit first:

* header: the number of values (32 bits), word size − 1 (5 bits), then four run-length
  field sizes − 1 (4 bits each);
* then tokens until that many values are decoded: a flag bit (1 = repeat one value,
  0 = literal values), 2 bits choosing one of the four run-length field sizes, the run
  length − 1 in that many bits, then one word (repeat) or run-length words (literal);
* zero bits up to a whole byte.

The encoder writes what the SDK's ``encode_rle`` writes, byte for byte: word size 8, field
sizes (3, 4, 8, 16), a length-1 run as a literal of one value, longer runs as repeats with
the smallest field that holds them, runs over 256 values always with the 16-bit field (split
into pieces of 65,536), and 1 to 8 padding bits (a full zero byte when the stream already
ends on a byte boundary).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["mask_to_rle", "rle_to_mask"]

# The encoder's parameters (the SDK's defaults, which Label Studio reads back).
_WORD = 8
_FIELDS = (3, 4, 8, 16)
_LONGEST = 2**16  # longest run one token can hold with the 16-bit field


def _header(n_values: int) -> tuple[list[int], list[int]]:
    """(field values, field widths in bits) of the stream header."""
    values = [n_values, _WORD - 1, *(f - 1 for f in _FIELDS)]
    return values, [32, 5, 4, 4, 4, 4]


def _run_tokens(
    lengths: npt.NDArray[np.int64], values: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """One token per run (long runs split into several): (token bits as int, width in bits).

    A token is flag | field index | length − 1 | word, packed into one integer of at most
    1 + 2 + 16 + 8 = 27 bits.
    """
    # runs over 256 values use the 16-bit field; those over 65,536 are split into pieces
    # of 65,536 and a remainder (1..65,536), as the SDK's encoder does
    pieces = np.where(lengths > 256, -(-lengths // _LONGEST), 1)
    run = np.repeat(np.arange(lengths.size), pieces)
    first = np.cumsum(pieces) - pieces
    k = np.arange(run.size) - first[run]  # piece number inside its run
    last = k == pieces[run] - 1
    length = np.where(last, lengths[run] - k * _LONGEST, _LONGEST)
    value = values[run]
    long_run = lengths[run] > 256
    index = np.select([long_run, length <= 8, length <= 16], [3, 0, 1], default=2)
    size = np.asarray(_FIELDS, dtype=np.int64)[index]
    flag = (length > 1).astype(np.int64)  # a single value is a literal run of one
    token = (((flag << 2 | index) << size | (length - 1)) << _WORD) | value
    return token, 1 + 2 + size + _WORD


def _pack(fields: npt.NDArray[np.int64], widths: npt.NDArray[np.int64]) -> list[int]:
    """Concatenate the fields (each ``widths`` bits, MSB first) and pad to whole bytes, with
    1..8 zero bits (the SDK always pads, a full byte when already aligned)."""
    total = int(widths.sum())
    field = np.repeat(np.arange(fields.size), widths)
    start = np.cumsum(widths) - widths
    shift = widths[field] - 1 - (np.arange(total) - start[field])
    bits = ((fields[field] >> shift) & 1).astype(np.uint8)
    pad = 8 - total % 8
    bits = np.concatenate([bits, np.zeros(pad, np.uint8)])
    return np.packbits(bits).tolist()


def mask_to_rle(mask: npt.ArrayLike) -> list[int]:
    """Encode a mask as Label Studio brush RLE.

    Args:
        mask: (H, W) array; any non-zero value is foreground (bool, 0/1 or 0/255).

    Returns:
        The RLE byte values as a list of ints, ready for ``value["rle"]``.
    """
    arr = np.asarray(mask)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"mask must be a non-empty 2-D array, got shape {arr.shape}")
    flat = (arr != 0).reshape(-1)
    # runs of the pixel mask; the canvas repeats every pixel in its 4 RGBA values
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]]).astype(np.int64)
    lengths = 4 * np.diff(bounds)
    values = np.where(flat[bounds[:-1]], 255, 0).astype(np.int64)
    tokens, token_widths = _run_tokens(lengths, values)
    head, head_widths = _header(4 * flat.size)
    fields = np.concatenate([np.asarray(head, np.int64), tokens])
    widths = np.concatenate([np.asarray(head_widths, np.int64), token_widths])
    return _pack(fields, widths)


class _SizeMismatch(Exception):
    """The header's value count is not the canvas size the caller expects."""

    def __init__(self, n_values: int) -> None:
        super().__init__(n_values)
        self.n_values = n_values


class _Bits:
    """Read unsigned big-endian fields from a bit stream (``read`` past the end raises).

    The bits are kept as a '0'/'1' string: ``int(text, 2)`` reads a field in C.
    """

    def __init__(self, data: npt.NDArray[np.uint8]) -> None:
        self.text = (np.unpackbits(data) + ord("0")).tobytes().decode("ascii")
        self.pos = 0

    def one(self, width: int) -> int:
        end = self.pos + width
        if end > len(self.text):
            raise ValueError("the bit stream ends inside a token")
        value = int(self.text[self.pos : end], 2)
        self.pos = end
        return value

    def many(self, width: int, count: int) -> list[int]:
        """``count`` consecutive fields of ``width`` bits."""
        return [self.one(width) for _ in range(count)]


def _decode(rle: Sequence[int], expected: int) -> npt.NDArray[np.uint32]:
    """The flat value array of an rle-pack stream (any word size and field sizes) that
    must hold ``expected`` values (checked before anything is allocated)."""
    data = np.asarray(list(rle))
    if data.ndim != 1 or data.size < 7:
        raise ValueError("too short for the 53-bit header")
    if not np.issubdtype(data.dtype, np.integer) or data.min() < 0 or data.max() > 255:
        raise ValueError("values must be integers in 0..255")
    stream = _Bits(data.astype(np.uint8))
    n_values = stream.one(32)
    if n_values != expected:
        raise _SizeMismatch(n_values)
    word = stream.one(5) + 1
    sizes = [stream.one(4) + 1 for _ in range(4)]
    out = np.zeros(n_values, dtype=np.uint32)
    i = 0
    while i < n_values:
        repeat = stream.one(1)
        j = i + 1 + stream.one(sizes[stream.one(2)])
        if repeat:
            out[i:j] = stream.one(word)  # a run past the end is cut, as in rle-pack
        elif j > n_values:
            raise ValueError(f"a literal run ends at value {j} of {n_values}")
        else:
            out[i:j] = stream.many(word, j - i)
        i = j
    return out


def rle_to_mask(rle: Sequence[int], height: int, width: int) -> npt.NDArray[np.bool_]:
    """Decode Label Studio brush RLE into an (height, width) bool mask.

    Any non-zero alpha counts as foreground (Label Studio's brush writes 255).

    Raises:
        ValueError: the RLE is malformed or does not hold ``height * width`` pixels.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    expected = height * width * 4
    try:
        flat = _decode(rle, expected)
    except _SizeMismatch as exc:
        raise ValueError(
            f"brush RLE holds {exc.n_values // 4} pixels, expected {height}x{width}="
            f"{height * width}; original_width/original_height do not match the mask"
        ) from None
    except (ValueError, TypeError) as exc:
        raise ValueError(f"malformed brush RLE: {exc}") from exc
    return np.asarray(flat.reshape(height, width, 4)[:, :, 3] > 0)
