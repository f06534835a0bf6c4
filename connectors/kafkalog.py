"""Put the real Kafka error back on a command's one error line."""

from __future__ import annotations

import logging


class LastKafkaError(logging.Handler):
    """Keeps the last ERROR aiokafka logged: its ``Unable to bootstrap`` hides the cause
    (e.g. ``SaslAuthenticationFailed``), which this puts back on the one error line."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.message: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.message = record.getMessage().splitlines()[0][:300]
