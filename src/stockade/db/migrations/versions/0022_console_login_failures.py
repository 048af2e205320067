"""Console failed logins counted in the database, so every server process shares the limit

Revision ID: 0022
Revises: 0021
Create Date: 2026-11-26 11:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_login_failures",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_console_login_failures_key_at", "console_login_failures", ["key", "at"])


def downgrade() -> None:
    op.drop_index("ix_console_login_failures_key_at", table_name="console_login_failures")
    op.drop_table("console_login_failures")
