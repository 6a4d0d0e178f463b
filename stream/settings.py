"""Settings of a worker, the demo and the tools, from ``FRAUDSTREAM_*`` variables.

Every setting has a default that runs the demo on one machine; production
points ``FRAUDSTREAM_KAFKA_BOOTSTRAP`` at its brokers and
``FRAUDSTREAM_STORE_URL`` at its Aerospike cluster. Secrets are ``SecretStr``:
they never appear in a log line or a repr.

>>> s = Settings(kafka_sasl_password="hunter2", data_dir="/var/lib/fraudstream")
>>> "hunter2" in repr(s), s.topic_alerts, s.store_url
(False, 'fraud-alerts', 'embedded:///var/lib/fraudstream/store')
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from features.state import DAY
from features.store import StoreConfig


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FRAUDSTREAM_", frozen=True)

    app_id: str = "fraudstream"
    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_security_protocol: str = "PLAINTEXT"  # or SSL, SASL_PLAINTEXT, SASL_SSL
    kafka_sasl_mechanism: str | None = None  # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = None
    session_timeout_seconds: float = 10.0
    heartbeat_seconds: float = 2.0

    topic_purchases: str = "purchases"
    topic_labels: str = "fraud-labels"
    topic_alerts: str = "fraud-alerts"
    topic_purchases_dlq: str = "purchases-dlq"
    topic_labels_dlq: str = "fraud-labels-dlq"
    purchases_partitions: int = 4
    alerts_partitions: int = 4

    data_dir: str = ".fraudstream"  # local state of this worker: store, models, Faust's own
    store_url: str = ""  # default: embedded://{data_dir}/store
    model_dir: str = ""  # default: {data_dir}/models
    entity_ttl_days: float = 90.0
    label_horizon_days: float = 45.0

    model_kind: str = "logreg"
    feature_log: str = ""  # a JSON Lines file that every learned label is appended to
    static_model_dir: str = ""  # a directory written by `fraudstream train-static`
    champion: Literal["dynamic", "static", "blend"] = "dynamic"  # decides alerts
    blend_weight: float = Field(0.5, ge=0.0, le=1.0)  # weight of the dynamic score
    blend: Literal["logit", "mean"] = "logit"  # blend the scores' log-odds or the scores
    blend_floor: float = Field(0.0, ge=0.0, lt=1.0)  # the dynamic score counts as no lower
    fraud_weight: float = 1.0
    alert_threshold: float = Field(0.5, ge=0.0, le=1.0)
    warmup_frauds: int = 10  # no alerts before the model learned this many frauds
    warmup_legit: int = 100  # ... and this many legitimate outcomes
    publish_every_labels: int = 500
    publish_every_seconds: float = 30.0
    refresh_model_seconds: float = 1.0

    batch_size: int = 500
    lag_refresh_seconds: float = 5.0  # how often the consumer lag is read from the broker
    metrics_port: int = 9108
    max_event_bytes: int = 64 * 1024  # larger events are rejected (to the dead-letter topic)
    # What the topics, the consumer and the producer accept: an oversize event must still
    # reach the worker and its dead-letter topic unchanged.
    kafka_max_message_bytes: int = 16 * 1024 * 1024

    @model_validator(mode="after")
    def _local_paths(self) -> "Settings":
        if not self.store_url:
            object.__setattr__(self, "store_url", f"embedded://{self.data_dir}/store")
        if not self.model_dir:
            object.__setattr__(self, "model_dir", f"{self.data_dir}/models")
        return self

    def store_config(self) -> StoreConfig:
        return StoreConfig(entity_ttl=self.entity_ttl_days * DAY,
                           label_horizon=self.label_horizon_days * DAY)

    def topic_partitions(self) -> dict[str, int]:
        """Every topic the system uses, with its partition count.

        Labels have one partition: its owner is the single learner.
        """
        return {self.topic_purchases: self.purchases_partitions, self.topic_labels: 1,
                self.topic_alerts: self.alerts_partitions, self.topic_purchases_dlq: 1,
                self.topic_labels_dlq: 1}
