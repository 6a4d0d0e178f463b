"""Kafka connection settings for the Faust worker and the confluent-kafka tools.

Both clients get the same security settings from :class:`Settings`; the
password is read from its ``SecretStr`` only here, when a client is built.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

from stream.settings import Settings

log = logging.getLogger(__name__)


def confluent_config(settings: Settings, **extra: Any) -> dict[str, Any]:
    """librdkafka configuration for producers, consumers and the admin client.

    >>> confluent_config(Settings(kafka_bootstrap="k:9092"))["bootstrap.servers"]
    'k:9092'
    """
    conf: dict[str, Any] = {"bootstrap.servers": settings.kafka_bootstrap,
                            "security.protocol": settings.kafka_security_protocol.lower()}
    if settings.kafka_sasl_mechanism:
        conf["sasl.mechanism"] = settings.kafka_sasl_mechanism
        conf["sasl.username"] = settings.kafka_sasl_username or ""
        if settings.kafka_sasl_password is not None:
            conf["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    if settings.kafka_ssl_cafile:
        conf["ssl.ca.location"] = settings.kafka_ssl_cafile
    conf.update(extra)
    return conf


def faust_credentials(settings: Settings):
    """Faust (aiokafka) credentials, or None for a plaintext broker."""
    import faust

    protocol = settings.kafka_security_protocol.upper()
    if protocol == "PLAINTEXT":
        return None
    context = None
    if "SSL" in protocol:
        context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
    if protocol.startswith("SASL"):
        password = settings.kafka_sasl_password
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=password.get_secret_value() if password else None,
            mechanism=settings.kafka_sasl_mechanism or "PLAIN", ssl_context=context)
    return faust.SSLCredentials(context)


def ensure_topics(settings: Settings, timeout: float = 30.0) -> None:
    """Create every topic of the system with its partition count, if missing.

    Topics are never left to broker auto-creation: their partition counts
    decide how many workers can share the load and who is the single learner.
    """
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(confluent_config(settings, logger=log))
    existing = admin.list_topics(timeout=timeout).topics
    config = {"max.message.bytes": str(settings.kafka_max_message_bytes)}
    wanted = [NewTopic(name, num_partitions=n, replication_factor=-1, config=config)
              for name, n in settings.topic_partitions().items() if name not in existing]
    if not wanted:
        return
    for name, future in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            future.result(timeout)
        except Exception as exc:  # an existing topic (a race with another worker) is fine
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise RuntimeError(f"cannot create topic {name!r}: {exc}") from exc
