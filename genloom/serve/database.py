"""The server's storage: SQLAlchemy tables, Alembic migrations, API keys, history, jobs, files, usage.

SQLite under the data directory by default (WAL mode, so readers never wait for the writer); any
SQLAlchemy URL otherwise (PostgreSQL in CI, and for several server replicas and job workers on one database).
The schema is owned by Alembic: a server's `Database(...)` upgrades the database to the newest revision on
open, one process at a time (a PostgreSQL advisory lock, a lock file beside a SQLite file), so replicas may
start together; a job worker's (`migrate=False`) only checks that the schema is the one it knows. API keys are random 256-bit secrets; only their SHA-256 is
stored (a salted slow hash buys nothing for secrets of that entropy) and checks use hmac.compare_digest.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import secrets
import uuid
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    and_,
    create_engine,
    event,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
from sqlalchemy.pool import NullPool

from genloom.errors import GenloomError
from genloom.files import atomic_write_bytes, locked

KEY_PREFIX = "gl-"
MIGRATION_LOCK = 0x67656E6C6F6F6D  # "genloom": the PostgreSQL advisory lock held while one process migrates
JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)  # naive UTC: the same on SQLite and PostgreSQL


def new_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:24]}"


class Base(DeclarativeBase):
    pass


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16), index=True)  # shown in listings: gl-abcd1234
    key_hash: Mapped[str] = mapped_column(String(64))  # sha256 hex of the whole secret
    rate_limit: Mapped[int] = mapped_column(Integer, default=0)  # requests per minute; 0: unlimited
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class Request(Base):
    """One served request and its output: the history the web UI's gallery shows."""

    __tablename__ = "requests"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    route: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(200))
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    output: Mapped[dict] = mapped_column(JSON, default=dict)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[int] = mapped_column(Integer, default=200)
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now, index=True)


class File(Base):
    __tablename__ = "files"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    filename: Mapped[str] = mapped_column(String(255))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)  # relative to the data directory's files/ folder
    meta: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    model: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    config: Mapped[dict] = mapped_column(JSON, default=dict)
    training_file: Mapped[str | None] = mapped_column(String(40), nullable=True)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    # the lease: the worker training the job ("host:pid:random") and when its claim runs out unless renewed
    worker_id: Mapped[str | None] = mapped_column(String(80), nullable=True)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class JobEvent(Base):
    __tablename__ = "job_events"
    __table_args__ = (Index("uq_job_events_job_id_key", "job_id", "key", unique=True),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now)
    level: Mapped[str] = mapped_column(String(8), default="info")
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict] = mapped_column(JSON, default=dict)
    key: Mapped[str | None] = mapped_column(String(64), nullable=True)  # "step:40": written once per job


class Usage(Base):
    """Per key and day: requests, tokens in and out, images."""

    __tablename__ = "usage"
    key_id: Mapped[str] = mapped_column(String(40), primary_key=True)  # "" for unauthenticated use
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD (UTC)
    requests: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    images: Mapped[int] = mapped_column(Integer, default=0)


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def database_url(url: str | None, data_dir: str | Path) -> str:
    if url:
        return url
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(data_dir).resolve() / 'genloom.db'}"


def redacted(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return "<unparsable URL>"


def _alembic_config(url: str):
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The newest schema revision this genloom knows."""
    return ScriptDirectory.from_config(_alembic_config("sqlite://")).get_current_head()


def schema_revision(url: str) -> str | None:
    """The database's schema revision (None: no genloom schema, or no SQLite file at all); never creates one."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and not Path(parsed.database).exists():
        return None
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


@contextlib.contextmanager
def _sqlite_file_lock(url: str):
    """For a SQLite file: an exclusive lock file beside it (PostgreSQL's advisory lock does the same there)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        yield
        return
    with locked(f"{parsed.database}.migrate-lock"):
        yield


def migrate(url: str) -> None:
    """Bring the schema to Alembic's head revision (the migrations live beside this module), one process at
    a time: of servers starting together one migrates, the others then find it done."""
    cfg = _alembic_config(url)
    engine = create_engine(url, poolclass=NullPool)
    try:
        with _sqlite_file_lock(url), engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")  # released at commit
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    finally:
        engine.dispose()


def check_schema(url: str, safe_url: str) -> None:
    """A GenloomError unless the database's schema is this genloom's newest (job workers never migrate)."""
    have, want = schema_revision(url), head_revision()
    if have != want:
        found = f"schema revision {have}" if have else "no genloom schema"
        raise GenloomError(f"database {safe_url} has {found}, this genloom needs revision {want}: a worker never "
                           "migrates a database; start `genloom serve` on it once (the server creates and upgrades "
                           "the schema), then the workers")


class Database:
    """One handle on the database: open (and migrate) once at startup, share across requests."""

    def __init__(self, url: str | None = None, data_dir: str | Path = "genloom-data", *, upgrade: bool = True):
        """`upgrade`: migrate the schema to the newest revision (a server); else require it (a job worker)."""
        self.data_dir = Path(data_dir)
        self.url = database_url(url, data_dir)
        try:
            if upgrade:
                migrate(self.url)
            else:
                check_schema(self.url, self.safe_url)
            self.engine = create_engine(self.url, pool_pre_ping=True)
        except GenloomError:
            raise
        except Exception as e:  # noqa: BLE001 - a bad URL or an unreachable server is the user's to fix
            raise GenloomError(f"cannot open database {self.safe_url}: {str(e).splitlines()[0]}") from None
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.session = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def safe_url(self) -> str:
        return redacted(self.url)

    def close(self) -> None:
        self.engine.dispose()

    # ---- API keys --------------------------------------------------------------------------------
    def create_key(self, name: str, rate_limit: int = 0) -> tuple[ApiKey, str]:
        """A new key; the secret is returned once and never stored."""
        if rate_limit < 0:
            raise GenloomError(f"rate limit must be >= 0 requests per minute, got {rate_limit}")
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(id=new_id("key"), name=name, prefix=secret[:11], key_hash=hash_key(secret), rate_limit=rate_limit)
        with self.session.begin() as s:
            s.add(key)
        return key, secret

    def list_keys(self) -> list[ApiKey]:
        with self.session() as s:
            return list(s.scalars(select(ApiKey).order_by(ApiKey.created_at)))

    def get_key(self, ident: str) -> ApiKey:
        """A key by id or prefix."""
        with self.session() as s:
            return self._find_key(s, ident)

    def revoke_key(self, ident: str) -> ApiKey:
        with self.session.begin() as s:
            key = self._find_key(s, ident)
            key.revoked_at = key.revoked_at or now()
            return key

    @staticmethod
    def _find_key(s, ident: str) -> ApiKey:
        key = s.get(ApiKey, ident) or s.scalars(select(ApiKey).where(ApiKey.prefix == ident)).first()
        if key is None:
            raise GenloomError(f"no API key '{ident}'; `genloom keys list` shows the ids and prefixes")
        return key

    def revoke_all_keys(self) -> list[ApiKey]:
        """Revoke every active key (the server returns to open mode); returns the keys revoked now."""
        with self.session.begin() as s:
            keys = list(s.scalars(select(ApiKey).where(ApiKey.revoked_at.is_(None))))
            for key in keys:
                key.revoked_at = now()
            return keys

    def count_active_keys(self) -> int:
        """Keys not revoked: while there is none the server is in open mode and serves anyone."""
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.revoked_at.is_(None)))

    def verify_key(self, secret: str) -> ApiKey | None:
        """The active key matching `secret`, compared in constant time, or None."""
        if not secret or not secret.startswith(KEY_PREFIX):
            return None
        digest = hash_key(secret)
        with self.session.begin() as s:
            for key in s.scalars(select(ApiKey).where(ApiKey.prefix == secret[:11])):
                if hmac.compare_digest(key.key_hash, digest) and key.revoked_at is None:
                    key.last_used_at = now()
                    return key
        return None

    # ---- history and usage -----------------------------------------------------------------------
    def log_request(self, *, route: str, model: str, params: dict, output: dict, key_id: str | None = None,
                    prompt_tokens: int = 0, completion_tokens: int = 0, images: int = 0, status: int = 200,
                    latency_ms: int = 0) -> str:
        """One history row and the day's usage counters of its key, in one transaction. The counters are
        incremented in the database (`SET requests = requests + 1`), never read and written back, so replicas
        and threads logging at once lose no count; two creating the day's row at once: the loser retries."""
        rid, day = new_id("req"), now().strftime("%Y-%m-%d")
        add = {"requests": 1, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "images": images}
        for attempt in range(3):
            try:
                with self.session.begin() as s:
                    s.add(Request(id=rid, key_id=key_id, route=route, model=model, params=params, output=output,
                                  prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, status=status,
                                  latency_ms=latency_ms))
                    res = s.execute(update(Usage).where(Usage.key_id == (key_id or ""), Usage.day == day)
                                    .values({getattr(Usage, k): getattr(Usage, k) + v for k, v in add.items()})
                                    .execution_options(synchronize_session=False))
                    if res.rowcount == 0:
                        s.add(Usage(key_id=key_id or "", day=day, **add))
                return rid
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def history(self, limit: int = 50, route: str | None = None) -> list[Request]:
        with self.session() as s:
            q = select(Request).order_by(Request.created_at.desc()).limit(limit)
            if route:
                q = q.where(Request.route == route)
            return list(s.scalars(q))

    def usage(self, key_id: str | None = None) -> list[Usage]:
        with self.session() as s:
            q = select(Usage).order_by(Usage.day)
            if key_id is not None:
                q = q.where(Usage.key_id == key_id)
            return list(s.scalars(q))

    # ---- files -----------------------------------------------------------------------------------
    def files_dir(self) -> Path:
        d = self.data_dir / "files"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def add_file(self, filename: str, data: bytes, purpose: str, meta: dict | None = None) -> File:
        """Store bytes under files/<id><suffix> (the user's name is kept only as metadata, never as a path)."""
        fid = new_id("file")
        suffix = "".join(c for c in Path(filename).suffix.lower() if c.isalnum() or c == ".")[:10]
        rel = fid + suffix
        atomic_write_bytes(self.files_dir() / rel, data)
        rec = File(id=fid, filename=Path(filename).name[:255], purpose=purpose, bytes=len(data), path=rel,
                   meta=meta or {})
        with self.session.begin() as s:
            s.add(rec)
        return rec

    def get_file(self, fid: str) -> File | None:
        with self.session() as s:
            return s.get(File, fid)

    def file_path(self, rec: File) -> Path:
        """The file's path, checked to stay inside the files folder."""
        root = self.files_dir().resolve()
        p = (root / rec.path).resolve()
        if root not in p.parents:
            raise GenloomError(f"file {rec.id} points outside the files folder")
        return p

    # ---- jobs ------------------------------------------------------------------------------------
    def create_job(self, model: str, config: dict, training_file: str | None = None) -> Job:
        job = Job(id=new_id("ftjob"), model=model, config=config, training_file=training_file, status="queued")
        with self.session.begin() as s:
            s.add(job)
            s.add(JobEvent(job_id=job.id, message="job queued", data={}))
        return job

    def get_job(self, jid: str) -> Job | None:
        with self.session() as s:
            return s.get(Job, jid)

    def list_jobs(self, limit: int = 20) -> list[Job]:
        with self.session() as s:
            return list(s.scalars(select(Job).order_by(Job.created_at.desc()).limit(limit)))

    def set_job(self, jid: str, status: str, **fields) -> Job:
        if status not in JOB_STATES:
            raise GenloomError(f"unknown job status '{status}'; choose one of {', '.join(JOB_STATES)}")
        with self.session.begin() as s:
            job = s.get(Job, jid)
            if job is None:
                raise GenloomError(f"no job '{jid}'")
            job.status = status
            if status == "running" and job.started_at is None:
                job.started_at = now()
            if status in ("succeeded", "failed", "cancelled"):
                job.finished_at = now()
            for k, v in fields.items():
                setattr(job, k, v)
            return job

    def cancel_job(self, jid: str) -> Job | None:
        """Cancel a queued or running job: one conditional UPDATE with its event, so a job that ended meanwhile
        stays as it ended. Its worker, in whatever process or machine, sees the status at its next logged step
        or lease renewal and stops. None when the job had already ended (or does not exist)."""
        with self.session.begin() as s:
            res = s.execute(update(Job).where(Job.id == jid, Job.status.in_(("queued", "running")))
                            .values(status="cancelled", finished_at=now())
                            .execution_options(synchronize_session=False))
            if res.rowcount != 1:
                return None
            s.add(JobEvent(job_id=jid, message="cancel requested", data={}))
        return self.get_job(jid)

    def add_event(self, jid: str, message: str, data: dict | None = None, level: str = "info",
                  key: str | None = None) -> bool:
        """Append an event; one with a `key` ("step:40") is written once per job, so a resumed job that
        redoes a step records it only once. Returns whether it was written."""
        try:
            with self.session.begin() as s:
                s.add(JobEvent(job_id=jid, message=message, data=json.loads(json.dumps(data or {})), level=level,
                               key=key))
        except IntegrityError:
            if key is None:
                raise
            return False
        return True

    def events(self, jid: str, after: int = 0, limit: int = 100) -> list[JobEvent]:
        with self.session() as s:
            q = select(JobEvent).where(JobEvent.job_id == jid, JobEvent.id > after).order_by(JobEvent.id).limit(limit)
            return list(s.scalars(q))

    def recover_jobs(self) -> list[str]:
        """At startup: a job left 'running' by a dead worker, its lease run out, goes back to the queue (its
        checkpoint resumes it). A job whose lease still runs belongs to a live worker (another server on the
        same database, or one about to notice its server is gone) and is left alone."""
        t = now()
        with self.session.begin() as s:
            stuck = list(s.scalars(select(Job).where(Job.status == "running", _lease_over(t))))
            for job in stuck:
                job.status, job.worker_id, job.lease_expires_at = "queued", None, None
                s.add(JobEvent(job_id=job.id, level="warning", message="server restarted: job re-queued, "
                               "it resumes from its last checkpoint", data={}))
            return [j.id for j in stuck]

    def next_queued_job(self) -> Job | None:
        with self.session() as s:
            return s.scalars(select(Job).where(Job.status == "queued").order_by(Job.created_at)).first()

    # ---- leases: exactly one worker trains a job -------------------------------------------------
    def claim_job(self, worker_id: str, lease_s: float) -> Job | None:
        """Take the oldest queued job, or a running one whose lease ran out, for `worker_id` until now + lease_s.

        One conditional UPDATE: it matches only while the job is still claimable, so of workers racing for a
        job exactly one wins (SQLite runs writes one at a time; PostgreSQL re-checks the WHERE on the row it
        waited for). On PostgreSQL the candidate is first locked with SELECT ... FOR UPDATE SKIP LOCKED, so
        the others take the next job instead of waiting (SQLite ignores the clause).
        """
        t = now()
        claimable = or_(Job.status == "queued", and_(Job.status == "running", _lease_over(t)))
        with self.session.begin() as s:
            row = s.execute(select(Job.id, Job.status, Job.worker_id).where(claimable)
                            .order_by(Job.created_at, Job.id).limit(1).with_for_update(skip_locked=True)).first()
            if row is None:
                return None
            won = s.execute(update(Job).where(Job.id == row.id, claimable).values(
                status="running", worker_id=worker_id, lease_expires_at=t + dt.timedelta(seconds=lease_s),
                started_at=func.coalesce(Job.started_at, t)).execution_options(synchronize_session=False))
            if won.rowcount != 1:
                return None
            if row.status == "running":
                s.add(JobEvent(job_id=row.id, level="warning", data={"worker": worker_id},
                               message=f"the lease of worker {row.worker_id} ran out: job taken over, it resumes "
                                       "from its last checkpoint"))
            return s.get(Job, row.id, populate_existing=True)

    def renew_lease(self, jid: str, worker_id: str, lease_s: float) -> bool:
        """Extend the lease of a job `worker_id` still holds; False once it lost it (taken over, cancelled, re-queued)."""
        with self.session.begin() as s:
            res = s.execute(update(Job).where(Job.id == jid, Job.worker_id == worker_id, Job.status == "running")
                            .values(lease_expires_at=now() + dt.timedelta(seconds=lease_s))
                            .execution_options(synchronize_session=False))
            return res.rowcount == 1

    def finish_job(self, jid: str, worker_id: str, status: str, message: str, data: dict | None = None,
                   level: str = "info", **fields) -> bool:
        """End a job `worker_id` holds (status and its event in one transaction); False, writing nothing,
        when it no longer holds it: a job ends once, by its one worker."""
        if status not in ("succeeded", "failed"):
            raise GenloomError(f"a worker ends a job as succeeded or failed, not '{status}'")
        t = now()
        with self.session.begin() as s:
            res = s.execute(update(Job).where(Job.id == jid, Job.worker_id == worker_id, Job.status == "running")
                            .values(status=status, finished_at=t, lease_expires_at=None, **fields)
                            .execution_options(synchronize_session=False))
            if res.rowcount != 1:
                return False
            s.add(JobEvent(job_id=jid, message=message, data=json.loads(json.dumps(data or {})), level=level,
                           key=status))
            return True

    def release_job(self, jid: str, worker_id: str, message: str) -> bool:
        """Give a job back to the queue (its worker is stopping); False when `worker_id` no longer holds it."""
        with self.session.begin() as s:
            res = s.execute(update(Job).where(Job.id == jid, Job.worker_id == worker_id, Job.status == "running")
                            .values(status="queued", worker_id=None, lease_expires_at=None)
                            .execution_options(synchronize_session=False))
            if res.rowcount != 1:
                return False
            s.add(JobEvent(job_id=jid, message=message, level="warning", data={}))
            return True


    def release_worker_jobs(self, worker_prefix: str, message: str) -> list[str]:
        """Back to the queue: the running jobs of a worker known dead (ids starting `worker_prefix`, host:pid:)."""
        with self.session.begin() as s:
            held = list(s.scalars(select(Job).where(Job.status == "running",
                                                    Job.worker_id.startswith(worker_prefix, autoescape=True))))
            for job in held:
                job.status, job.worker_id, job.lease_expires_at = "queued", None, None
                s.add(JobEvent(job_id=job.id, level="warning", message=message, data={}))
            return [j.id for j in held]

def _lease_over(t: dt.datetime):
    """A running job's lease has run out (or it never had one: a row from before leases)."""
    return or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < t)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()
