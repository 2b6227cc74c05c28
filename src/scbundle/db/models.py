"""SQLAlchemy 2 typed models: remoteRun / remoteComponent and the demo pipeline's tables."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    UniqueConstraint,
    false,
    func,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


#: a float column: double precision on every backend (MySQL's FLOAT is single precision: a time
#: in seconds since 1970 would keep about two minutes); SQLite and PostgreSQL get plain FLOAT
DOUBLE = Float().with_variant(mysql.DOUBLE(asdecimal=False), "mysql", "mariadb")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {float: DOUBLE}


class RemoteRun(Base):
    """One bundle: one stage, many components, one remote job."""

    __tablename__ = "remote_run"

    remote_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    stage: Mapped[str] = mapped_column(String(32))
    label: Mapped[str] = mapped_column(String(128), index=True)
    site: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), index=True)
    prev_state: Mapped[str | None] = mapped_column(String(16))  # where auth/error came from
    path_base: Mapped[str | None] = mapped_column(String(1024))
    job_id: Mapped[str | None] = mapped_column(String(64))
    job_name: Mapped[str | None] = mapped_column(String(128))
    # its directory on the site, as prepare gave it (None: a run made before installation ids,
    # whose directory is <permanent_root>/runs/<stage>.<remote_id>.a<attempt>)
    remote_dir: Mapped[str | None] = mapped_column(String(1024))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    last_poll: Mapped[datetime | None]
    fault: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str | None] = mapped_column(String(2000))
    job_policy: Mapped[str] = mapped_column(String(16), default="fatal")
    req_nodes: Mapped[int | None]
    req_seconds: Mapped[int | None]
    nranks: Mapped[int | None]
    req_cores: Mapped[int | None]  # cores allocated: req_nodes * cores_per_node
    cost_seconds: Mapped[float | None]  # per-command cost prepare used (configured or measured)
    cost_source: Mapped[str | None] = mapped_column(String(32))  # "configured" or "median of N"
    sched_state: Mapped[str | None] = mapped_column(String(64))  # the scheduler's own word, raw
    job_seconds: Mapped[float | None]  # wall seconds the job ran (its own start/end)
    busy_core_seconds: Mapped[float | None]  # its components' measured seconds x threads: the busy cores
    advanced: Mapped[bool] = mapped_column(default=False, server_default=false())  # advance examined it (full runs)
    advance_note: Mapped[str | None] = mapped_column(String(2000))  # what advance queued / found blocked
    created: Mapped[datetime] = mapped_column(server_default=func.current_timestamp())
    updated: Mapped[datetime] = mapped_column(server_default=func.current_timestamp(), onupdate=func.current_timestamp())

    components: Mapped[list[RemoteComponent]] = relationship(back_populates="run", order_by="RemoteComponent.id")


class RemoteComponent(Base):
    """One unit of work inside a run. A piece of stage work is in at most one run."""

    __tablename__ = "remote_component"
    __table_args__ = (UniqueConstraint("stage", "stage_id", name="uq_remote_component_stage_work"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    remote_id: Mapped[int] = mapped_column(ForeignKey("remote_run.remote_id", ondelete="CASCADE"), index=True)
    stage: Mapped[str] = mapped_column(String(32))
    stage_id: Mapped[int] = mapped_column(Integer)
    idx: Mapped[int | None]  # line number in the prepared bundle
    state: Mapped[str] = mapped_column(String(16))
    fault: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str | None] = mapped_column(String(2000))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    exit_code: Mapped[int | None]
    rank: Mapped[int | None]
    host: Mapped[str | None] = mapped_column(String(128))
    t_start: Mapped[float | None]
    t_end: Mapped[float | None]

    run: Mapped[RemoteRun] = relationship(back_populates="components")


Index("ix_remote_component_run_state", RemoteComponent.remote_id, RemoteComponent.state)


# --- the demo pipeline's own tables -------------------------------------------------------


class Exposure(Base):
    __tablename__ = "exposure"

    exp_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    exp_name: Mapped[str] = mapped_column(String(64), unique=True)
    filter: Mapped[str] = mapped_column(String(16))
    dateobs: Mapped[datetime]
    # pointing of the exposure's centre and its rotation on the sky (None: unknown, no warp)
    ra_deg: Mapped[float | None]
    dec_deg: Mapped[float | None]
    rot_deg: Mapped[float | None]


class Detrend(Base):
    __tablename__ = "detrend"

    det_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    filter: Mapped[str] = mapped_column(String(16))
    class_id: Mapped[str] = mapped_column(String(16))
    uri: Mapped[str] = mapped_column(String(1024))


class Imfile(Base):
    """One raw chip image: one piece of chip-stage work."""

    __tablename__ = "imfile"

    imfile_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    exp_id: Mapped[int] = mapped_column(ForeignKey("exposure.exp_id"), index=True)
    class_id: Mapped[str] = mapped_column(String(16))
    uri: Mapped[str] = mapped_column(String(1024))
    det_id: Mapped[int] = mapped_column(ForeignKey("detrend.det_id"))
    npix: Mapped[int] = mapped_column(Integer)

    exposure: Mapped[Exposure] = relationship()
    detrend: Mapped[Detrend] = relationship()


class ChipResult(Base):
    """The chip stage's result for one imfile, replayed from its dbinfo record."""

    __tablename__ = "chip_result"

    imfile_id: Mapped[int] = mapped_column(ForeignKey("imfile.imfile_id"), primary_key=True)
    remote_id: Mapped[int] = mapped_column(ForeignKey("remote_run.remote_id"))
    stats_uri: Mapped[str | None] = mapped_column(String(1024))
    processed_uri: Mapped[str | None] = mapped_column(String(1024))
    mean: Mapped[float | None]
    stdev: Mapped[float | None]
    median: Mapped[float | None]
    npix: Mapped[int | None]
    nsat: Mapped[int | None]
    bg_min: Mapped[float | None]
    bg_max: Mapped[float | None]
    dtime_chip: Mapped[float | None]
    binned_uri: Mapped[str | None] = mapped_column(String(1024))  # local: the 2x2-binned image (permanent)


class CamResult(Base):
    """The cam stage's result for one exposure: the mosaic of its chips (stage_id = exp_id)."""

    __tablename__ = "cam_result"

    exp_id: Mapped[int] = mapped_column(ForeignKey("exposure.exp_id"), primary_key=True)
    remote_id: Mapped[int] = mapped_column(ForeignKey("remote_run.remote_id"))
    mosaic_uri: Mapped[str | None] = mapped_column(String(1024))  # local paths of the permanent products
    stats_uri: Mapped[str | None] = mapped_column(String(1024))
    n_chips: Mapped[int | None]
    npix: Mapped[int | None]
    mean: Mapped[float | None]
    stdev: Mapped[float | None]
    median: Mapped[float | None]
    sky: Mapped[float | None]
    sky_spread: Mapped[float | None]
    width: Mapped[int | None]
    height: Mapped[int | None]
    dtime_cam: Mapped[float | None]


class Skycell(Base):
    """The sky-cell catalog: tiles of a projection cell's tangent plane (the warp/stack grid)."""

    __tablename__ = "skycell"

    skycell_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    tess: Mapped[str] = mapped_column(String(32))  # its projection cell
    proj_ra_deg: Mapped[float]  # the projection cell's tangent point
    proj_dec_deg: Mapped[float]
    scale_arcsec: Mapped[float]  # arcsec per pixel of the plane
    x0: Mapped[int]  # pixel origin and size in the plane
    y0: Mapped[int]
    width: Mapped[int]
    height: Mapped[int]


class Warp(Base):
    """One piece of warp work: an exposure onto a sky cell it overlaps (stage_id = warp_id)."""

    __tablename__ = "warp"
    __table_args__ = (UniqueConstraint("exp_id", "skycell_id", name="uq_warp_exposure_skycell"),)

    warp_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    exp_id: Mapped[int] = mapped_column(ForeignKey("exposure.exp_id"), index=True)
    skycell_id: Mapped[int] = mapped_column(ForeignKey("skycell.skycell_id"), index=True)
    overlap: Mapped[float]  # expected fraction of the sky cell the exposure covers
    created: Mapped[datetime] = mapped_column(server_default=func.current_timestamp())


class WarpResult(Base):
    __tablename__ = "warp_result"

    warp_id: Mapped[int] = mapped_column(ForeignKey("warp.warp_id"), primary_key=True)
    remote_id: Mapped[int] = mapped_column(ForeignKey("remote_run.remote_id"))
    image_uri: Mapped[str | None] = mapped_column(String(1024))
    stats_uri: Mapped[str | None] = mapped_column(String(1024))
    npix: Mapped[int | None]
    coverage: Mapped[float | None]
    mean: Mapped[float | None]
    stdev: Mapped[float | None]
    median: Mapped[float | None]
    dtime_warp: Mapped[float | None]


class Stack(Base):
    """One piece of stack work: a sky cell in one filter and the set of good warps it combines
    (stage_id = stack_id). The same set is stacked once; new warps make a new stack."""

    __tablename__ = "stack"
    __table_args__ = (UniqueConstraint("skycell_id", "filter", "inputs_key", name="uq_stack_skycell_inputs"),)

    stack_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    skycell_id: Mapped[int] = mapped_column(ForeignKey("skycell.skycell_id"), index=True)
    filter: Mapped[str] = mapped_column(String(16))
    n_inputs: Mapped[int]
    inputs_key: Mapped[str] = mapped_column(String(64))  # sha256 of the sorted warp_ids
    created: Mapped[datetime] = mapped_column(server_default=func.current_timestamp())


class StackInput(Base):
    __tablename__ = "stack_input"

    stack_id: Mapped[int] = mapped_column(ForeignKey("stack.stack_id", ondelete="CASCADE"), primary_key=True)
    warp_id: Mapped[int] = mapped_column(ForeignKey("warp.warp_id"), primary_key=True)


class StackResult(Base):
    __tablename__ = "stack_result"

    stack_id: Mapped[int] = mapped_column(ForeignKey("stack.stack_id"), primary_key=True)
    remote_id: Mapped[int] = mapped_column(ForeignKey("remote_run.remote_id"))
    image_uri: Mapped[str | None] = mapped_column(String(1024))
    stats_uri: Mapped[str | None] = mapped_column(String(1024))
    n_inputs: Mapped[int | None]
    npix: Mapped[int | None]
    coverage: Mapped[float | None]
    depth: Mapped[float | None]
    mean: Mapped[float | None]
    stdev: Mapped[float | None]
    median: Mapped[float | None]
    dtime_stack: Mapped[float | None]


class AdvanceBlock(Base):
    """A next-stage item that advance did not queue because an input failed for good, and
    why (`scbundle status` shows these under the run whose advance found them)."""

    __tablename__ = "advance_block"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    remote_id: Mapped[int] = mapped_column(ForeignKey("remote_run.remote_id", ondelete="CASCADE"), index=True)
    stage: Mapped[str] = mapped_column(String(32))  # the stage the item would have gone to
    item_id: Mapped[int] = mapped_column(Integer)  # its key: exp_id (cam, warp), skycell_id (stack)
    item: Mapped[str] = mapped_column(String(128))  # readable name, e.g. "exposure o5300g0003o"
    reason: Mapped[str] = mapped_column(String(1000))


class Installation(Base):
    """The database's identity: one row, a random id made by `scbundle db upgrade` (migration
    0005). Run directories and job names carry it, so no other database's runs are taken for
    this one's; a daemon stops when it reads another (or none)."""

    __tablename__ = "installation"

    installation_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created: Mapped[datetime] = mapped_column(server_default=func.current_timestamp())


# --- task switches and in-flight steps (the 12-hour maintenance waits on these) --------------


class TaskSwitch(Base):
    """`scbundle tasks off exec poll`: a switch exec, poll and the daemon honour."""

    __tablename__ = "task_switch"

    task: Mapped[str] = mapped_column(String(16), primary_key=True)
    enabled: Mapped[bool]
    changed: Mapped[datetime] = mapped_column(server_default=func.current_timestamp())
    changed_by: Mapped[str | None] = mapped_column(String(128))


class TaskActivity(Base):
    """A step in flight: exec or poll registers here while it works (`tasks wait` waits)."""

    __tablename__ = "task_activity"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task: Mapped[str] = mapped_column(String(16), index=True)
    host: Mapped[str] = mapped_column(String(128))
    pid: Mapped[int] = mapped_column(Integer)
    started: Mapped[datetime] = mapped_column(server_default=func.current_timestamp())


# --- the journal: what happened, one row an event (and the outbox of what is sent) ----------


class JournalEvent(Base):
    """One event: a run's state change (in the same transaction as the change), a run made
    (src None), a link's master started / stopped / found down / switched user, a task switch.
    ``id`` only grows: a reader (a notifier, the web page) remembers the last one it handled."""

    __tablename__ = "journal_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime]  # UTC
    kind: Mapped[str] = mapped_column(String(8))  # "run", "link", "task"
    command: Mapped[str] = mapped_column(String(16))  # define, prepare, exec, poll, advance, revert, retire, cancel, link, tasks
    daemon: Mapped[bool] = mapped_column(default=False, server_default=false())  # made by `scbundle daemon`
    remote_id: Mapped[int | None] = mapped_column(Integer)  # no foreign key: the journal outlives what it tells of
    label: Mapped[str | None] = mapped_column(String(128))
    stage: Mapped[str | None] = mapped_column(String(32))
    src: Mapped[str | None] = mapped_column(String(16))  # the state before (None: the run was made)
    dst: Mapped[str | None] = mapped_column(String(16))
    fault: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str | None] = mapped_column(String(2000))
    n_good: Mapped[int | None] = mapped_column(Integer)  # a poll's replay: components full
    n_failed: Mapped[int | None] = mapped_column(Integer)  # error
    n_abandoned: Mapped[int | None] = mapped_column(Integer)
    n_refused: Mapped[int | None] = mapped_column(Integer)  # what the job returned, refused
    site: Mapped[str | None] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(128))  # the process that made it
    pid: Mapped[int] = mapped_column(Integer)
    who: Mapped[str] = mapped_column(String(192))  # user@host


Index("ix_journal_event_remote_id", JournalEvent.remote_id, JournalEvent.id)
Index("ix_journal_event_label", JournalEvent.label, JournalEvent.id)
Index("ix_journal_event_at", JournalEvent.at)


class Notification(Base):
    """One message of the outbox to one address: an event derived from the journal (``kind``,
    anchored at the journal event ``event_id``) for one target (``target``: a digest of one rule's
    URL with its events and labels). The unique (kind, event_id, target) makes it sent once
    however many daemons derive it; a sender claims it (pending -> sending, compare-and-set)."""

    __tablename__ = "notification"
    __table_args__ = (UniqueConstraint("kind", "event_id", "target"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))  # stage_full, run_error, link_expiring, link_down, throttle_held
    event_id: Mapped[int] = mapped_column(Integer)  # the journal event it is derived from
    target: Mapped[str] = mapped_column(String(16))
    label: Mapped[str | None] = mapped_column(String(128))
    title: Mapped[str] = mapped_column(String(250))
    body: Mapped[str] = mapped_column(String(4000))
    state: Mapped[str] = mapped_column(String(16))  # pending, sending, sent, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_try: Mapped[datetime]  # UTC: not sent before
    claimed_at: Mapped[datetime | None]  # a sender's claim (a stale one is taken back)
    claimed_by: Mapped[str | None] = mapped_column(String(192))
    last_error: Mapped[str | None] = mapped_column(String(2000))
    created: Mapped[datetime]
    sent_at: Mapped[datetime | None]


Index("ix_notification_state", Notification.state, Notification.next_try)


# --- front ends in and out of service; each local host's link heartbeat (migration 0008) ----


class HostService(Base):
    """`scbundle link host off NAME`: a site's front end out of transfers and submission (its
    master untouched). No row: in service."""

    __tablename__ = "host_service"

    site: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    in_service: Mapped[bool]
    since: Mapped[datetime]  # UTC
    by: Mapped[str] = mapped_column(String(192))  # user@host
    why: Mapped[str | None] = mapped_column(String(500))


class LinkHeartbeat(Base):
    """One local host's last word on its master to one front end of a site: up or down, when."""

    __tablename__ = "link_heartbeat"

    local_host: Mapped[str] = mapped_column(String(128), primary_key=True)
    site: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    up: Mapped[bool]
    at: Mapped[datetime]  # UTC
    who: Mapped[str] = mapped_column(String(192))
