"""Index scan reports by verdict: environments look up the malicious ones on every evaluation

Revision ID: 0023
Revises: 0022
Create Date: 2026-11-26 12:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_scan_reports_verdict", "scan_reports", ["verdict"])


def downgrade() -> None:
    op.drop_index("ix_scan_reports_verdict", table_name="scan_reports")
