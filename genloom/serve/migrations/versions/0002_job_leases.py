"""job leases and idempotent events: a job's worker and lease expiry; a per-job key on events

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("worker_id", sa.String(80), nullable=True))
    op.add_column("jobs", sa.Column("lease_expires_at", sa.DateTime, nullable=True))
    op.add_column("job_events", sa.Column("key", sa.String(64), nullable=True))
    # one event per (job, key): NULL keys are all distinct, on SQLite and PostgreSQL alike
    op.create_index("uq_job_events_job_id_key", "job_events", ["job_id", "key"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_job_events_job_id_key", table_name="job_events")
    with op.batch_alter_table("job_events") as batch:
        batch.drop_column("key")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("lease_expires_at")
        batch.drop_column("worker_id")
