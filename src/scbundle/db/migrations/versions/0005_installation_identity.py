"""installation identity: a random id no other database produces; each run's remote directory as given

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 10:00:00

The id goes into every run directory and job name made from now on, so a database rebuilt
from nothing (a new id) never takes the jobs and results of the one before it for its own.
Runs made before keep the names they were given: remote_dir NULL means the directory by the
rule of their time, <permanent_root>/runs/<stage>.<remote_id>.a<attempt>.
"""
import base64
import secrets

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

# scbundle's names compare exactly on MariaDB/MySQL too (labels, keys): a binary collation, not the
# server's case-insensitive default; SQLite and PostgreSQL ignore these options
MYSQL_TABLE = {'mysql_charset': 'utf8mb4', 'mysql_collate': 'utf8mb4_bin'}


def _new_id() -> str:
    # 80 random bits, 16 characters of [a-z2-7]: fit for a job name and a directory name
    return base64.b32encode(secrets.token_bytes(10)).decode().lower()


def upgrade() -> None:
    installation = op.create_table('installation',
    sa.Column('installation_id', sa.String(length=32), nullable=False),
    sa.Column('created', sa.DateTime(), server_default=sa.text('(CURRENT_TIMESTAMP)'), nullable=False),
    sa.PrimaryKeyConstraint('installation_id', name=op.f('pk_installation')),
    **MYSQL_TABLE,
    )
    op.bulk_insert(installation, [{'installation_id': _new_id()}])
    with op.batch_alter_table('remote_run', schema=None) as batch_op:
        batch_op.add_column(sa.Column('remote_dir', sa.String(length=1024), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('remote_run', schema=None) as batch_op:
        batch_op.drop_column('remote_dir')
    op.drop_table('installation')
