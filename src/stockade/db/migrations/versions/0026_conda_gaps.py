"""conda gaps (issue 7): yanked conda packages (kept, downloadable by exact URL, left out of
repodata and listed in its ``removed`` list). Expand-only: two nullable columns.

Revision ID: 0026
Revises: 0025
Create Date: 2026-11-26 23:59:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0026"
down_revision = "0025"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "conda_packages", sa.Column("yanked_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("conda_packages", sa.Column("yank_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("conda_packages", "yank_reason")
    op.drop_column("conda_packages", "yanked_at")
