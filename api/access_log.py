"""The access log without secrets: a `?token=` query parameter (how the dashboard is opened from a link) is
written as `token=[redacted]`. uvicorn logs each request's path with its query string on `uvicorn.access`;
a filter on that logger rewrites the record before any handler formats it."""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

ACCESS_LOGGER = "uvicorn.access"
# A query parameter: its name after `?` or `&`, and its value up to the next parameter, fragment or space.
QUERY_PARAMETER = re.compile(r"(?<=[?&])([^=&#\s]+)=([^&#\s\"]*)")


def _redacted_parameter(match: re.Match[str]) -> str:
    # Compared decoded (`tok%65n=` is `token=` to the app), whole (not `page_token`) and without case.
    name = match.group(1)
    return f"{name}=[redacted]" if unquote_plus(name).lower() == "token" else match.group(0)


def redact(text: str) -> str:
    return QUERY_PARAMETER.sub(_redacted_parameter, text) if "=" in text else text


class RedactTokens(logging.Filter):
    """Rewrites the message and its text arguments; the record is always kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) if isinstance(arg, str) else arg for arg in record.args)
        return True


def redact_tokens_in_access_log() -> None:
    """Installs the filter once, however many apps are created (the tests create many)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(existing, RedactTokens) for existing in logger.filters):
        logger.addFilter(RedactTokens())
