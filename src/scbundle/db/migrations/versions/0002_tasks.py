"""task switches and in-flight steps

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 12:36:57.313748
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

# scbundle's names compare exactly on MariaDB/MySQL too (labels, keys): a binary collation, not the
# server's case-insensitive default; SQLite and PostgreSQL ignore these options
MYSQL_TABLE = {'mysql_charset': 'utf8mb4', 'mysql_collate': 'utf8mb4_bin'}


def upgrade() -> None:
    
    op.create_table('task_activity',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('task', sa.String(length=16), nullable=False),
    sa.Column('host', sa.String(length=128), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('started', sa.DateTime(), server_default=sa.text('(CURRENT_TIMESTAMP)'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_task_activity')),
    **MYSQL_TABLE,
    )
    with op.batch_alter_table('task_activity', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_task_activity_task'), ['task'], unique=False)

    op.create_table('task_switch',
    sa.Column('task', sa.String(length=16), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('changed', sa.DateTime(), server_default=sa.text('(CURRENT_TIMESTAMP)'), nullable=False),
    sa.Column('changed_by', sa.String(length=128), nullable=True),
    sa.PrimaryKeyConstraint('task', name=op.f('pk_task_switch')),
    **MYSQL_TABLE,
    )
    


def downgrade() -> None:
    
    op.drop_table('task_switch')
    with op.batch_alter_table('task_activity', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_task_activity_task'))

    op.drop_table('task_activity')
    
