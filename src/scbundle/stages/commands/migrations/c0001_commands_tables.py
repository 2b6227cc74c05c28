"""commands stage: its task table (the work a task file registers) and its results

Revision ID: c0001
Revises:
Create Date: 2026-12-01 22:00:00

The first revision of the `commands` branch; it needs the engine's remote_run (0005).
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = 'c0001'
down_revision = None
branch_labels = ('commands',)
depends_on = '0005'

# a float is a double everywhere: MySQL's FLOAT is single precision (a time in seconds
# since 1970 would keep about two minutes); SQLite and PostgreSQL get what they always got
FLOAT = sa.Float().with_variant(mysql.DOUBLE(asdecimal=False), 'mysql', 'mariadb')
# MySQL's TEXT holds 64 KiB: a task's list of inputs can be longer (PostgreSQL's and SQLite's have no such limit)
TEXT = sa.Text().with_variant(mysql.MEDIUMTEXT(), 'mysql', 'mariadb')
# scbundle's names compare exactly on MariaDB/MySQL too (labels, keys): a binary collation, not the
# server's case-insensitive default; SQLite and PostgreSQL ignore these options
MYSQL_TABLE = {'mysql_charset': 'utf8mb4', 'mysql_collate': 'utf8mb4_bin'}


def upgrade() -> None:
    op.create_table(
        'commands_task',
        sa.Column('task_id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('key', sa.String(length=128), nullable=False),
        sa.Column('command', TEXT, nullable=False),
        sa.Column('inputs', TEXT, nullable=False),
        sa.Column('outputs', TEXT, nullable=False),
        sa.Column('cost', FLOAT, nullable=True),
        sa.Column('threads', sa.Integer(), nullable=True),
        sa.Column('created', sa.DateTime(), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
        sa.PrimaryKeyConstraint('task_id', name=op.f('pk_commands_task')),
        sa.UniqueConstraint('key', name=op.f('uq_commands_task_key')),
        **MYSQL_TABLE,
    )
    op.create_table(
        'commands_result',
        sa.Column('task_id', sa.Integer(), nullable=False),
        sa.Column('remote_id', sa.Integer(), nullable=False),
        sa.Column('output', TEXT, nullable=True),
        sa.ForeignKeyConstraint(['task_id'], ['commands_task.task_id'], name=op.f('fk_commands_result_task_id_commands_task')),
        sa.ForeignKeyConstraint(['remote_id'], ['remote_run.remote_id'], name=op.f('fk_commands_result_remote_id_remote_run')),
        sa.PrimaryKeyConstraint('task_id', name=op.f('pk_commands_result')),
        **MYSQL_TABLE,
    )


def downgrade() -> None:
    op.drop_table('commands_result')
    op.drop_table('commands_task')
