"""The feature store protocol, shared by every backend.

A store turns purchases into features and labels into state updates:

* :meth:`FeatureStore.process_purchases` reads the prior state of each
  purchase's user, card and seller, computes the features, applies the
  purchase and keeps a :class:`Snapshot` of the features under the transaction
  id. A purchase whose id already has a snapshot is a redelivery: it changes
  nothing and gets its stored snapshot back, marked ``duplicate``.
* :meth:`FeatureStore.process_labels` finds the snapshot of the labelled
  transaction and applies the outcome to its entities, once.
* :meth:`FeatureStore.commit` makes everything processed so far durable. The
  stream commits its Kafka offsets only after this returns, which is what
  turns at-least-once delivery into effectively-once state.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Sequence

import orjson

from features.definitions import FeatureConfig, compute_features
from features.schemas import Label, Purchase
from features.state import DAY, CardState, EntityState, SellerState, UserState, apply_purchase


class StoreUnavailable(RuntimeError):
    """The store cannot be reached or written now; retry later."""


@dataclass(frozen=True)
class StoreConfig:
    """Settings common to every backend.

    ``entity_ttl`` (seconds): an entity idle for longer is forgotten.
    ``label_horizon`` (seconds): how long a snapshot waits for its label.
    ``fsync``: flush commits to the disk itself (survives a machine crash, not
    only a process crash); embedded store only.
    """

    entity_ttl: float = 90 * DAY
    label_horizon: float = 45 * DAY
    fsync: bool = False
    features: FeatureConfig = field(default_factory=FeatureConfig)


@dataclass(slots=True)
class Snapshot:
    """The features a transaction was scored with, kept until its label comes."""

    transaction_id: str
    event_ts: float
    user_id: str
    card_hash: str
    seller_id: str
    features: dict[str, float]
    scores: dict[str, float] = field(default_factory=dict)
    label: bool | None = None
    duplicate: bool = False  # set on a redelivered purchase or label, never stored

    def to_bytes(self) -> bytes:
        return orjson.dumps([self.transaction_id, self.event_ts, self.user_id, self.card_hash,
                             self.seller_id, self.features, self.scores, self.label])

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Snapshot":
        return cls(*orjson.loads(raw))


@dataclass(slots=True)
class LabelResult:
    """What a label did: ``applied``, ``duplicate`` or ``unknown`` (no snapshot)."""

    label: Label
    status: str
    snapshot: Snapshot | None = None


def featurize_and_apply(p: Purchase, user: UserState, card: CardState, seller: SellerState,
                        config: StoreConfig) -> Snapshot:
    """Features from the prior state, then the purchase applied to that state."""
    features = compute_features(p, user, card, seller, config.features)
    apply_purchase(p, user, card, seller, config.features.keep_hours,
                   config.features.seller_keep_hours)
    return Snapshot(p.transaction_id, p.event_ts, p.user_id, p.card_hash, p.seller_id, features)


class FeatureStore(abc.ABC):
    """Entity state and feature snapshots, with the semantics every backend shares."""

    config: StoreConfig

    @abc.abstractmethod
    def process_purchases(self, purchases: Sequence[Purchase]) -> list[Snapshot]:
        """Features of each purchase (in order), applying each new one once."""

    @abc.abstractmethod
    def process_labels(self, labels: Sequence[Label]) -> list[LabelResult]:
        """Apply each label to the entities of its transaction, once."""

    @abc.abstractmethod
    def commit(self) -> None:
        """Make everything processed so far durable."""

    @abc.abstractmethod
    def entity(self, kind: str, entity_id: str) -> EntityState | None:
        """The current state of one entity (``user``, ``card``, ``seller``)."""

    @abc.abstractmethod
    def snapshot(self, transaction_id: str) -> Snapshot | None:
        """The stored snapshot of one transaction."""

    def close(self) -> None:
        """Commit and release the store."""
        self.commit()

    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
