"""first tables: remote runs, components, demo pipeline

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 12:15:11.507914
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None

# a float is a double everywhere: MySQL's FLOAT is single precision (a time in seconds
# since 1970 would keep about two minutes); SQLite and PostgreSQL get what they always got
FLOAT = sa.Float().with_variant(mysql.DOUBLE(asdecimal=False), 'mysql', 'mariadb')
# scbundle's names compare exactly on MariaDB/MySQL too (labels, keys): a binary collation, not the
# server's case-insensitive default; SQLite and PostgreSQL ignore these options
MYSQL_TABLE = {'mysql_charset': 'utf8mb4', 'mysql_collate': 'utf8mb4_bin'}


def upgrade() -> None:
    
    op.create_table('detrend',
    sa.Column('det_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('filter', sa.String(length=16), nullable=False),
    sa.Column('class_id', sa.String(length=16), nullable=False),
    sa.Column('uri', sa.String(length=1024), nullable=False),
    sa.PrimaryKeyConstraint('det_id', name=op.f('pk_detrend')),
    **MYSQL_TABLE,
    )
    op.create_table('exposure',
    sa.Column('exp_id', sa.Integer(), nullable=False),
    sa.Column('exp_name', sa.String(length=64), nullable=False),
    sa.Column('filter', sa.String(length=16), nullable=False),
    sa.Column('dateobs', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('exp_id', name=op.f('pk_exposure')),
    sa.UniqueConstraint('exp_name', name=op.f('uq_exposure_exp_name')),
    **MYSQL_TABLE,
    )
    op.create_table('remote_run',
    sa.Column('remote_id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('stage', sa.String(length=32), nullable=False),
    sa.Column('label', sa.String(length=128), nullable=False),
    sa.Column('site', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('prev_state', sa.String(length=16), nullable=True),
    sa.Column('path_base', sa.String(length=1024), nullable=True),
    sa.Column('job_id', sa.String(length=64), nullable=True),
    sa.Column('job_name', sa.String(length=128), nullable=True),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('last_poll', sa.DateTime(), nullable=True),
    sa.Column('fault', sa.Integer(), nullable=False),
    sa.Column('message', sa.String(length=2000), nullable=True),
    sa.Column('job_policy', sa.String(length=16), nullable=False),
    sa.Column('req_nodes', sa.Integer(), nullable=True),
    sa.Column('req_seconds', sa.Integer(), nullable=True),
    sa.Column('nranks', sa.Integer(), nullable=True),
    sa.Column('created', sa.DateTime(), server_default=sa.text('(CURRENT_TIMESTAMP)'), nullable=False),
    sa.Column('updated', sa.DateTime(), server_default=sa.text('(CURRENT_TIMESTAMP)'), nullable=False),
    sa.PrimaryKeyConstraint('remote_id', name=op.f('pk_remote_run')),
    **MYSQL_TABLE,
    )
    with op.batch_alter_table('remote_run', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_remote_run_label'), ['label'], unique=False)
        batch_op.create_index(batch_op.f('ix_remote_run_state'), ['state'], unique=False)

    op.create_table('imfile',
    sa.Column('imfile_id', sa.Integer(), nullable=False),
    sa.Column('exp_id', sa.Integer(), nullable=False),
    sa.Column('class_id', sa.String(length=16), nullable=False),
    sa.Column('uri', sa.String(length=1024), nullable=False),
    sa.Column('det_id', sa.Integer(), nullable=False),
    sa.Column('npix', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['det_id'], ['detrend.det_id'], name=op.f('fk_imfile_det_id_detrend')),
    sa.ForeignKeyConstraint(['exp_id'], ['exposure.exp_id'], name=op.f('fk_imfile_exp_id_exposure')),
    sa.PrimaryKeyConstraint('imfile_id', name=op.f('pk_imfile')),
    **MYSQL_TABLE,
    )
    with op.batch_alter_table('imfile', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_imfile_exp_id'), ['exp_id'], unique=False)

    op.create_table('remote_component',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('remote_id', sa.Integer(), nullable=False),
    sa.Column('stage', sa.String(length=32), nullable=False),
    sa.Column('stage_id', sa.Integer(), nullable=False),
    sa.Column('idx', sa.Integer(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('fault', sa.Integer(), nullable=False),
    sa.Column('message', sa.String(length=2000), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('exit_code', sa.Integer(), nullable=True),
    sa.Column('rank', sa.Integer(), nullable=True),
    sa.Column('host', sa.String(length=128), nullable=True),
    sa.Column('t_start', FLOAT, nullable=True),
    sa.Column('t_end', FLOAT, nullable=True),
    sa.ForeignKeyConstraint(['remote_id'], ['remote_run.remote_id'], name=op.f('fk_remote_component_remote_id_remote_run'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_remote_component')),
    sa.UniqueConstraint('stage', 'stage_id', name='uq_remote_component_stage_work'),
    **MYSQL_TABLE,
    )
    with op.batch_alter_table('remote_component', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_remote_component_remote_id'), ['remote_id'], unique=False)
        batch_op.create_index('ix_remote_component_run_state', ['remote_id', 'state'], unique=False)

    op.create_table('chip_result',
    sa.Column('imfile_id', sa.Integer(), nullable=False),
    sa.Column('remote_id', sa.Integer(), nullable=False),
    sa.Column('stats_uri', sa.String(length=1024), nullable=True),
    sa.Column('processed_uri', sa.String(length=1024), nullable=True),
    sa.Column('mean', FLOAT, nullable=True),
    sa.Column('stdev', FLOAT, nullable=True),
    sa.Column('median', FLOAT, nullable=True),
    sa.Column('npix', sa.Integer(), nullable=True),
    sa.Column('nsat', sa.Integer(), nullable=True),
    sa.Column('bg_min', FLOAT, nullable=True),
    sa.Column('bg_max', FLOAT, nullable=True),
    sa.Column('dtime_chip', FLOAT, nullable=True),
    sa.ForeignKeyConstraint(['imfile_id'], ['imfile.imfile_id'], name=op.f('fk_chip_result_imfile_id_imfile')),
    sa.ForeignKeyConstraint(['remote_id'], ['remote_run.remote_id'], name=op.f('fk_chip_result_remote_id_remote_run')),
    sa.PrimaryKeyConstraint('imfile_id', name=op.f('pk_chip_result')),
    **MYSQL_TABLE,
    )
    


def downgrade() -> None:
    
    op.drop_table('chip_result')
    with op.batch_alter_table('remote_component', schema=None) as batch_op:
        batch_op.drop_index('ix_remote_component_run_state')
        batch_op.drop_index(batch_op.f('ix_remote_component_remote_id'))

    op.drop_table('remote_component')
    with op.batch_alter_table('imfile', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_imfile_exp_id'))

    op.drop_table('imfile')
    with op.batch_alter_table('remote_run', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_remote_run_state'))
        batch_op.drop_index(batch_op.f('ix_remote_run_label'))

    op.drop_table('remote_run')
    op.drop_table('exposure')
    op.drop_table('detrend')
    
