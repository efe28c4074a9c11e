"""Group voxels by their pattern of rater votes (private).

STAPLE's E-step depends on a voxel only through the votes it received (and which raters
were present), so voxels are grouped by an integer code of those bits and every EM
iteration costs O(#patterns) instead of O(#voxels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fusion._validation import BoolArray, IntArray

# Up to this many code bits a dense bincount table (2**bits entries) is used; above it
# np.unique (a sort) is used instead.
_DENSE_BITS = 22


@dataclass(frozen=True)
class VotePatterns:
    """Distinct vote patterns of ``N`` voxels rated by ``R`` raters.

    Attributes:
        votes: (P, R) bool, the vote of each rater in each pattern.
        present: (P, R) bool, whether the rater labelled the voxels of the pattern.
        counts: (P,) int64, number of voxels with the pattern.
        inverse: (N,) intp, pattern index of every voxel (C order of the spatial axes).
    """

    votes: BoolArray
    present: BoolArray
    counts: IntArray
    inverse: npt.NDArray[np.intp]


def _pack_codes(bits: BoolArray) -> npt.NDArray[np.unsignedinteger]:
    """Pack (B, N) bool bits (B <= 64) into (N,) integer codes, bit b = row b."""
    dtype: type[np.unsignedinteger] = np.uint32 if bits.shape[0] <= 32 else np.uint64
    code: npt.NDArray[np.unsignedinteger] = np.zeros(bits.shape[1], dtype=dtype)
    for b in range(bits.shape[0]):
        code |= bits[b].astype(dtype) << dtype(b)
    return code


def _unpack_codes(codes: npt.NDArray[np.integer], n_bits: int) -> BoolArray:
    """Inverse of :func:`_pack_codes`: (P,) codes -> (P, n_bits) bool."""
    shifts = np.arange(n_bits, dtype=np.uint64)
    return ((codes.astype(np.uint64)[:, None] >> shifts[None, :]) & np.uint64(1)).astype(bool)


def vote_patterns(votes: BoolArray, present: BoolArray | None = None) -> VotePatterns:
    """Group the columns of (R, N) bool ``votes`` (and optional (R, N) ``present``).

    A vote of an absent rater is ignored (treated as 0 inside the code).
    """
    n_raters, n_voxels = votes.shape
    if present is not None:
        bits = np.concatenate([votes & present, present], axis=0)
    else:
        bits = votes
    n_bits = bits.shape[0]
    if n_bits <= _DENSE_BITS:
        code = _pack_codes(bits)
        table = np.bincount(code, minlength=1 << n_bits)
        used = np.flatnonzero(table)
        lut = np.zeros(1 << n_bits, dtype=np.intp)
        lut[used] = np.arange(used.size)
        inverse = lut[code]
        counts = table[used].astype(np.int64)
        unique_bits = _unpack_codes(used, n_bits)
    elif n_bits <= 64:
        code64 = _pack_codes(bits)
        used64, inverse, counts = np.unique(code64, return_inverse=True, return_counts=True)
        unique_bits = _unpack_codes(np.asarray(used64, dtype=np.uint64), n_bits)
        counts = counts.astype(np.int64)
    else:
        rows, inverse, counts = np.unique(bits.T, axis=0, return_inverse=True, return_counts=True)
        unique_bits = rows.astype(bool)
        counts = counts.astype(np.int64)
    inverse = np.asarray(inverse, dtype=np.intp).reshape(n_voxels)
    if present is not None:
        return VotePatterns(
            votes=unique_bits[:, :n_raters],
            present=unique_bits[:, n_raters:],
            counts=counts,
            inverse=inverse,
        )
    return VotePatterns(
        votes=unique_bits,
        present=np.ones_like(unique_bits),
        counts=counts,
        inverse=inverse,
    )
