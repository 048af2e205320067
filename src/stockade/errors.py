"""Stockade's error tree.

Every error that reaches a user derives from :class:`StockadeError`. Each carries a one-line
``message`` (what went wrong) and an optional ``hint`` (what to do about it); the CLI prints both
to stderr and exits non-zero, the web layer maps ``http_status`` to the response.

The tree::

    StockadeError                      500  generic failure
    ├── ConfigError                    500  settings or STOCKADE_HOME unusable
    ├── NotFound                       404  index, project, file or token does not exist
    │   └── BlobMissing                404  a blob is not (or no longer) in the blob store
    ├── Conflict                       409  already exists (index name, uploaded filename…)
    ├── InvalidRequest                 400  malformed input from a client or the CLI
    │   ├── UploadRejected             400  an uploaded distribution failed validation
    │   └── PayloadTooLarge            413  a body or archive exceeds a configured cap
    ├── AuthError                      401  no, unknown, expired or revoked credentials
    ├── Forbidden                      403  valid token without the scope or for another index
    ├── Unavailable                    503  the database is unreachable (Retry-After: 5)
    │   └── StorageUnavailable         503  the blob store (e.g. S3) is unreachable or refuses us
    └── UpstreamError                  502  an upstream index misbehaved
        ├── UpstreamUnavailable        502  could not reach the upstream (and nothing cached)
        └── IntegrityError             502  upstream bytes do not match the published digest
"""

from __future__ import annotations


class StockadeError(Exception):
    """Root of every error Stockade reports to a user."""

    http_status: int = 500

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def diagnostics(self) -> str:
        """Render the error as one or two lines for a terminal."""
        text = f"error: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text

    def one_line(self) -> str:
        """Message and hint on one line, for HTTP reason bodies."""
        return f"{self.message} ({self.hint})" if self.hint else self.message


class Unavailable(StockadeError):
    """A service Stockade stands on (the database, object storage) cannot be reached; the
    request is refused at once (503 with Retry-After) rather than left hanging."""

    http_status = 503
    retry_after = 5  # seconds, for the Retry-After header


class ConfigError(StockadeError):
    """Settings or STOCKADE_HOME are unusable."""


class NotFound(StockadeError):
    """The named index, project, file or token does not exist."""

    http_status = 404


class BlobMissing(NotFound):
    """The blob store does not hold the requested sha256."""


class Conflict(StockadeError):
    """The thing being created already exists."""

    http_status = 409


class InvalidRequest(StockadeError):
    """Malformed input from a client or the command line."""

    http_status = 400


class UploadRejected(InvalidRequest):
    """An uploaded distribution failed validation; nothing was stored."""


class PayloadTooLarge(InvalidRequest):
    """A request body, file or archive member exceeds a configured cap."""

    http_status = 413


class AuthError(StockadeError):
    """Missing, unknown, expired or revoked credentials."""

    http_status = 401


class Forbidden(StockadeError):
    """Valid credentials that do not grant this action on this index."""

    http_status = 403


class PolicyBlocked(Forbidden):
    """An index's policy refuses a file; ``rules`` are the reasons, one line each."""

    def __init__(self, message: str, hint: str | None, rules: list[str], requestable: bool) -> None:
        super().__init__(message, hint)
        self.rules = rules
        self.requestable = requestable  # an allow-list refusal: recorded as an access request


class StorageUnavailable(Unavailable):
    """The blob store cannot be used right now (unreachable, credentials refused, no bucket);
    nothing was stored or served. Usually temporary: clients may retry."""

    retry_after = 30


class UpstreamError(StockadeError):
    """An upstream index misbehaved."""

    http_status = 502


class UpstreamUnavailable(UpstreamError):
    """The upstream could not be reached and nothing usable is cached."""


class IntegrityError(UpstreamError):
    """Bytes from the upstream do not match the digest the upstream published."""
