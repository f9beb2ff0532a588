"""Keep secrets out of logs and messages: a logging filter and a text scrubber."""

from __future__ import annotations

import logging

MASK = "[REDACTED]"


def scrub(text: str, secrets: list[str] | tuple[str, ...]) -> str:
    """Replace every occurrence of each secret in text."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites a record's message so that no secret can reach a handler.

    Installed on handlers by the CLI as a second line of defence: library code already avoids
    putting the token into messages.
    """

    def __init__(self, secrets: list[str]):
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            cleaned = scrub(message, self.secrets)
            if cleaned != message or record.args:
                record.msg, record.args = cleaned, None
            if record.exc_text:
                record.exc_text = scrub(record.exc_text, self.secrets)
        return True
