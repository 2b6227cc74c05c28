"""the notification outbox: one row a message to one address, derived from the journal

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 03:00:00

Portable types only (integers, strings, naive UTC datetimes), as 0006: the same table on
SQLite, PostgreSQL and MariaDB. The unique (kind, event_id, target) is what makes a message
sent once with several daemons on one database.
"""
import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('notification',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('event_id', sa.Integer(), nullable=False),
    sa.Column('target', sa.String(length=16), nullable=False),
    sa.Column('label', sa.String(length=128), nullable=True),
    sa.Column('title', sa.String(length=250), nullable=False),
    sa.Column('body', sa.String(length=4000), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_try', sa.DateTime(), nullable=False),
    sa.Column('claimed_at', sa.DateTime(), nullable=True),
    sa.Column('claimed_by', sa.String(length=192), nullable=True),
    sa.Column('last_error', sa.String(length=2000), nullable=True),
    sa.Column('created', sa.DateTime(), nullable=False),
    sa.Column('sent_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_notification')),
    sa.UniqueConstraint('kind', 'event_id', 'target', name=op.f('uq_notification_kind'))
    )
    op.create_index('ix_notification_state', 'notification', ['state', 'next_try'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_notification_state', table_name='notification')
    op.drop_table('notification')
