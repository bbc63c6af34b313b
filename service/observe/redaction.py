"""A safety net under the rule that secrets are never logged: a filter on the root logger's handlers
that masks the configured bearer tokens, and anything shaped like ``Bearer <credential>``, in every
record they write, its traceback included.

It is not the fix: the server never formats a request's raw header lines, nor quotes them to a
client (service/rest/guard.py), and tests/test_secrets_not_logged.py checks the replies too. The
filter catches what nobody has thought of yet, such as a library's message quoting a header.
"""

import logging
import re

MASK = "[redacted]"
# "Bearer" and a credential after spaces, tabs or an escaped tab ("\t" inside a quoted bytes repr). A
# credential (RFC 6750's token68) holds a digit or one of -._~+/= : "bearer tokens" in prose is kept.
BEARER = re.compile(r"(?i)\b(bearer)((?:\s|\\t|%20|%09)+)(?=[^\s'\",;\\]*[0-9._~+/=-])[^\s'\",;\\]+")


class RedactingFilter(logging.Filter):
    """Masks ``secrets`` and ``Bearer <...>`` in a record's message, traceback and stack text."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = sorted({secret for secret in secrets if secret}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        """``text`` with every secret and every bearer credential masked."""
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return BEARER.sub(rf"\1\2{MASK}", text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):  # a record whose arguments do not fit its format: keep it whole
            message = str(record.msg)
        if (redacted := self.redact(message)) != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            # Formatted here, as the handler's formatter would, so that the text can be masked.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def install(secrets: list[bytes]) -> RedactingFilter:
    """Put one ``RedactingFilter`` for ``secrets`` on every handler of the root logger and on
    logging's last-resort handler; a second call updates the secrets of the first.

    Returns:
        The filter those handlers share.
    """
    handlers = [handler for handler in (*logging.getLogger().handlers, logging.lastResort) if handler is not None]
    existing = (f for handler in handlers for f in handler.filters if isinstance(f, RedactingFilter))
    shared = next(existing, None) or RedactingFilter([])
    shared.secrets = RedactingFilter([secret.decode(errors="replace") for secret in secrets]).secrets
    for handler in handlers:
        if shared not in handler.filters:
            handler.addFilter(shared)
    return shared
