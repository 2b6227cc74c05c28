"""the journal: one row an event (a run's state change, a run made, the link, a task switch)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 23:50:00

Portable types only (integers, strings, a boolean, a naive UTC datetime): the same table on
SQLite, PostgreSQL and MariaDB. No foreign key to remote_run: the journal keeps telling of a
run after it is gone. Runs made before this revision have no events before it.
"""
import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('journal_event',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('command', sa.String(length=16), nullable=False),
    sa.Column('daemon', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('remote_id', sa.Integer(), nullable=True),
    sa.Column('label', sa.String(length=128), nullable=True),
    sa.Column('stage', sa.String(length=32), nullable=True),
    sa.Column('src', sa.String(length=16), nullable=True),
    sa.Column('dst', sa.String(length=16), nullable=True),
    sa.Column('fault', sa.Integer(), nullable=True),
    sa.Column('message', sa.String(length=2000), nullable=True),
    sa.Column('n_good', sa.Integer(), nullable=True),
    sa.Column('n_failed', sa.Integer(), nullable=True),
    sa.Column('n_abandoned', sa.Integer(), nullable=True),
    sa.Column('n_refused', sa.Integer(), nullable=True),
    sa.Column('site', sa.String(length=64), nullable=True),
    sa.Column('host', sa.String(length=128), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('who', sa.String(length=192), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_journal_event'))
    )
    op.create_index('ix_journal_event_remote_id', 'journal_event', ['remote_id', 'id'], unique=False)
    op.create_index('ix_journal_event_label', 'journal_event', ['label', 'id'], unique=False)
    op.create_index('ix_journal_event_at', 'journal_event', ['at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_journal_event_at', table_name='journal_event')
    op.drop_index('ix_journal_event_label', table_name='journal_event')
    op.drop_index('ix_journal_event_remote_id', table_name='journal_event')
    op.drop_table('journal_event')
