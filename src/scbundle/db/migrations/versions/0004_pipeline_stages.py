"""pipeline stages: cam, warp, stack tables, the sky-cell catalog, exposure pointings, advance

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 15:30:00
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

# a float is a double everywhere: MySQL's FLOAT is single precision (a time in seconds
# since 1970 would keep about two minutes); SQLite and PostgreSQL get what they always got
FLOAT = sa.Float().with_variant(mysql.DOUBLE(asdecimal=False), 'mysql', 'mariadb')
# scbundle's names compare exactly on MariaDB/MySQL too (labels, keys): a binary collation, not the
# server's case-insensitive default; SQLite and PostgreSQL ignore these options
MYSQL_TABLE = {'mysql_charset': 'utf8mb4', 'mysql_collate': 'utf8mb4_bin'}


def upgrade() -> None:
    op.create_table('skycell',
    sa.Column('skycell_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('tess', sa.String(length=32), nullable=False),
    sa.Column('proj_ra_deg', FLOAT, nullable=False),
    sa.Column('proj_dec_deg', FLOAT, nullable=False),
    sa.Column('scale_arcsec', FLOAT, nullable=False),
    sa.Column('x0', sa.Integer(), nullable=False),
    sa.Column('y0', sa.Integer(), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('skycell_id', name=op.f('pk_skycell')),
    sa.UniqueConstraint('name', name=op.f('uq_skycell_name')),
    **MYSQL_TABLE,
    )
    op.create_table('advance_block',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('remote_id', sa.Integer(), nullable=False),
    sa.Column('stage', sa.String(length=32), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('item', sa.String(length=128), nullable=False),
    sa.Column('reason', sa.String(length=1000), nullable=False),
    sa.ForeignKeyConstraint(['remote_id'], ['remote_run.remote_id'], name=op.f('fk_advance_block_remote_id_remote_run'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_advance_block')),
    **MYSQL_TABLE,
    )
    with op.batch_alter_table('advance_block', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_advance_block_remote_id'), ['remote_id'], unique=False)

    op.create_table('cam_result',
    sa.Column('exp_id', sa.Integer(), nullable=False),
    sa.Column('remote_id', sa.Integer(), nullable=False),
    sa.Column('mosaic_uri', sa.String(length=1024), nullable=True),
    sa.Column('stats_uri', sa.String(length=1024), nullable=True),
    sa.Column('n_chips', sa.Integer(), nullable=True),
    sa.Column('npix', sa.Integer(), nullable=True),
    sa.Column('mean', FLOAT, nullable=True),
    sa.Column('stdev', FLOAT, nullable=True),
    sa.Column('median', FLOAT, nullable=True),
    sa.Column('sky', FLOAT, nullable=True),
    sa.Column('sky_spread', FLOAT, nullable=True),
    sa.Column('width', sa.Integer(), nullable=True),
    sa.Column('height', sa.Integer(), nullable=True),
    sa.Column('dtime_cam', FLOAT, nullable=True),
    sa.ForeignKeyConstraint(['exp_id'], ['exposure.exp_id'], name=op.f('fk_cam_result_exp_id_exposure')),
    sa.ForeignKeyConstraint(['remote_id'], ['remote_run.remote_id'], name=op.f('fk_cam_result_remote_id_remote_run')),
    sa.PrimaryKeyConstraint('exp_id', name=op.f('pk_cam_result')),
    **MYSQL_TABLE,
    )
    op.create_table('stack',
    sa.Column('stack_id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('skycell_id', sa.Integer(), nullable=False),
    sa.Column('filter', sa.String(length=16), nullable=False),
    sa.Column('n_inputs', sa.Integer(), nullable=False),
    sa.Column('inputs_key', sa.String(length=64), nullable=False),
    sa.Column('created', sa.DateTime(), server_default=sa.text('(CURRENT_TIMESTAMP)'), nullable=False),
    sa.ForeignKeyConstraint(['skycell_id'], ['skycell.skycell_id'], name=op.f('fk_stack_skycell_id_skycell')),
    sa.PrimaryKeyConstraint('stack_id', name=op.f('pk_stack')),
    sa.UniqueConstraint('skycell_id', 'filter', 'inputs_key', name='uq_stack_skycell_inputs'),
    **MYSQL_TABLE,
    )
    with op.batch_alter_table('stack', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_stack_skycell_id'), ['skycell_id'], unique=False)

    op.create_table('warp',
    sa.Column('warp_id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('exp_id', sa.Integer(), nullable=False),
    sa.Column('skycell_id', sa.Integer(), nullable=False),
    sa.Column('overlap', FLOAT, nullable=False),
    sa.Column('created', sa.DateTime(), server_default=sa.text('(CURRENT_TIMESTAMP)'), nullable=False),
    sa.ForeignKeyConstraint(['exp_id'], ['exposure.exp_id'], name=op.f('fk_warp_exp_id_exposure')),
    sa.ForeignKeyConstraint(['skycell_id'], ['skycell.skycell_id'], name=op.f('fk_warp_skycell_id_skycell')),
    sa.PrimaryKeyConstraint('warp_id', name=op.f('pk_warp')),
    sa.UniqueConstraint('exp_id', 'skycell_id', name='uq_warp_exposure_skycell'),
    **MYSQL_TABLE,
    )
    with op.batch_alter_table('warp', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_warp_exp_id'), ['exp_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_warp_skycell_id'), ['skycell_id'], unique=False)

    op.create_table('stack_input',
    sa.Column('stack_id', sa.Integer(), nullable=False),
    sa.Column('warp_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['stack_id'], ['stack.stack_id'], name=op.f('fk_stack_input_stack_id_stack'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['warp_id'], ['warp.warp_id'], name=op.f('fk_stack_input_warp_id_warp')),
    sa.PrimaryKeyConstraint('stack_id', 'warp_id', name=op.f('pk_stack_input')),
    **MYSQL_TABLE,
    )
    op.create_table('stack_result',
    sa.Column('stack_id', sa.Integer(), nullable=False),
    sa.Column('remote_id', sa.Integer(), nullable=False),
    sa.Column('image_uri', sa.String(length=1024), nullable=True),
    sa.Column('stats_uri', sa.String(length=1024), nullable=True),
    sa.Column('n_inputs', sa.Integer(), nullable=True),
    sa.Column('npix', sa.Integer(), nullable=True),
    sa.Column('coverage', FLOAT, nullable=True),
    sa.Column('depth', FLOAT, nullable=True),
    sa.Column('mean', FLOAT, nullable=True),
    sa.Column('stdev', FLOAT, nullable=True),
    sa.Column('median', FLOAT, nullable=True),
    sa.Column('dtime_stack', FLOAT, nullable=True),
    sa.ForeignKeyConstraint(['remote_id'], ['remote_run.remote_id'], name=op.f('fk_stack_result_remote_id_remote_run')),
    sa.ForeignKeyConstraint(['stack_id'], ['stack.stack_id'], name=op.f('fk_stack_result_stack_id_stack')),
    sa.PrimaryKeyConstraint('stack_id', name=op.f('pk_stack_result')),
    **MYSQL_TABLE,
    )
    op.create_table('warp_result',
    sa.Column('warp_id', sa.Integer(), nullable=False),
    sa.Column('remote_id', sa.Integer(), nullable=False),
    sa.Column('image_uri', sa.String(length=1024), nullable=True),
    sa.Column('stats_uri', sa.String(length=1024), nullable=True),
    sa.Column('npix', sa.Integer(), nullable=True),
    sa.Column('coverage', FLOAT, nullable=True),
    sa.Column('mean', FLOAT, nullable=True),
    sa.Column('stdev', FLOAT, nullable=True),
    sa.Column('median', FLOAT, nullable=True),
    sa.Column('dtime_warp', FLOAT, nullable=True),
    sa.ForeignKeyConstraint(['remote_id'], ['remote_run.remote_id'], name=op.f('fk_warp_result_remote_id_remote_run')),
    sa.ForeignKeyConstraint(['warp_id'], ['warp.warp_id'], name=op.f('fk_warp_result_warp_id_warp')),
    sa.PrimaryKeyConstraint('warp_id', name=op.f('pk_warp_result')),
    **MYSQL_TABLE,
    )
    with op.batch_alter_table('chip_result', schema=None) as batch_op:
        batch_op.add_column(sa.Column('binned_uri', sa.String(length=1024), nullable=True))

    with op.batch_alter_table('exposure', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ra_deg', FLOAT, nullable=True))
        batch_op.add_column(sa.Column('dec_deg', FLOAT, nullable=True))
        batch_op.add_column(sa.Column('rot_deg', FLOAT, nullable=True))

    with op.batch_alter_table('remote_run', schema=None) as batch_op:
        batch_op.add_column(sa.Column('advanced', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column('advance_note', sa.String(length=2000), nullable=True))

    # runs that were full before advance existed are not advanced behind the operator's back
    remote_run = sa.table('remote_run', sa.column('state', sa.String), sa.column('advanced', sa.Boolean),
                          sa.column('advance_note', sa.String))
    op.execute(
        remote_run.update().where(remote_run.c.state == 'full').values(
            advanced=True, advance_note='full before advance existed: `scbundle advance --remote-id N` examines it'
        )
    )



def downgrade() -> None:
    with op.batch_alter_table('remote_run', schema=None) as batch_op:
        batch_op.drop_column('advance_note')
        batch_op.drop_column('advanced')

    with op.batch_alter_table('exposure', schema=None) as batch_op:
        batch_op.drop_column('rot_deg')
        batch_op.drop_column('dec_deg')
        batch_op.drop_column('ra_deg')

    with op.batch_alter_table('chip_result', schema=None) as batch_op:
        batch_op.drop_column('binned_uri')

    op.drop_table('warp_result')
    op.drop_table('stack_result')
    op.drop_table('stack_input')
    with op.batch_alter_table('warp', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_warp_skycell_id'))
        batch_op.drop_index(batch_op.f('ix_warp_exp_id'))

    op.drop_table('warp')
    with op.batch_alter_table('stack', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_stack_skycell_id'))

    op.drop_table('stack')
    op.drop_table('cam_result')
    with op.batch_alter_table('advance_block', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_advance_block_remote_id'))

    op.drop_table('advance_block')
    op.drop_table('skycell')
