"""SQLAlchemy 2 models. The schema is owned by Alembic (``stockade/db/migrations``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class IndexRow(Base):
    __tablename__ = "indexes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    upstream_url: Mapped[str | None] = mapped_column(Text)
    members: Mapped[list[str]] = mapped_column(JSON, default=list)
    anonymous_read: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TokenRow(Base):
    __tablename__ = "tokens"
    __table_args__ = (Index("ix_tokens_team", "team"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    index_name: Mapped[str] = mapped_column(String(64))  # "*" = every index
    scope: Mapped[str] = mapped_column(String(16))
    team: Mapped[str | None] = mapped_column(String(128))  # a teams.name (checked on create)
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str | None] = mapped_column(String(32))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TeamRow(Base):
    """A group of tokens; what its tokens may reach is the union of its grants."""

    __tablename__ = "teams"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str | None] = mapped_column(String(128))


class TeamGrantRow(Base):
    """A team's access to one index ("*" = every index), up to a scope."""

    __tablename__ = "team_grants"
    __table_args__ = (UniqueConstraint("team", "index_name", name="uq_team_grant"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    team: Mapped[str] = mapped_column(ForeignKey("teams.name", ondelete="CASCADE"))
    index_name: Mapped[str] = mapped_column(String(64))  # "*" = every index
    scope: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str | None] = mapped_column(String(128))


class FileRow(Base):
    """A distribution file an index serves from its own storage (uploaded or mirrored)."""

    __tablename__ = "files"
    __table_args__ = (
        UniqueConstraint("index_id", "filename", name="uq_files_index_filename"),
        Index("ix_files_index_project", "index_id", "project"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    index_id: Mapped[int] = mapped_column(ForeignKey("indexes.id", ondelete="CASCADE"))
    project: Mapped[str] = mapped_column(String(255))  # PEP 503 normalized
    display_name: Mapped[str] = mapped_column(String(255))
    version: Mapped[str] = mapped_column(String(128))
    filename: Mapped[str] = mapped_column(String(512))
    packagetype: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    requires_python: Mapped[str | None] = mapped_column(String(255))
    metadata_sha256: Mapped[str | None] = mapped_column(String(64))
    yanked: Mapped[bool] = mapped_column(Boolean, default=False)
    yanked_reason: Mapped[str | None] = mapped_column(Text)
    upload_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    uploaded_by: Mapped[str | None] = mapped_column(String(32))
    origin_url: Mapped[str | None] = mapped_column(Text)  # mirrors: where it came from


class MirrorPageRow(Base):
    """The last good copy of an upstream project page, parsed into the page model."""

    __tablename__ = "mirror_pages"
    __table_args__ = (UniqueConstraint("index_id", "project", name="uq_pages_index_project"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    index_id: Mapped[int] = mapped_column(ForeignKey("indexes.id", ondelete="CASCADE"))
    project: Mapped[str] = mapped_column(String(255))
    data: Mapped[str] = mapped_column(Text)  # JSON of stockade.core.simple.ProjectPage
    etag: Mapped[str | None] = mapped_column(String(512))
    last_modified: Mapped[str | None] = mapped_column(String(128))
    fetched_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    exists_upstream: Mapped[bool] = mapped_column(Boolean, default=True)


class AuditRow(Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_at", "at"),
        Index("ix_audit_actor", "actor"),
        Index("ix_audit_seq", "seq", unique=True),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str | None] = mapped_column(String(32))  # token id, or None for anonymous
    action: Mapped[str] = mapped_column(String(64))
    index_name: Mapped[str | None] = mapped_column(String(64))
    project: Mapped[str | None] = mapped_column(String(255))
    filename: Mapped[str | None] = mapped_column(String(512))
    outcome: Mapped[str] = mapped_column(String(16), default="ok")
    client: Mapped[str | None] = mapped_column(String(128))
    detail: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    # The hash chain (core/auditchain.py): position, previous event's hash, this event's hash.
    seq: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    hash: Mapped[str | None] = mapped_column(String(64))


class AuditChainRow(Base):
    """The head of the audit hash chain (one row, id 1): writers lock it, append after it."""

    __tablename__ = "audit_chain"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    last_hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AuditCheckpointRow(Base):
    """A signature by the server's audit key over the chain's hash at ``seq``."""

    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    key_id: Mapped[str] = mapped_column(String(32))
    signature: Mapped[str] = mapped_column(String(256))


class AuditSegmentRow(Base):
    """A run of old audit events moved out of the database into storage (retention): a gzip'd
    JSON-lines blob holding every field the chain hashes, with a checkpoint signed over its last
    event. Segments follow each other without gaps; the database's chain continues after the
    newest one."""

    __tablename__ = "audit_segments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    first_seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), unique=True
    )
    last_seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    prev_hash: Mapped[str] = mapped_column(String(64))  # the hash before first_seq
    last_hash: Mapped[str] = mapped_column(String(64))
    events: Mapped[int] = mapped_column(Integer)
    first_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    blob_sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    key_id: Mapped[str] = mapped_column(String(32))
    signature: Mapped[str] = mapped_column(String(256))  # checkpoint over (last_seq, last_hash)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AdvisoryRow(Base):
    """One OSV advisory, from the feed or added by an admin (source "local")."""

    __tablename__ = "advisories"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    source: Mapped[str] = mapped_column(String(16))  # "feed" | "local"
    summary: Mapped[str | None] = mapped_column(Text)
    details: Mapped[str | None] = mapped_column(Text)
    published: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    modified: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    withdrawn: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    severity_score: Mapped[float | None] = mapped_column()
    severity_rating: Mapped[str | None] = mapped_column(String(16))
    severity_vector: Mapped[str | None] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))  # sha256 of the record's bytes
    raw: Mapped[str] = mapped_column(Text)  # the OSV record as JSON
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AdvisoryAliasRow(Base):
    __tablename__ = "advisory_aliases"
    __table_args__ = (Index("ix_alias", "alias"),)

    advisory_id: Mapped[str] = mapped_column(
        ForeignKey("advisories.id", ondelete="CASCADE"), primary_key=True
    )
    alias: Mapped[str] = mapped_column(String(128), primary_key=True)


class AdvisoryPackageRow(Base):
    """One ``affected[]`` entry: the lookup key of every version query."""

    __tablename__ = "advisory_packages"
    __table_args__ = (Index("ix_advpkg_lookup", "ecosystem", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    advisory_id: Mapped[str] = mapped_column(ForeignKey("advisories.id", ondelete="CASCADE"))
    ecosystem: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(255))
    data: Mapped[str] = mapped_column(Text)  # JSON: ranges, versions, purl


class CurationRow(Base):
    """An expert's decision about an advisory for a package; append-only history."""

    __tablename__ = "curations"
    __table_args__ = (Index("ix_curation_key", "advisory_id", "ecosystem", "package"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    advisory_id: Mapped[str] = mapped_column(String(128))
    ecosystem: Mapped[str] = mapped_column(String(32))
    package: Mapped[str] = mapped_column(String(255))
    versions: Mapped[str | None] = mapped_column(Text)  # specifier set; None = every version
    status: Mapped[str] = mapped_column(String(32))  # affected|not_affected|…|feed (= withdrawn)
    justification: Mapped[str | None] = mapped_column(String(64))
    severity_score: Mapped[float | None] = mapped_column()
    severity_rating: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)
    author: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CondaNameRow(Base):
    """An admin's conda → PyPI name mapping (overrides the shipped table)."""

    __tablename__ = "conda_names"

    conda_name: Mapped[str] = mapped_column(String(255), primary_key=True)
    pypi_name: Mapped[str | None] = mapped_column(String(255))  # None: not a Python project
    author: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PolicyRow(Base):
    """One version of an index's policy; every change is a new row (history is kept)."""

    __tablename__ = "policies"
    __table_args__ = (UniqueConstraint("index_name", "version", name="uq_policy_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    index_name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)  # the TOML document ("" = no policy)
    author: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PolicyExceptionRow(Base):
    """An admin's exception: files of a project (and version range) served despite the policy."""

    __tablename__ = "policy_exceptions"
    __table_args__ = (Index("ix_policy_exc_index", "index_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    index_name: Mapped[str] = mapped_column(String(64))
    project: Mapped[str] = mapped_column(String(255))
    specifier: Mapped[str | None] = mapped_column(String(255))  # None = every version
    reason: Mapped[str] = mapped_column(Text)
    author: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PolicyApprovalRow(Base):
    """An admin's approval: NAME (and versions) added to the allow-list of an index's
    allow-only names rules. Unlike an exception it overrides nothing else (vulnerabilities,
    licences and deny patterns still apply)."""

    __tablename__ = "policy_approvals"
    __table_args__ = (Index("ix_policy_approvals_index", "index_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    index_name: Mapped[str] = mapped_column(String(64))
    project: Mapped[str] = mapped_column(String(255))
    specifier: Mapped[str | None] = mapped_column(String(255))  # None = every version
    reason: Mapped[str | None] = mapped_column(Text)
    author: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PolicyRequestRow(Base):
    """Someone asked for a project an allow-list refused: pending until an admin approves."""

    __tablename__ = "policy_requests"
    __table_args__ = (
        UniqueConstraint("index_name", "project", "version", name="uq_policy_request"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    index_name: Mapped[str] = mapped_column(String(64))
    project: Mapped[str] = mapped_column(String(255))
    version: Mapped[str] = mapped_column(String(128))  # "" = the project as a whole
    count: Mapped[int] = mapped_column(Integer, default=1)
    first_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_actor: Mapped[str | None] = mapped_column(String(128))
    approval_id: Mapped[int | None] = mapped_column(Integer)  # set once approved


class FileMetadataRow(Base):
    """What Stockade read from a file's core metadata (METADATA, PKG-INFO), keyed by content.

    Filled on upload, when a mirror stores a file, and from PEP 658 ``.metadata`` when a policy
    needs facts (licenses) before anyone downloads the file. Immutable per sha256.
    """

    __tablename__ = "file_metadata"
    __table_args__ = (Index("ix_file_metadata_project", "project", "version"),)

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    project: Mapped[str] = mapped_column(String(255))
    version: Mapped[str | None] = mapped_column(String(128))
    license_expression: Mapped[str | None] = mapped_column(Text)  # normalized SPDX expression
    license_raw: Mapped[str | None] = mapped_column(Text)  # what the metadata said
    license_source: Mapped[str | None] = mapped_column(String(32))  # field it came from
    requires_python: Mapped[str | None] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(16))  # upload | file | metadata
    error: Mapped[str | None] = mapped_column(Text)  # why the metadata could not be read
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ScanReportRow(Base):
    """The malware scanner's verdict on one file's content (by sha256), with its evidence."""

    __tablename__ = "scan_reports"
    __table_args__ = (Index("ix_scan_reports_verdict", "verdict"),)

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    filename: Mapped[str] = mapped_column(String(255))
    verdict: Mapped[str] = mapped_column(String(16))  # malicious | suspicious | clean | error
    score: Mapped[float] = mapped_column(Float)
    findings: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    engine: Mapped[str] = mapped_column(String(32))  # scanner + rules version that decided
    scanned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    elapsed: Mapped[float] = mapped_column(Float)


class VersionIdentityRow(Base):
    """Who published a version of a mirrored project, as its upstream reported it (PEP 740
    provenance publisher), first seen at ``observed_at``. Impersonation findings compare
    consecutive versions."""

    __tablename__ = "version_identities"
    __table_args__ = (UniqueConstraint("index_name", "project", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    index_name: Mapped[str] = mapped_column(String(64))
    project: Mapped[str] = mapped_column(String(255))
    version: Mapped[str] = mapped_column(String(128))
    publisher: Mapped[str | None] = mapped_column(String(512))  # "GitHub:owner/repo"
    provenance: Mapped[bool | None] = mapped_column(Boolean)  # None: upstream offers none
    uploaded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    observed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class FileProvenanceRow(Base):
    """A file's PEP 740 provenance after verification (``status`` "verified": ``document`` is
    the provenance object served to clients) or its refusal (``status`` "failed": ``reason``
    says why; the file is not served). One row per file of an index (mirrored: fetched from the
    upstream's ``provenance`` URL; private: the attestations of the upload)."""

    __tablename__ = "file_provenance"
    __table_args__ = (
        UniqueConstraint("index_name", "filename"),
        Index("ix_file_provenance_project", "index_name", "project"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    index_name: Mapped[str] = mapped_column(String(64))
    project: Mapped[str] = mapped_column(String(255))
    version: Mapped[str | None] = mapped_column(String(128))
    filename: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))  # verified | failed
    publisher_kind: Mapped[str | None] = mapped_column(String(32))
    publisher_repository: Mapped[str | None] = mapped_column(String(512))
    publisher_workflow: Mapped[str | None] = mapped_column(String(512))
    publisher_environment: Mapped[str | None] = mapped_column(String(255))
    publishers: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    document: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(Text)  # upstream URL, or "upload"
    verified_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ProjectOwnersRow(Base):
    """A mirrored project's owners, e-mails and links as its upstream's JSON API reported them;
    a new row only when something changed (append-only history)."""

    __tablename__ = "project_owners"
    __table_args__ = (Index("ix_project_owners_project", "index_name", "project"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    index_name: Mapped[str] = mapped_column(String(64))
    project: Mapped[str] = mapped_column(String(255))
    owners: Mapped[list[str] | None] = mapped_column(JSON)  # None: the API did not say
    organization: Mapped[str | None] = mapped_column(String(255))
    emails: Mapped[list[str]] = mapped_column(JSON, default=list)
    urls: Mapped[list[str]] = mapped_column(JSON, default=list)
    first_upload: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    observed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CondaChannelRow(Base):
    """What a conda channel (an index of kind conda-mirror or conda-private) adds to its index."""

    __tablename__ = "conda_channels"

    index_id: Mapped[int] = mapped_column(
        ForeignKey("indexes.id", ondelete="CASCADE"), primary_key=True
    )
    subdirs: Mapped[list[str]] = mapped_column(JSON, default=list)  # mirrors: what is mirrored
    # conda content trust: since when its repodata records are signed (None: not signed)
    signed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class CondaPackageRow(Base):
    """A conda package file a channel stores: uploaded (private) or fetched through (mirror)."""

    __tablename__ = "conda_packages"
    __table_args__ = (
        UniqueConstraint("index_id", "subdir", "filename", name="uq_conda_packages_file"),
        Index("ix_conda_packages_name", "index_id", "name"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    index_id: Mapped[int] = mapped_column(ForeignKey("indexes.id", ondelete="CASCADE"))
    subdir: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str] = mapped_column(String(512))
    name: Mapped[str] = mapped_column(String(255))
    version: Mapped[str] = mapped_column(String(128))
    build: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))
    md5: Mapped[str] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(BigInteger)
    record: Mapped[str] = mapped_column(Text)  # JSON: the repodata record (index.json + digests)
    source: Mapped[str] = mapped_column(String(16))  # upload | mirror
    uploaded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    uploaded_by: Mapped[str | None] = mapped_column(String(32))
    # yanked: kept and downloadable by exact URL, left out of repodata (listed in ``removed``)
    yanked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    yank_reason: Mapped[str | None] = mapped_column(Text)


class CondaRepodataRow(Base):
    """The current served form of one repodata document of a channel (``<subdir>/repodata.json``,
    ``<subdir>/current_repodata.json``, ``channeldata.json``): blobs by sha256, and for mirrors
    the upstream copy with its validators."""

    __tablename__ = "conda_repodata"
    __table_args__ = (UniqueConstraint("index_id", "path", name="uq_conda_repodata_path"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    index_id: Mapped[int] = mapped_column(ForeignKey("indexes.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(String(128))
    source_sha256: Mapped[str | None] = mapped_column(String(64))  # the upstream bytes
    etag: Mapped[str | None] = mapped_column(String(512))
    last_modified: Mapped[str | None] = mapped_column(String(128))
    variant: Mapped[str | None] = mapped_column(String(16))  # upstream form fetched: zst | json
    fetched_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    exists_upstream: Mapped[bool] = mapped_column(Boolean, default=True)
    json_sha256: Mapped[str | None] = mapped_column(String(64))
    zst_sha256: Mapped[str | None] = mapped_column(String(64))
    gz_sha256: Mapped[str | None] = mapped_column(String(64))
    shards_sha256: Mapped[str | None] = mapped_column(String(64))  # CEP-16 shard index
    packages: Mapped[int] = mapped_column(Integer, default=0)
    policy_key: Mapped[str | None] = mapped_column(
        String(64)
    )  # the policy state it was filtered by


class ConsoleUserRow(Base):
    """An account of the web console (``/ui/``): ``admin`` may change things, ``viewer`` may
    only look. The password is stored as a salted scrypt hash (``services/console.py``)."""

    __tablename__ = "console_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))  # admin | viewer
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class ConsoleSessionRow(Base):
    """A console login: the cookie carries a random secret, the row its sha256 (a leaked
    database does not yield live sessions), the CSRF token and the expiry."""

    __tablename__ = "console_sessions"
    __table_args__ = (Index("ix_console_sessions_user", "user_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 hex of the secret
    user_id: Mapped[int] = mapped_column(ForeignKey("console_users.id", ondelete="CASCADE"))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ConsoleLoginFailureRow(Base):
    """One failed console login, counted per key (``u:<user>`` and ``c:<address>``) in a
    sliding window by every server process (services/console.py ``LoginLimiter``)."""

    __tablename__ = "console_login_failures"
    __table_args__ = (Index("ix_console_login_failures_key_at", "key", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    key: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class EnvironmentRow(Base):
    """A team's named environment (TEAM/NAME); its versions are immutable lock files."""

    __tablename__ = "environments"
    __table_args__ = (UniqueConstraint("team", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    team: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str | None] = mapped_column(String(64))


class EnvironmentVersionRow(Base):
    """One pushed (or locked) version: the file (in the blob store) and its evaluated status."""

    __tablename__ = "environment_versions"
    __table_args__ = (UniqueConstraint("env_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    env_id: Mapped[int] = mapped_column(ForeignKey("environments.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))  # core.lockfiles kind
    filename: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64))  # the file, in the blob store
    size: Mapped[int] = mapped_column(BigInteger)
    index_name: Mapped[str | None] = mapped_column(String(64))  # policy verdicts against it
    status: Mapped[str] = mapped_column(String(16))  # green | red
    problems: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # "name==ver" → [...]
    evaluated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str | None] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)


class EnvironmentPackageRow(Base):
    """A pin of an environment version; indexed by package so a change to one package
    re-evaluates only the versions that contain it."""

    __tablename__ = "environment_packages"
    __table_args__ = (Index("ix_environment_packages_package", "ecosystem", "name"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    version_id: Mapped[int] = mapped_column(
        ForeignKey("environment_versions.id", ondelete="CASCADE"), index=True
    )
    ecosystem: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(255))
    version: Mapped[str] = mapped_column(String(128))


class EnvironmentStatusRow(Base):
    """A change of an environment version's status, with its cause."""

    __tablename__ = "environment_status_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version_id: Mapped[int] = mapped_column(
        ForeignKey("environment_versions.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    old_status: Mapped[str] = mapped_column(String(16))
    new_status: Mapped[str] = mapped_column(String(16))
    cause: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class TufRepoRow(Base):
    """An index whose TUF metadata Stockade publishes; its row is the signers' lock (every
    signing transaction updates it first) and names the current version of each role."""

    __tablename__ = "tuf_repos"

    index_id: Mapped[int] = mapped_column(
        ForeignKey("indexes.id", ondelete="CASCADE"), primary_key=True
    )
    bit_length: Mapped[int] = mapped_column(Integer)  # 2**bit_length hashed bins
    root_version: Mapped[int] = mapped_column(Integer)
    targets_version: Mapped[int] = mapped_column(Integer)
    snapshot_version: Mapped[int] = mapped_column(Integer)
    timestamp_version: Mapped[int] = mapped_column(Integer)
    timestamp_expires: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    snapshot_expires: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    bins_expire: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # earliest bin
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TufMetadataRow(Base):
    """One signed metadata document (``<version>.<role>.json``), immutable once written."""

    __tablename__ = "tuf_metadata"
    __table_args__ = (UniqueConstraint("index_id", "role", "version"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    index_id: Mapped[int] = mapped_column(ForeignKey("indexes.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    expires: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TufTargetRow(Base):
    """A target an index's bins list (a served page or a file on it); the previous digest
    stays downloadable so a client holding the metadata before a change can finish."""

    __tablename__ = "tuf_targets"
    __table_args__ = (
        UniqueConstraint("index_id", "path"),
        Index("ix_tuf_targets_bin", "index_id", "bin"),
        Index("ix_tuf_targets_project", "index_id", "project"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    index_id: Mapped[int] = mapped_column(ForeignKey("indexes.id", ondelete="CASCADE"))
    project: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(String(800))
    bin: Mapped[str] = mapped_column(String(16))
    length: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    prev_sha256: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class JobRow(Base):
    """A background job of the in-process queue (the embedded shape): what ran, how often and
    how it ended. The PostgreSQL shape keeps its jobs in procrastinate's own tables."""

    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status", "status", "id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    task: Mapped[str] = mapped_column(String(64))
    queue: Mapped[str] = mapped_column(String(64))
    args: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16))  # queued | running | done | failed | cancelled
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    scheduled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class JobErrorRow(Base):
    """Why one attempt of a job failed, for either queue (``engine``: inprocess or
    procrastinate; ``job_id`` is that queue's job id)."""

    __tablename__ = "job_errors"
    __table_args__ = (Index("ix_job_errors_job", "engine", "job_id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    engine: Mapped[str] = mapped_column(String(16))
    job_id: Mapped[int] = mapped_column(BigInteger)
    attempt: Mapped[int] = mapped_column(Integer)
    error: Mapped[str] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CondaTrustMetadataRow(Base):
    """One conda content trust document (``<version>.root.json`` or ``key_mgr.json``) of the
    server's key set, immutable once written; every signed channel serves the same ones."""

    __tablename__ = "conda_trust_metadata"
    __table_args__ = (UniqueConstraint("role", "version"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    role: Mapped[str] = mapped_column(String(16))  # root | key_mgr
    version: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    expires: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
