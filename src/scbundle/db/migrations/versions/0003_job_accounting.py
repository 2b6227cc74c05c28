"""a run's scheduler state and its requested vs used time

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 14:50:00
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

# a float is a double everywhere: MySQL's FLOAT is single precision (a time in seconds
# since 1970 would keep about two minutes); SQLite and PostgreSQL get what they always got
FLOAT = sa.Float().with_variant(mysql.DOUBLE(asdecimal=False), 'mysql', 'mariadb')


def upgrade() -> None:
    with op.batch_alter_table('remote_run', schema=None) as batch_op:
        batch_op.add_column(sa.Column('req_cores', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('cost_seconds', FLOAT, nullable=True))
        batch_op.add_column(sa.Column('cost_source', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('sched_state', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('job_seconds', FLOAT, nullable=True))
        batch_op.add_column(sa.Column('busy_core_seconds', FLOAT, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('remote_run', schema=None) as batch_op:
        for name in ('busy_core_seconds', 'job_seconds', 'sched_state', 'cost_source', 'cost_seconds', 'req_cores'):
            batch_op.drop_column(name)
