"""The errors of the HTTP service, each with the status code it answers with (stdlib only).

They are EdgecnnErrors like every other expected failure, so the one-line message is the same a CLI user would
read; the service sends it as ``{"error": MESSAGE}`` with :func:`status_of` the exception.
"""

from __future__ import annotations

from ..errors import EdgecnnError, InputError


class UnknownModelError(InputError):
    """The URL names no model this server holds (404)."""

    status = 404


class RequestTooLargeError(InputError):
    """The body is over --max-body-mb, or the batch over --max-batch (413)."""

    status = 413


class UnsupportedMediaTypeError(InputError):
    """The Content-Type is not one this model's task reads (415)."""

    status = 415


class ServerBusyError(EdgecnnError):
    """Every worker is busy and the waiting line is full (503): retry later."""

    status = 503


def status_of(exc: EdgecnnError) -> int:
    """The HTTP status for an expected failure: its own, else 400 (the request cannot be served as sent)."""
    return int(getattr(exc, "status", 400))
