"""proxy predictions per pool item; Label Studio link and task mapping

Revision ID: 0003
Revises: 0002
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
import app.db.base

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('label_studio_link',
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('ls_project', sa.String(length=200), nullable=True),
    sa.Column('hostname', sa.String(length=2048), nullable=True),
    sa.Column('access_token', sa.Text(), nullable=True),
    sa.Column('label_config', sa.Text(), nullable=False),
    sa.Column('updated_at', app.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], name=op.f('fk_label_studio_link_project_id_project'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('project_id', name=op.f('pk_label_studio_link'))
    )
    op.create_table('label_studio_task',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('task_id', sa.BigInteger(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('created_at', app.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['item.id'], name=op.f('fk_label_studio_task_item_id_item'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], name=op.f('fk_label_studio_task_project_id_project'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_label_studio_task')),
    sa.UniqueConstraint('project_id', 'task_id', name=op.f('uq_label_studio_task_project_id_task_id'))
    )
    with op.batch_alter_table('label_studio_task', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_label_studio_task_item_id'), ['item_id'], unique=False)

    op.create_table('prediction',
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('round_index', sa.Integer(), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('class_index', sa.Integer(), nullable=False),
    sa.Column('confidence', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['item.id'], name=op.f('fk_prediction_item_id_item'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], name=op.f('fk_prediction_project_id_project'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('project_id', 'round_index', 'item_id', name=op.f('pk_prediction'))
    )


def downgrade() -> None:
    op.drop_table('prediction')
    with op.batch_alter_table('label_studio_task', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_label_studio_task_item_id'))

    op.drop_table('label_studio_task')
    op.drop_table('label_studio_link')
