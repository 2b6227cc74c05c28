"""Configuration: one TOML file naming the database and the sites.

Looked up from ``--config``, then ``$SCBUNDLE_CONFIG``, then the user's config directory;
with none of them present, the embedded default is used: a ``local`` site and a SQLite
database under ``$SCBUNDLE_HOME`` (or the user's data directory).
"""

from __future__ import annotations

import os
import re
import socket
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from scbundle.core.errors import ConfigError
from scbundle.core.secrets import hide_password, shown

_WALLTIME = re.compile(r"^(?:(\d+)-)?(\d+):([0-5]\d):([0-5]\d)$")


def parse_walltime(text: str) -> int:
    """``[D-]HH:MM:SS`` to seconds."""
    m = _WALLTIME.match(text.strip())
    if not m:
        raise ValueError(f"walltime {text!r} is not [D-]HH:MM:SS")
    days, h, mi, s = (int(g) if g else 0 for g in m.groups())
    return ((days * 24 + h) * 60 + mi) * 60 + s


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(%|[KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(value: int | str) -> tuple[float, bool]:
    """A disk size: bytes (an integer), ``"50G"`` (K, M, G, T: powers of 1024), or ``"10%"`` of
    the disk. Returns (amount, is_percent): bytes, or the percentage."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"size {value} is negative")
        return float(value), False
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError(f"size {value!r} is not bytes, a number with K/M/G/T, or a percentage like '10%'")
    number, unit = float(m.group(1)), m.group(2).upper()
    if unit == "%":
        if number > 100:
            raise ValueError(f"size {value!r} is over 100%")
        return number, True
    return number * _UNITS[unit], False


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _absolute_posix(value: str) -> str:
    value = os.path.expanduser(value)
    if not PurePosixPath(value).is_absolute():
        raise ValueError(f"{value!r} must be an absolute path")
    return str(PurePosixPath(value))


class PathRule(_Strict):
    """Translate a local path prefix to the remote one (and back, for products)."""

    local: str
    remote: str

    _abs = field_validator("local", "remote")(classmethod(lambda cls, v: _absolute_posix(v)))


class SshUser(_Strict):
    """Another person's ssh settings on the same site (``scbundle link switch-user``)."""

    identity: str | None = None
    bastion_user: str | None = None
    bastion_identity: str | None = None


# A socket's path has 108 bytes on Linux (sun_path, with its NUL); ssh first binds the master's
# at "<ControlPath>.<16 random characters>" and then links it into place: ~90 bytes are left.
SOCKET_PATH_LIMIT = 90
CONTROL_NAME = "%l-%C"  # the local host's name (several local hosts on one NFS home), then the hash


def control_path(control_dir: str, hostname: str | None = None) -> str:
    """The ControlPath of a site's masters as this local host expands it: ``%l`` is
    gethostname(), ``%C`` 40 hex characters (a hash of %l%h%p%r)."""
    host = hostname if hostname is not None else socket.gethostname()
    return f"{control_dir}/{host}-{'c' * 40}"


def control_path_problem(control_dir: str, hostname: str | None = None) -> str | None:
    """Why this control directory cannot hold the masters' sockets on this host, or None."""
    host = hostname if hostname is not None else socket.gethostname()
    n = len(control_path(control_dir, host).encode())
    if n <= SOCKET_PATH_LIMIT:
        return None
    return (f"{control_dir!r} is too long for a ControlPath socket: {control_dir}/{CONTROL_NAME} is {n} bytes on this host"
            f" ({host!r} for %l, 40 for %C), over the {SOCKET_PATH_LIMIT}-byte limit for a socket path (Linux);"
            " use a short directory such as ~/.scb or /tmp/scb-<you>")


class SharedLink(_Strict):
    """``[sites.NAME.ssh.shared]``: the masters belong to one local operator account and sit in
    its control directory, which the members of one local group may read (mode 2750, group
    ``group``): they ride the masters through a relay the operator's `link start` runs; only
    the operator starts, stops and renews them (docs: ops/RUNBOOK.md, "One link for a team")."""

    operator: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_.-]{0,31}$")]  # the local account that owns the masters
    group: Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_.-]{0,31}$")]  # the local group whose members ride them


class SshSettings(_Strict):
    """How to reach the front end: OpenSSH (a human-authenticated ControlMaster) or paramiko."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, validate_default=True)

    hosts: Annotated[list[str], Field(min_length=1)]
    user: str
    port: Annotated[int, Field(gt=0, lt=65536)] = 22
    bastion: str | None = None  # DMZ host; the front end is reached through it (ProxyJump)
    bastion_port: Annotated[int, Field(gt=0, lt=65536)] = 22
    bastion_user: str | None = None  # default: user
    identity: str | None = None
    bastion_identity: str | None = None
    known_hosts: str = "~/.ssh/known_hosts"
    # false is not "no checking": it is StrictHostKeyChecking accept-new on both hops (bastion and
    # front end), an unknown host key accepted and recorded without asking; `link check` says so
    strict_host_key_checking: bool = Field(
        True,
        description="true: StrictHostKeyChecking yes on both hops; false (link = \"ssh\"): accept-new on both hops (an unknown "
        "host key is accepted and recorded without asking, a changed one is still refused); link = \"paramiko\" always refuses an unknown key",
    )
    control_dir: str = "~/.scb"
    connect_timeout: Annotated[int, Field(gt=0)] = 10
    server_alive_interval: Annotated[int, Field(ge=0)] = 30
    max_sessions: Annotated[int, Field(gt=0, lt=10)] = 8  # below sshd's MaxSessions (default 10)
    users: dict[str, SshUser] = Field(default_factory=dict)
    shared: SharedLink | None = None  # one link for a team: the operator's masters, ridden by a local group

    @field_validator("control_dir")
    @classmethod
    def _short_control_dir(cls, v: str) -> str:
        path = os.path.expanduser(v)
        if not PurePosixPath(path).is_absolute() or any(c.isspace() or c in "'\"#%\\" for c in path):
            raise ValueError(f"{path!r} must be an absolute path without spaces, quotes, # or %")
        problem = control_path_problem(path)
        if problem:
            raise ValueError(problem)
        return path

    @model_validator(mode="before")
    @classmethod
    def _shared_dir_is_absolute(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("shared") is not None and str(data.get("control_dir", "~/.scb")).startswith("~"):
            raise ValueError("a shared link needs a control_dir that every member names the same way: an absolute path such as /tmp/scb-mu, not ~ (each member's own home)")
        return data

    @field_validator("known_hosts", "identity", "bastion_identity")
    @classmethod
    def _expand(cls, v: str | None) -> str | None:
        return os.path.expanduser(v) if v else v


class Site(_Strict):
    link: Literal["local", "ssh", "paramiko"] = "local"
    ssh: SshSettings | None = None
    scheduler: Literal["local", "slurm", "moab"] = "local"
    account: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.+-]{1,64}$")] | None = None  # #SBATCH --account / #MSUB -A
    partition: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.+-]{1,64}$")] | None = None  # #SBATCH --partition / #MSUB -q
    slurm_conf: str | None = None  # scheduler = "slurm": the slurm.conf its commands read (SLURM_CONF); unset: Slurm's own default or $SLURM_CONF
    remote_root: str
    permanent_root: str
    paths: list[PathRule] = Field(default_factory=list)
    cores_per_node: Annotated[int, Field(gt=0)] = 24
    max_nodes: Annotated[int, Field(gt=0)] = 1000
    fill_factor: Annotated[float, Field(gt=0, le=1)] = 0.8
    max_walltime: str = "12:00:00"
    python: str = "python3"
    drop_hours: Annotated[float, Field(gt=0)] = 12.0
    push_streams: Annotated[int, Field(gt=0, le=8)] = 2  # parallel tar streams for the missing inputs, per front end
    push_bundle_mb: Annotated[float, Field(gt=0)] = 100  # inputs packed into bundles of about this size, dealt over the front ends
    # throttles (the field notes' --nproc, --nprep, --spacelim); unset: no limit
    max_in_flight: Annotated[int, Field(gt=0)] | None = None  # most runs submitted and not yet back (state run); exec holds more back
    max_prepared: Annotated[int, Field(gt=0)] | None = None  # most runs prepared ahead for exec (state pending); prepare holds more back
    min_free_disk: int | str | None = None  # free space kept on the workdir's disk: bytes, "50G", "10%"; prepare holds back below it

    _abs = field_validator("remote_root", "permanent_root")(classmethod(lambda cls, v: _absolute_posix(v)))

    @field_validator("slurm_conf")
    @classmethod
    def _slurm_conf(cls, v: str | None) -> str | None:
        if v is not None and (not PurePosixPath(v).is_absolute() or any(c.isspace() or c in "'\"" for c in v)):
            raise ValueError(f"{v!r} must be an absolute path without spaces or quotes")
        return v

    @model_validator(mode="after")
    def _link_needs_ssh(self) -> Site:
        if self.link in ("ssh", "paramiko") and self.ssh is None:
            raise ValueError(f"link = {self.link!r} needs an [sites.<name>.ssh] table (hosts, user, ...)")
        return self

    @field_validator("min_free_disk")
    @classmethod
    def _size(cls, v: int | str | None) -> int | str | None:
        if v is not None:
            parse_size(v)
        return v

    @field_validator("max_walltime")
    @classmethod
    def _walltime(cls, v: str) -> str:
        if parse_walltime(v) <= 0:
            raise ValueError("max_walltime must be positive")
        return v

    @property
    def max_walltime_seconds(self) -> int:
        return parse_walltime(self.max_walltime)

    @property
    def roots(self) -> list[str]:
        return [self.remote_root, self.permanent_root]


class StageSettings(_Strict):
    """A [stages.NAME] table: the engine's keys, and the stage's own (a plugin declares them:
    ``Stage.settings_model``; scbundle.stages.registry.check_config validates them, naming any
    key neither knows)."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    threads: Annotated[int, Field(gt=0)] | None = None
    cost_seconds: Annotated[float, Field(gt=0)] | None = None
    job_policy: Literal["fatal", "ignore"] = "fatal"
    attempts: Annotated[int, Field(gt=0, le=10)] = 2  # tries of a failing command inside one job
    command_timeout: Annotated[float, Field(gt=0)] | None = None  # seconds; a command past it is stopped (fault 6)
    # the largest permanent product poll accepts back (bytes); unset: the stage's own
    max_product_bytes: Annotated[int, Field(gt=0)] | None = None
    # prepare uses the median measured seconds of the stage's recent components once there
    # are this many (0: always the configured cost_seconds)
    measured_cost_min: Annotated[int, Field(ge=0)] = 20
    # the stage `scbundle advance` queues after this one; unset: the stage's own (chip -> cam ->
    # warp -> stack); "" ends the pipeline here
    next_stage: str | None = None
    # the stage's exit codes as faults, e.g. {"1" = 5, "137" = 2} (unset: the stage's own map;
    # codes it does not name are 1, unknown), and the faults tried again inside the job
    # (unset: the stage's own, by default 2 and 6)
    fault_map: dict[str, int] | None = None
    retry_faults: list[int] | None = None

    @field_validator("fault_map")
    @classmethod
    def _fault_map(cls, v: dict[str, int] | None) -> dict[str, int] | None:
        for code, fault in (v or {}).items():
            if not re.fullmatch(r"-?\d{1,4}", code.strip()):
                raise ValueError(f"exit code {code!r} is not an integer")
            if not 1 <= fault <= 6:
                raise ValueError(f"exit code {code} maps to fault {fault}: faults are 1-6")
        return v

    @field_validator("retry_faults")
    @classmethod
    def _retry_faults(cls, v: list[int] | None) -> list[int] | None:
        bad = [f for f in v or [] if not 1 <= f <= 6]
        if bad:
            raise ValueError(f"faults {bad} are not 1-6")
        return v


class DaemonSettings(_Strict):
    loop_seconds: Annotated[float, Field(gt=0)] = 60.0  # pause between passes
    poll_seconds: Annotated[float, Field(ge=0)] = 3600.0  # poll a run only when last_poll is older
    prepare: bool = True
    label: str | None = None  # only runs of this label


#: what a notification rule may ask for (docs/notifications.md)
NOTIFY_EVENTS = ("stage_full", "run_error", "link_expiring", "link_down", "throttle_held")


class NotifyRule(_Strict):
    """Where to send which events: Apprise URLs, the events (all when omitted), the labels
    (every label when omitted; an event of no label, a link's, goes to rules without labels)."""

    urls: Annotated[list[str], Field(min_length=1)]
    events: list[Literal["stage_full", "run_error", "link_expiring", "link_down", "throttle_held"]] = list(NOTIFY_EVENTS)
    labels: list[str] | None = None

    @field_validator("urls")
    @classmethod
    def _urls_have_a_scheme(cls, v: list[str]) -> list[str]:
        for url in v:
            if "://" not in url:
                raise ValueError("an Apprise URL is scheme://..., e.g. mailtos://user:pass@host or json://host/path")
        return v


class NotifySettings(_Strict):
    """``[notify]``: the rules, and when the derived events are due."""

    rules: list[NotifyRule] = Field(default_factory=list)
    web_url: str | None = None  # the web console's address: a run error's message links the run page
    link_warn_minutes: Annotated[float, Field(gt=0)] = 60.0  # "the link drops within the hour"
    throttle_minutes: Annotated[float, Field(gt=0)] = 60.0  # work held back longer than this
    lookback_hours: Annotated[float, Field(gt=0)] = 24.0  # a daemon starting looks this far back in the journal
    retry_seconds: Annotated[float, Field(gt=0)] = 60.0  # first retry of a failed send; doubles each time
    max_attempts: Annotated[int, Field(ge=1)] = 10  # then the notification is failed (`notify status`)


_WEB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
WEB_TOKEN_MIN = 16  # characters: a token is a password a script sends; a short one is guessed


def check_web_token(v: str) -> str:
    if len(v) < WEB_TOKEN_MIN or v != v.strip():
        raise ValueError(f"a web token needs at least {WEB_TOKEN_MIN} characters and no surrounding spaces")
    return v


class WebUser(_Strict):
    """A person or script with a token of its own (``[web.users.NAME]``): a reader sees the
    pages and the API, an operator may also act (revert, task switches, cancel)."""

    token: str
    role: Literal["reader", "operator"] = "reader"

    _token = field_validator("token")(classmethod(lambda cls, v: check_web_token(v)))


class WebSettings(_Strict):
    """`scbundle web`: ``token`` is the operator token (``$SCBUNDLE_WEB_TOKEN`` takes its place
    when set); ``users`` name readers and operators with tokens of their own."""

    token: str | None = None
    users: dict[str, WebUser] = Field(default_factory=dict)

    @field_validator("token")
    @classmethod
    def _token(cls, v: str | None) -> str | None:
        return None if v is None else check_web_token(v)

    @model_validator(mode="after")
    def _names_and_tokens(self) -> WebSettings:
        bad = [n for n in self.users if not _WEB_NAME.match(n)]
        if bad:
            raise ValueError(f"web user names are letters, digits and _.@- (at most 64): {bad!r} is not")
        tokens = [u.token for u in self.users.values()] + ([self.token] if self.token else [])
        if len(set(tokens)) != len(tokens):
            raise ValueError("two web users share a token: each needs its own (the journal names who acted by it)")
        return self


class LocalSettings(_Strict):
    """This local host, when several share one database (PostgreSQL, MariaDB)."""

    host: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.@:+-]{1,128}$")] | None = None  # its name in the database; $SCBUNDLE_HOST first, then the hostname
    heartbeat_fresh_seconds: Annotated[float, Field(gt=0)] = 300.0  # a link heartbeat older than this says nothing


def local_host_name(settings: LocalSettings | None = None) -> str:
    """This local host's identity in the database: $SCBUNDLE_HOST, else ``[local] host``, else
    the hostname (two "hosts" on one machine differ by the first two)."""
    name = os.environ.get("SCBUNDLE_HOST") or (settings.host if settings else None) or socket.gethostname()
    return name[:128]


class Config(_Strict):
    database: str
    workdir: str
    default_site: str = "local"
    sites: dict[str, Site]
    stages: dict[str, StageSettings] = Field(default_factory=dict)
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    web: WebSettings = Field(default_factory=WebSettings)
    local: LocalSettings = Field(default_factory=LocalSettings)
    source: str = "embedded default"

    _abs = field_validator("workdir")(classmethod(lambda cls, v: _absolute_posix(v)))

    @model_validator(mode="after")
    def _default_site_exists(self) -> Config:
        if self.default_site not in self.sites:
            raise ValueError(f"default_site {self.default_site!r} is not one of the sites: {sorted(self.sites)}")
        return self

    def site(self, name: str | None = None) -> Site:
        name = name or self.default_site
        try:
            return self.sites[name]
        except KeyError:
            raise ConfigError(f"no site named {name!r} in {self.source} (sites: {', '.join(sorted(self.sites))})") from None

    def stage_settings(self, stage: str) -> StageSettings:
        """The [stages.NAME] table (the engine's keys; the stage's own are in ``model_extra``)."""
        return self.stages.get(stage, StageSettings())


def scbundle_home() -> Path:
    return Path(os.environ.get("SCBUNDLE_HOME") or platformdirs.user_data_dir("scbundle"))


def default_config_path() -> Path:
    return Path(platformdirs.user_config_dir("scbundle")) / "config.toml"


def embedded_default(home: Path | None = None) -> dict:
    """The `local` site on this machine, SQLite, everything under one directory."""
    home = (home or scbundle_home()).absolute()
    site_root = home / "site-local"
    return {
        "database": f"sqlite:///{home / 'scbundle.db'}",
        "workdir": str(home / "work"),
        "default_site": "local",
        "sites": {
            "local": {
                "link": "local",
                "scheduler": "local",
                "remote_root": str(site_root / "scratch"),
                "permanent_root": str(site_root / "permanent"),
                "paths": [{"local": str(home / "data"), "remote": str(site_root / "scratch" / "data")}],
                "cores_per_node": max(1, os.cpu_count() or 1),
                "max_nodes": 1,
                "fill_factor": 0.8,
                "max_walltime": "12:00:00",
                "python": sys.executable or "python3",  # the "remote" side is this machine
            }
        },
        # the demo's chips are 64x64 pixels: ~0.05 s each, one thread; its later stages as small
        "stages": {
            "chip": {"threads": 1, "cost_seconds": 0.05},
            "cam": {"threads": 1, "cost_seconds": 0.1},
            "warp": {"threads": 1, "cost_seconds": 0.1},
            "stack": {"threads": 1, "cost_seconds": 0.2},
        },
    }


def format_validation(err: ValidationError, prefix: str = "") -> str:
    """pydantic's errors as one line, each naming its key (``prefix.`` before it)."""
    parts = []
    for e in err.errors():
        where = ".".join(str(p) for p in ([prefix] if prefix else []) + list(e["loc"])) or "(top level)"
        if e["type"] == "extra_forbidden":
            parts.append(f"unknown key {where!r}")
        elif e["type"] == "missing":
            parts.append(f"missing key {where!r}")
        else:
            msg = hide_password(e["msg"].removeprefix("Value error, "))
            key = next((p for p in reversed(e["loc"]) if isinstance(p, str)), None)
            got = shown(key, e.get("input"))  # a model-level error's input is the whole file: never shown
            parts.append(f"{where}: {msg}" + (f" (got {got})" if got is not None else ""))
    return "; ".join(parts)


def config_from_dict(data: dict, source: str) -> Config:
    try:
        config = Config.model_validate({**data, "source": source})
    except ValidationError as err:
        raise ConfigError(f"config {source}: {format_validation(err)}") from None
    return config


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Find and validate the configuration (see module docstring for the order)."""
    explicit = path or os.environ.get("SCBUNDLE_CONFIG")
    candidate = Path(explicit) if explicit else default_config_path()
    if not candidate.exists():
        if explicit:
            raise ConfigError(f"config file {candidate} does not exist")
        return config_from_dict(embedded_default(), "embedded default")
    try:
        data = tomllib.loads(candidate.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        line = err.object[: err.start].count(b"\n") + 1
        raise ConfigError(f"config {candidate}: not UTF-8 text (byte 0x{err.object[err.start]:02x} on line {line}); TOML files are UTF-8") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config {candidate}: not valid TOML: {err}") from None
    except OSError as err:
        raise ConfigError(f"config {candidate}: cannot read: {err.strerror}") from None
    if "source" in data:
        raise ConfigError(f"config {candidate}: unknown key 'source'")
    return config_from_dict(data, str(candidate))
