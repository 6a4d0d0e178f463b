"""A snapshot's features as stored: float64 values in the usual order, read on demand.

The embedded store computes a micro-batch's features as a matrix and stores
each snapshot's as float64 bytes; a label brings those bytes back. Building
a dict of 28 features for each purchase and each label, for the models to
take the values out again in their own order, cost 2-3 µs each time.
:class:`PackedFeatures` keeps the bytes instead: a model takes a batch of
them as one matrix (:func:`packed_matrix`), and anything else reads them as
the mapping they are (the dict is built on first use). With the events
decoded once, this took a 10-day replay from about 69 to 51 µs per purchase
and its label (bench/replay_speed.py, alternating runs in one session).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from functools import lru_cache
from typing import Iterator, Sequence

import numpy as np

from features.columnar import REFERENCE_ORDER

VALUES = struct.Struct(f"<{len(REFERENCE_ORDER)}d")  # the features, in REFERENCE_ORDER


class PackedFeatures(Mapping):
    """The features of :data:`~features.columnar.REFERENCE_ORDER`, from their float64 bytes.

    >>> values = [float(i) for i in range(len(REFERENCE_ORDER))]
    >>> x = PackedFeatures(VALUES.pack(*values))
    >>> x == dict(zip(REFERENCE_ORDER, values)), x[REFERENCE_ORDER[2]], len(x)
    (True, 2.0, 28)
    """

    __slots__ = ("raw", "_dict")

    def __init__(self, raw: bytes):
        if len(raw) != VALUES.size:
            raise ValueError(f"{len(raw)} bytes of features, not {VALUES.size}")
        self.raw = raw
        self._dict: dict[str, float] | None = None

    def as_dict(self) -> dict[str, float]:
        d = self._dict
        if d is None:
            d = self._dict = dict(zip(REFERENCE_ORDER, VALUES.unpack(self.raw)))
        return d

    def __getitem__(self, name: str) -> float:
        return self.as_dict()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(REFERENCE_ORDER)

    def __len__(self) -> int:
        return len(REFERENCE_ORDER)

    def __contains__(self, name) -> bool:
        return name in self.as_dict()

    def keys(self):
        return self.as_dict().keys()

    def items(self):
        return self.as_dict().items()

    def values(self):
        return self.as_dict().values()

    def get(self, name: str, default=None):
        return self.as_dict().get(name, default)

    def __repr__(self) -> str:
        return f"PackedFeatures({self.as_dict()!r})"


@lru_cache(maxsize=16)
def _positions(names: tuple[str, ...]) -> np.ndarray | None:
    if sorted(names) != sorted(REFERENCE_ORDER):
        return None
    return np.array([REFERENCE_ORDER.index(n) for n in names], np.intp)


def packed_matrix(xs: Sequence[Mapping], names: Sequence[str]) -> np.ndarray | None:
    """The features of ``xs`` as rows, in the order of ``names``: when every one is
    :class:`PackedFeatures` and ``names`` are the usual features; None otherwise.

    >>> values = [float(i) for i in range(len(REFERENCE_ORDER))]
    >>> xs = [PackedFeatures(VALUES.pack(*values))] * 2
    >>> names = REFERENCE_ORDER[::-1]
    >>> packed_matrix(xs, names).tolist() == [[x[n] for n in names] for x in xs]
    True
    >>> packed_matrix(xs + [dict(xs[0])], names) is None
    True
    """
    if not xs or any(type(x) is not PackedFeatures for x in xs):
        return None
    positions = _positions(tuple(names))
    if positions is None:
        return None
    rows = np.frombuffer(b"".join([x.raw for x in xs]), "<f8").reshape(len(xs), -1)
    return rows[:, positions]
