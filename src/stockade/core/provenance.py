"""PEP 740 provenance as the rest of Stockade sees it: the Trusted Publisher that signed a file.

Pure values (no I/O). Verification (sigstore, pypi-attestations) lives in
:mod:`stockade.services.provenance`; policies read :class:`Publisher` values from the facts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["MEDIA_TYPE", "Publisher", "provenance_href"]

MEDIA_TYPE = "application/vnd.pypi.integrity.v1+json"  # PEP 740's provenance object


@dataclass(frozen=True, slots=True)
class Publisher:
    """A Trusted Publisher as PEP 740 names it (``kind`` GitHub | GitLab | Google | CircleCI)."""

    kind: str
    repository: str | None = None  # "owner/repo" (GitHub), "group/project" (GitLab)
    workflow: str | None = None  # GitHub workflow file name, GitLab CI file path
    environment: str | None = None
    email: str | None = None  # Google service account

    @property
    def label(self) -> str:
        """``kind:repository`` (lower-case), as the impersonation checks record publishers."""
        who = self.repository or self.email or ""
        return f"{self.kind}:{who.strip().lower()}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "repository": self.repository,
            "workflow": self.workflow,
            "environment": self.environment,
            "email": self.email,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Publisher:
        def text(key: str) -> str | None:
            value = data.get(key)
            return str(value) if value else None

        return cls(
            kind=str(data.get("kind") or "unknown"),
            repository=text("repository"),
            workflow=text("workflow") or text("workflow_filepath"),
            environment=text("environment"),
            email=text("email"),
        )


def provenance_href(project: str, filename: str) -> str:
    """Where a simple page (``…/simple/<project>/``) points for a file's provenance."""
    return f"../../integrity/{project}/{filename}/provenance"
