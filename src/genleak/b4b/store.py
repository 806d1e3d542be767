"""Per-user B4B state in a real database: API keys, bucket bitsets, transformation seeds, counters.

Why a database and not a dict: the defense is only as good as its memory. A stealer who could reset
their coverage by waiting for a restart, or lose bucket updates by sending requests in parallel,
would be charged for a narrow task while covering the whole space. So every request's bucket update
is one transaction that reads the user's bitset under a write lock, ORs the new bits in, and commits
before the answer leaves the server:

* SQLite (default, one file): the transaction starts with ``BEGIN IMMEDIATE`` (the write lock is
  taken up front, so two read-modify-write cycles never interleave), in WAL mode with
  ``synchronous=FULL`` so a committed update survives a killed process.
* PostgreSQL or any other SQLAlchemy URL: ``SELECT ... FOR UPDATE`` locks the user's row, so API
  replicas on several machines can share one state.

API keys are stored only as sha256 digests (keys are 256-bit random tokens, so a fast hash is
enough); the plain key is shown once, at creation.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import time
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genleak._extras import needs_extra
from genleak.b4b.config import POLICIES, TRANSFORM_KINDS, B4BConfig, config_diff
from genleak.errors import GenleakError

with needs_extra("serve"):
    from sqlalchemy import (
        BigInteger,
        Column,
        Float,
        Integer,
        LargeBinary,
        MetaData,
        String,
        Table,
        Text,
        create_engine,
        event,
        insert,
        inspect,
        select,
        update,
    )
    from sqlalchemy.engine import Connection, Engine, make_url
    from sqlalchemy.exc import ArgumentError, DatabaseError, IntegrityError, NoSuchModuleError
    from sqlalchemy.pool import StaticPool

KEY_PREFIX = "glb4b_"
SCHEMA_VERSION = "1"

metadata = MetaData()

users = Table(
    "b4b_users", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("key_hint", String(16), nullable=False),
    Column("policy", String(16), nullable=False),
    Column("static_sigma", Float, nullable=True),
    Column("seed", BigInteger, nullable=False),
    Column("transforms", Text, nullable=True),  # JSON list; NULL = the config's default
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
    Column("n_queries", BigInteger, nullable=False, default=0),
    Column("n_requests", BigInteger, nullable=False, default=0),
    Column("n_occupied", Integer, nullable=False, default=0),
    Column("buckets", LargeBinary, nullable=True),
    Column("updated_at", Float, nullable=True),
)

meta_table = Table(
    "b4b_meta", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)


@dataclass(frozen=True)
class UserRecord:
    """One API user as stored (never carries the plain API key)."""

    id: int
    name: str
    key_hint: str
    policy: str
    static_sigma: float | None
    seed: int
    transforms: tuple[str, ...] | None
    created_at: float
    revoked_at: float | None
    n_queries: int
    n_requests: int
    n_occupied: int
    buckets: bytes | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class QueryReceipt:
    """What the atomic update returns: the bitset after this batch, and where the batch sits."""

    bits: bytes
    first_query: int  # index of the batch's first query in the user's history (seeds the noise)
    n_queries: int  # total after this batch
    n_occupied: int


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def _popcount(bits: bytes) -> int:
    return sum(b.bit_count() for b in bits)


def _or(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "little") | int.from_bytes(b, "little")).to_bytes(len(a), "little")


def normalize_db_url(db: str) -> str:
    """Accept a SQLAlchemy URL or a plain file path (taken as a SQLite file)."""
    if "://" in db:
        return db
    return f"sqlite:///{Path(db).expanduser().resolve()}"


class StateStore:
    """SQLAlchemy-backed store of users and their B4B state; safe across threads, processes, replicas.

    Args:
        url: SQLAlchemy URL (``sqlite:///path.db``, ``postgresql+psycopg://...``) or a file path.
        sqlite_synchronous: SQLite ``PRAGMA synchronous``; FULL fsyncs every commit (survives power
            loss), NORMAL survives a killed process but not an OS crash.
        create: create the SQLite file and the tables if missing (the Python default); the CLI opens
            with ``create=False`` so a mistyped ``--db`` is an error, not a new empty database.
    """

    def __init__(self, url: str = "sqlite:///b4b.db", *, sqlite_synchronous: str = "FULL", create: bool = True) -> None:
        self.url = normalize_db_url(url)
        try:
            u = make_url(self.url)
        except ArgumentError as err:
            raise GenleakError(f"--db {url!r} is not a database URL or path ({err})") from err
        self.is_sqlite = u.get_backend_name() == "sqlite"
        if sqlite_synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise GenleakError(f"sqlite synchronous must be OFF, NORMAL, FULL or EXTRA, got {sqlite_synchronous!r}")
        init_hint = f"create it with `genleak b4b admin init --db {url}`"
        path = Path(u.database).expanduser() if self.is_sqlite and u.database not in (None, "", ":memory:") else None
        if path is not None and not path.exists():
            if not create:
                raise GenleakError(f"state database {path} does not exist; {init_hint}")
            path.parent.mkdir(parents=True, exist_ok=True)
            # Owner-only from the first byte (SQLite gives its -wal/-shm files the same mode): the file
            # holds every user's key hash, seed and query history.
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        try:
            self.engine = self._make_engine(u, sqlite_synchronous.upper())
            self.was_initialised = inspect(self.engine).has_table(users.name)
            if not (self.was_initialised or create):
                raise GenleakError(f"{self.url} is not a B4B state database (no {users.name} table); {init_hint}")
            metadata.create_all(self.engine)
        except DatabaseError as err:  # also OperationalError; "file is not a database" is a plain DatabaseError
            raise GenleakError(f"cannot open state database {self.url}: {err.orig}") from err
        except (ModuleNotFoundError, NoSuchModuleError) as err:
            raise GenleakError(f"no database driver for {u.drivername!r} ({err}); install it or use sqlite:///FILE") from err

    # ------------------------------------------------------------------------------- engine
    def _make_engine(self, u: Any, synchronous: str) -> Engine:
        if not self.is_sqlite:
            return create_engine(u, pool_pre_ping=True, pool_size=10, max_overflow=20)
        memory = u.database in (None, "", ":memory:")
        kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False, "timeout": 60}}
        if memory:
            kwargs["poolclass"] = StaticPool
        else:
            kwargs.update(pool_size=20, max_overflow=20)
        engine = create_engine(u, **kwargs)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Take transaction control away from pysqlite so we can say BEGIN IMMEDIATE ourselves
            # (the SQLAlchemy-documented recipe for SQLite transactions).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            if not memory:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("b4b_write") else "BEGIN")

        return engine

    @contextmanager
    def _tx(self, write: bool) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            if write:
                conn.execution_options(b4b_write=True)
            with conn.begin():
                yield conn

    def close(self) -> None:
        self.engine.dispose()

    # --------------------------------------------------------------------------------- meta
    def _get_meta(self, conn: Connection, key: str) -> str | None:
        return conn.execute(select(meta_table.c.value).where(meta_table.c.key == key)).scalar()

    def _set_meta(self, conn: Connection, key: str, value: str) -> None:
        if self._get_meta(conn, key) is None:
            conn.execute(insert(meta_table).values(key=key, value=value))
        else:
            conn.execute(update(meta_table).where(meta_table.c.key == key).values(value=value))

    def stored_config(self) -> B4BConfig | None:
        """The B4B config this database was created with, or None for a fresh database."""
        with self._tx(write=False) as conn:
            raw = self._get_meta(conn, "config")
        return None if raw is None else B4BConfig.from_dict(json.loads(raw))

    def ensure_config(self, config: B4BConfig | None) -> B4BConfig:
        """Adopt ``config`` for a fresh database, or check it against the stored one.

        ``None`` means "whatever the database has (the paper defaults if fresh)". A different explicit
        config is an error: existing bitsets were computed with the stored hyperplanes.
        """
        for _ in range(3):
            try:
                with self._tx(write=True) as conn:
                    raw = self._get_meta(conn, "config")
                    if raw is None:
                        cfg = config or B4BConfig()
                        conn.execute(insert(meta_table).values(key="config", value=cfg.to_json()))
                        conn.execute(insert(meta_table).values(key="schema_version", value=SCHEMA_VERSION))
                        return cfg
                stored = B4BConfig.from_dict(json.loads(raw))
                if config is not None and config != stored:
                    diff = ", ".join(f"{k}: stored {a!r} vs given {b!r}" for k, (a, b) in config_diff(stored, config).items())
                    raise GenleakError(f"state database {self.url} was created with a different B4B config ({diff}); "
                                       "use the same config or a new --db")
                return stored
            except IntegrityError:  # another replica initialised it between our read and insert
                continue
        raise GenleakError(f"could not initialise B4B config in {self.url}")

    def ensure_encoder(self, embed_dim: int, fingerprint: str) -> None:
        """Bind the database to one encoder: bitsets of a different model's embeddings are meaningless."""
        value = json.dumps({"embed_dim": int(embed_dim), "fingerprint": fingerprint}, sort_keys=True)
        with self._tx(write=True) as conn:
            raw = self._get_meta(conn, "encoder")
            if raw is None:
                self._set_meta(conn, "encoder", value)
                return
        if raw != value:
            raise GenleakError(f"state database {self.url} belongs to another encoder ({raw}, this one is {value}); "
                               "serve the original model or use a new --db")

    def encoder_info(self) -> dict[str, Any] | None:
        with self._tx(write=False) as conn:
            raw = self._get_meta(conn, "encoder")
        return None if raw is None else json.loads(raw)

    # -------------------------------------------------------------------------------- users
    @staticmethod
    def _record(row: Any) -> UserRecord:
        return UserRecord(
            id=row.id, name=row.name, key_hint=row.key_hint, policy=row.policy, static_sigma=row.static_sigma,
            seed=int(row.seed), transforms=None if row.transforms is None else tuple(json.loads(row.transforms)),
            created_at=row.created_at, revoked_at=row.revoked_at, n_queries=int(row.n_queries),
            n_requests=int(row.n_requests), n_occupied=int(row.n_occupied),
            buckets=None if row.buckets is None else bytes(row.buckets),
        )

    def create_user(self, name: str, *, policy: str = "b4b", static_sigma: float | None = None,
                    seed: int | None = None, transforms: Sequence[str] | None = None) -> tuple[UserRecord, str]:
        """Create a user; returns the record and the plain API key (shown once, stored hashed).

        ``seed`` fixes the user's transformation and noise stream (Section 6.3.4: drawn at account
        creation); by default it is drawn from the OS's CSPRNG so users cannot predict each other's.
        ``policy``: "b4b" (default), "none" (trusted, raw embeddings) or "static" (fixed noise
        ``static_sigma``, the baseline of Section 6.4.5).
        """
        name = name.strip()
        if not name or len(name) > 128:
            raise GenleakError("user name must be 1..128 characters")
        # Control and format characters (ESC, bidi overrides, zero-width) would let a name rewrite the
        # admin's terminal or pose as another user in `b4b admin list`.
        bad = [f"U+{ord(c):04X}" for c in name if unicodedata.category(c).startswith("C")]
        if bad:
            raise GenleakError(f"user name must not contain control or format characters (found {', '.join(bad[:3])})")
        if policy not in POLICIES:
            raise GenleakError(f"policy must be one of {POLICIES}, got {policy!r}")
        if policy == "static" and (static_sigma is None or not 0 <= static_sigma < math.inf):
            raise GenleakError(f"policy 'static' needs --sigma: a finite number >= 0, got {static_sigma}")
        if transforms is not None:
            bad = [t for t in transforms if t not in TRANSFORM_KINDS]
            if bad:
                raise GenleakError(f"unknown transform(s) {bad}; choose from {TRANSFORM_KINDS}")
        seed = secrets.randbits(62) if seed is None else int(seed)
        if not 0 <= seed < 2**63:
            raise GenleakError(f"seed must be in [0, 2^63), got {seed}")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        values = dict(
            name=name, key_hash=hash_key(key), key_hint=key[: len(KEY_PREFIX) + 4], policy=policy,
            static_sigma=static_sigma, seed=seed, transforms=None if transforms is None else json.dumps(list(transforms)),
            created_at=time.time(), revoked_at=None, n_queries=0, n_requests=0, n_occupied=0, buckets=None,
            updated_at=None,
        )
        try:
            with self._tx(write=True) as conn:
                conn.execute(insert(users).values(**values))
                row = conn.execute(select(users).where(users.c.name == name)).one()
        except IntegrityError as err:
            old = "was revoked" if self.get_user(name).revoked_at is not None else "is active"
            raise GenleakError(f"user {name!r} already exists and {old}; names are never reused (a revoked user's "
                               "state is kept for audit), so pick another name") from err
        return self._record(row), key

    def revoke_user(self, name: str) -> UserRecord:
        """Revoke a user's key: every later request with it gets 401. State is kept for audit."""
        with self._tx(write=True) as conn:
            row = conn.execute(select(users).where(users.c.name == name)).one_or_none()
            if row is None:
                raise GenleakError(f"no user named {name!r}; see `genleak b4b admin list`")
            if row.revoked_at is None:
                conn.execute(update(users).where(users.c.id == row.id).values(revoked_at=time.time()))
            row = conn.execute(select(users).where(users.c.id == row.id)).one()
        return self._record(row)

    def get_user(self, name: str) -> UserRecord:
        with self._tx(write=False) as conn:
            row = conn.execute(select(users).where(users.c.name == name)).one_or_none()
        if row is None:
            raise GenleakError(f"no user named {name!r}; see `genleak b4b admin list`")
        return self._record(row)

    def list_users(self) -> list[UserRecord]:
        with self._tx(write=False) as conn:
            rows = conn.execute(select(users).order_by(users.c.id)).all()
        return [self._record(r) for r in rows]

    def authenticate(self, api_key: str | None) -> UserRecord | None:
        """The active user owning ``api_key``, or None (unknown, revoked or missing key)."""
        if not api_key or not api_key.startswith(KEY_PREFIX) or len(api_key) > 256:
            return None
        with self._tx(write=False) as conn:
            row = conn.execute(select(users).where(users.c.key_hash == hash_key(api_key))).one_or_none()
        if row is None or row.revoked_at is not None:
            return None
        return self._record(row)

    def record_queries(self, user_id: int, bits: bytes, n_queries: int) -> QueryReceipt:
        """Atomically OR ``bits`` into the user's bitset and count ``n_queries`` queries.

        One write transaction (BEGIN IMMEDIATE on SQLite, SELECT ... FOR UPDATE elsewhere): concurrent
        requests of one user serialise here, so no bucket update is ever lost. Raises PermissionError
        if the user was revoked after authenticating.
        """
        with self._tx(write=True) as conn:
            row = conn.execute(
                select(users.c.buckets, users.c.n_queries, users.c.revoked_at).where(users.c.id == user_id).with_for_update()
            ).one_or_none()
            if row is None or row.revoked_at is not None:
                raise PermissionError("user revoked or deleted")
            old = bytes(row.buckets) if row.buckets is not None else bytes(len(bits))
            if len(old) != len(bits):
                raise ValueError(f"bitset size changed ({len(old)} stored vs {len(bits)} bytes)")
            new = _or(old, bits)
            occupied = _popcount(new)
            first = int(row.n_queries)
            conn.execute(
                update(users).where(users.c.id == user_id).values(
                    buckets=new, n_queries=users.c.n_queries + n_queries, n_requests=users.c.n_requests + 1,
                    n_occupied=occupied, updated_at=time.time(),
                )
            )
        return QueryReceipt(bits=new, first_query=first, n_queries=first + n_queries, n_occupied=occupied)
