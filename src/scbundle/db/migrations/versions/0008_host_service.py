"""front ends in and out of service, and each local host's link heartbeat

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 02:50:00

Two small tables, portable types only (strings, a boolean, a naive UTC datetime), like 0006:
``host_service``: a site's front end taken out of transfers and submission (`scbundle link
host off`), with since when, by whom and why; a host with no row is in service.
``link_heartbeat``: each local host's last word on its link to each front end (up or down,
when), written by `link check`, `link start` and the daemon's rounds; one row per local host,
site and front end, updated in place.
"""
import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('host_service',
    sa.Column('site', sa.String(length=64), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('in_service', sa.Boolean(), nullable=False),
    sa.Column('since', sa.DateTime(), nullable=False),
    sa.Column('by', sa.String(length=192), nullable=False),
    sa.Column('why', sa.String(length=500), nullable=True),
    sa.PrimaryKeyConstraint('site', 'host', name=op.f('pk_host_service'))
    )
    op.create_table('link_heartbeat',
    sa.Column('local_host', sa.String(length=128), nullable=False),
    sa.Column('site', sa.String(length=64), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('up', sa.Boolean(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('who', sa.String(length=192), nullable=False),
    sa.PrimaryKeyConstraint('local_host', 'site', 'host', name=op.f('pk_link_heartbeat'))
    )


def downgrade() -> None:
    op.drop_table('link_heartbeat')
    op.drop_table('host_service')
