"""The registry: one SQLite file holding devices, telemetry, sensor tables, refused batches and ingest errors.

Rules it keeps:

- **Each record once.** Telemetry (``samples``) is keyed by (device number,
  sequence number); a retransmitted batch inserts nothing twice (``ON
  CONFLICT DO NOTHING`` on that key only), and a retransmitted record whose
  content differs is kept out and recorded as a conflict. A batch is stored
  whole or not at all.
- **What a batch says once is stored once.** A record row holds only what
  varies per record; its boot, time basis, reception and link are those of
  its run in ``batches`` (consecutive sequence numbers stored together;
  runs of a device never overlap and every number of a run is stored), and
  a run's time range stands in for a per-record time index.
- **Values keep their kind.** ``samples.value`` has no declared type, so
  SQLite keeps integers as 64-bit integers, floats as floats and text as
  text; a boolean is 0/1 with flag 2. Times are integer ms since 1970.
- **Committed means durable.** The host acknowledges records only after they
  are committed, and the device then deletes them, so a commit must survive a
  power cut: the file runs in WAL mode with ``synchronous=FULL`` (each commit
  syncs the WAL). ``NORMAL`` would only promise durability against a crash
  of the process, and could lose acknowledged records, i.e. lose them for
  good. The price is one sync per commit; the registry writer
  (:mod:`edge_agent.telemetry.writer`) groups the batches of every link into
  one commit, measured in ``bench/bench_ingest.py``.
- **One writer, many readers.** Ingest writes while ``show``/``live`` read
  from other processes: WAL lets readers see the last commit without
  blocking the writer; writers take the lock up front (``BEGIN IMMEDIATE``)
  and wait up to ``timeout`` for each other (``busy_timeout``).
- **Migrations from day one.** :data:`MIGRATIONS` is an ordered list of SQL
  steps; ``PRAGMA user_version`` counts the steps applied. Opening a registry
  applies the missing steps in one transaction; a registry newer than this
  code, or a file that is not an Edge registry, is refused with a clear
  error. Steps are never edited once released: a change is a new step.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain, groupby
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple

from edge_agent.errors import BadInput, Busy, EdgeError, NotFound
from edge_agent.messages import Hello
from edge_agent.paths import PRIVATE_FILE, private_dir, private_file

APPLICATION_ID = 0x45444745   # "EDGE", in the SQLite header: marks the file as ours
SAMPLE_BYTES = 256            # bytes of a rejected line kept as a sample

MIGRATIONS: list[tuple[str, ...]] = [
    # 1: devices and their telemetry.
    (
        """CREATE TABLE devices (
            device_id  TEXT PRIMARY KEY,
            board      TEXT,
            version    TEXT,
            first_seen REAL NOT NULL,          -- host clock, Unix seconds
            last_seen  REAL NOT NULL,
            boot       INTEGER,                -- boot counter at the last HELLO
            uptime_ms  INTEGER,                -- uptime carried by the last HELLO
            boot_start REAL,                   -- host clock at the last HELLO minus that uptime
            next_seq   INTEGER,
            acked      INTEGER,
            dropped    INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE telemetry (
            device_id  TEXT NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
            seq        INTEGER NOT NULL,
            name       TEXT NOT NULL,
            unit       TEXT,
            value      REAL,                   -- numbers
            value_text TEXT,                   -- SenML vs
            value_bool INTEGER,                -- SenML vb, 0 or 1
            t          REAL NOT NULL,          -- Unix seconds
            estimated  INTEGER NOT NULL DEFAULT 0,
            boot       INTEGER NOT NULL,
            received   REAL NOT NULL,
            PRIMARY KEY (device_id, seq),
            CHECK ((value IS NOT NULL) + (value_text IS NOT NULL) + (value_bool IS NOT NULL) = 1)
        ) WITHOUT ROWID""",
        "CREATE INDEX telemetry_by_time ON telemetry (t)",
    ),
    # 2: counters of rejected input; time ranges per device.
    (
        """CREATE TABLE ingest_errors (
            source     TEXT NOT NULL,          -- a port, a BLE address or a device id
            reason     TEXT NOT NULL,          -- a frames.REASONS value, or a message error kind
            count      INTEGER NOT NULL,
            first_seen REAL NOT NULL,
            last_seen  REAL NOT NULL,
            sample     BLOB,                   -- the latest rejected line, truncated
            PRIMARY KEY (source, reason)
        )""",
        "CREATE INDEX telemetry_by_device_time ON telemetry (device_id, t)",
    ),
    # 3: identities minted by `edge provision`. A row may come first from
    # ingest (a device heard before it was provisioned) or from provisioning;
    # both upsert by device_id and touch only their own columns.
    (
        "ALTER TABLE devices ADD COLUMN public_key BLOB",          # X25519, 32 bytes
        "ALTER TABLE devices ADD COLUMN key_fingerprint TEXT",     # 16 hex: SHA-256(public_key)[:8]
        "ALTER TABLE devices ADD COLUMN setup_verifier TEXT",      # scrypt$n$r$p$salt$hash
        "ALTER TABLE devices ADD COLUMN setup_code_pending TEXT",  # plain code until the label is made
        "ALTER TABLE devices ADD COLUMN label_printed_at REAL",
        "ALTER TABLE devices ADD COLUMN provisioned INTEGER NOT NULL DEFAULT 0",  # 1 after the self-test
        "ALTER TABLE devices ADD COLUMN provisioned_by TEXT",
        "ALTER TABLE devices ADD COLUMN provisioned_at REAL",      # when the identity was minted
        "ALTER TABLE devices ADD COLUMN firmware_version TEXT",
        "ALTER TABLE devices ADD COLUMN agent_version TEXT",
        "CREATE UNIQUE INDEX devices_by_key ON devices (public_key) WHERE public_key IS NOT NULL",
    ),
    # 4: protocol version 2. A lean telemetry table: per record only what
    # varies per record (integer device and series ids, time in integer ms,
    # a value column without a declared type: no affinity, so integers stay
    # integers, floats floats, text text; flag 2 marks a boolean stored as
    # 0/1). What a batch says once (boot, time basis, when and on which link
    # it arrived) and its time range go to `batches`: one row per run of
    # consecutive sequence numbers stored together, runs of a device never
    # overlap and every sequence number of a run is stored. Queries by time
    # find the runs by their range, then filter records exactly; a per-record
    # time index cost more than the rest of the insert. Sensor tables by
    # (device, table id), refused batches and conflicts are kept. Existing
    # rows move over; their numbers were stored as REAL and stay REAL.
    (
        "ALTER TABLE devices ADD COLUMN dev INTEGER",
        "UPDATE devices SET dev = rowid",
        "CREATE UNIQUE INDEX devices_by_dev ON devices (dev)",
        """CREATE TRIGGER devices_number AFTER INSERT ON devices WHEN NEW.dev IS NULL BEGIN
            UPDATE devices SET dev = (SELECT coalesce(max(dev), 0) + 1 FROM devices)
            WHERE device_id = NEW.device_id;
        END""",
        "ALTER TABLE devices ADD COLUMN protocol INTEGER",
        "ALTER TABLE devices ADD COLUMN refused INTEGER NOT NULL DEFAULT 0",   # HELLO key 10
        """CREATE TABLE series (
            id    INTEGER PRIMARY KEY,
            dev   INTEGER NOT NULL,
            name  TEXT NOT NULL,
            unit  TEXT NOT NULL DEFAULT '',
            UNIQUE (dev, name, unit)
        )""",
        """CREATE TABLE samples (
            dev      INTEGER NOT NULL,
            seq      INTEGER NOT NULL,
            series   INTEGER NOT NULL,
            t        INTEGER NOT NULL,          -- ms since 1970
            value,                              -- no affinity on purpose
            flags    INTEGER NOT NULL,          -- 2: boolean value
            PRIMARY KEY (dev, seq)
        ) WITHOUT ROWID""",
        """CREATE TABLE batches (
            dev       INTEGER NOT NULL,
            first_seq INTEGER NOT NULL,
            end_seq   INTEGER NOT NULL,         -- samples first_seq .. end_seq - 1, all stored
            t_min     INTEGER NOT NULL,         -- ms since 1970, over those samples
            t_max     INTEGER NOT NULL,
            boot      INTEGER NOT NULL,
            estimated INTEGER NOT NULL,         -- 1: times from an estimated epoch
            received  INTEGER NOT NULL,         -- host clock, ms
            source    TEXT NOT NULL,            -- the link it came on ('' if unknown)
            PRIMARY KEY (dev, first_seq)
        ) WITHOUT ROWID""",
        "CREATE INDEX batches_by_time ON batches (t_max)",
        """INSERT INTO series (dev, name, unit)
            SELECT DISTINCT d.dev, t.name, coalesce(t.unit, '')
            FROM telemetry t JOIN devices d ON d.device_id = t.device_id""",
        """INSERT INTO samples (dev, seq, series, t, value, flags)
            SELECT d.dev, t.seq, s.id, CAST(round(t.t * 1000) AS INTEGER),
                   coalesce(t.value_bool, t.value_text, t.value), 2 * (t.value_bool IS NOT NULL)
            FROM telemetry t JOIN devices d ON d.device_id = t.device_id
            JOIN series s ON s.dev = d.dev AND s.name = t.name AND s.unit = coalesce(t.unit, '')""",
        # A run: consecutive sequence numbers with the same boot, basis and
        # reception (seq minus its rank within those is constant along a run).
        """INSERT INTO batches (dev, first_seq, end_seq, t_min, t_max, boot, estimated, received, source)
            SELECT dev, min(seq), max(seq) + 1, min(t), max(t), boot, estimated, received, ''
            FROM (SELECT d.dev AS dev, t.seq AS seq, CAST(round(t.t * 1000) AS INTEGER) AS t,
                         t.boot AS boot, t.estimated AS estimated,
                         CAST(round(t.received * 1000) AS INTEGER) AS received,
                         t.seq - row_number() OVER (PARTITION BY d.dev, t.boot, t.estimated, t.received
                                                    ORDER BY t.seq) AS run
                  FROM telemetry t JOIN devices d ON d.device_id = t.device_id)
            GROUP BY dev, boot, estimated, received, run""",
        "DROP TABLE telemetry",
        """CREATE TABLE sensor_tables (
            dev        INTEGER NOT NULL,
            table_id   INTEGER NOT NULL,
            sensors    BLOB NOT NULL,           -- CBOR [[name, unit], ...] as the device sent it
            first_seen INTEGER NOT NULL,
            PRIMARY KEY (dev, table_id)
        ) WITHOUT ROWID""",
        """CREATE TABLE refused (
            id        INTEGER PRIMARY KEY,
            device_id TEXT NOT NULL,
            source    TEXT NOT NULL,            -- the link (port) it came on
            first_seq INTEGER NOT NULL,
            end_seq   INTEGER NOT NULL,
            reason    TEXT NOT NULL,            -- the REFUSE reason word
            detail    TEXT NOT NULL,            -- for a person
            payload   BLOB NOT NULL,            -- the BATCH message as received
            received  INTEGER NOT NULL          -- host clock, ms
        )""",
        """CREATE TABLE conflicts (
            id        INTEGER PRIMARY KEY,
            device_id TEXT NOT NULL,
            seq       INTEGER NOT NULL,
            source    TEXT NOT NULL,
            stored    TEXT NOT NULL,            -- JSON [name, unit, t_ms, value] kept
            offered   TEXT NOT NULL,            -- JSON [name, unit, t_ms, value] refused as a duplicate
            received  INTEGER NOT NULL
        )""",
    ),
    # 5: an identity is complete once the board holds it all (config.json
    # written last). A row recorded by a provisioning cut short is an orphan:
    # never labelled, and removed when its board is provisioned again.
    # Identities recorded before this step were complete.
    (
        "ALTER TABLE devices ADD COLUMN identity_complete INTEGER NOT NULL DEFAULT 1",
    ),
    # 6: owner accounts, bonds and their audit log (docs/protocol.md 5.7). A
    # device is bound to at most one account (the bond's primary key); the
    # bond key is a secret, read only by the BLE link (never in
    # DEVICE_COLUMNS or BOND_COLUMNS). host_settings holds this installation's
    # host_id, made once. The audit log only grows.
    (
        """CREATE TABLE accounts (
            account    TEXT PRIMARY KEY,
            created    REAL NOT NULL
        )""",
        """CREATE TABLE bonds (
            device_id  TEXT PRIMARY KEY,
            account    TEXT NOT NULL REFERENCES accounts (account),
            host_id    BLOB NOT NULL,           -- 16 bytes
            bond_id    BLOB NOT NULL,           -- 8 bytes
            bond_key   BLOB NOT NULL,           -- 32 bytes: secret
            device_key BLOB NOT NULL,           -- the device's X25519 public key it proved
            paired_at  REAL NOT NULL,
            last_connected REAL
        )""",
        "CREATE INDEX bonds_by_account ON bonds (account)",
        """CREATE TABLE host_settings (
            name       TEXT PRIMARY KEY,
            value      BLOB NOT NULL
        )""",
        """CREATE TABLE audit (
            id         INTEGER PRIMARY KEY,
            t          REAL NOT NULL,           -- host clock, Unix seconds
            device_id  TEXT NOT NULL,
            account    TEXT,
            action     TEXT NOT NULL,           -- paired, unpaired, forgotten, factory_reset, pair_refused
            detail     TEXT NOT NULL DEFAULT ''
        )""",
    ),
    # 7: OTA releases, each device's update state per release, and their
    # history (docs/protocol.md section 7). A release is one signed manifest
    # of an image kept in the update store under its digest; (board,
    # component, sequence) names one image for good. ota_devices holds the
    # host's latest view of a device per release; ota_history every
    # transition of a device or a release, and only grows (triggers refuse
    # an update or a delete).
    (
        """CREATE TABLE releases (
            id          INTEGER PRIMARY KEY,
            board       TEXT NOT NULL,
            component   TEXT NOT NULL,
            version     TEXT NOT NULL,
            sequence    INTEGER NOT NULL,
            digest      BLOB NOT NULL,          -- SHA-256 of the image, 32 bytes
            size        INTEGER NOT NULL,
            manifest    BLOB NOT NULL,          -- the COSE_Sign1 as published (re-signing replaces it)
            image       TEXT NOT NULL,          -- the image's file name in the update store
            expires     INTEGER NOT NULL,       -- the manifest's, Unix seconds
            created     REAL NOT NULL,
            fraction    REAL NOT NULL CHECK (fraction >= 0 AND fraction <= 1),
            halt_at     REAL NOT NULL CHECK (halt_at > 0 AND halt_at <= 1),
            min_devices INTEGER NOT NULL CHECK (min_devices >= 1),
            state       TEXT NOT NULL CHECK (state IN ('active', 'halted', 'paused', 'done')),
            halt_reason TEXT,
            grow_step   REAL,                   -- the fraction grows by this ...
            grow_period REAL,                   -- ... every this many seconds
            grown_at    REAL,                   -- when it last grew (or was published)
            UNIQUE (board, component, sequence)
        )""",
        """CREATE TABLE ota_devices (
            device_id  TEXT NOT NULL,
            release    INTEGER NOT NULL REFERENCES releases (id),
            state      TEXT NOT NULL,           -- offered, downloading, ..., confirmed, rolled-back
            held       INTEGER,                 -- bytes the device holds durably
            size       INTEGER,
            check_name TEXT,                    -- the check that refused it
            reason     TEXT,
            source     TEXT NOT NULL,           -- the link it came on
            updated    REAL NOT NULL,
            PRIMARY KEY (device_id, release)
        ) WITHOUT ROWID""",
        "CREATE INDEX ota_devices_by_release ON ota_devices (release, state)",
        """CREATE TABLE ota_history (
            id         INTEGER PRIMARY KEY,
            t          REAL NOT NULL,
            device_id  TEXT,                    -- NULL: a release's own transition
            release    INTEGER,                 -- NULL: a sequence no release here has
            component  TEXT,
            sequence   INTEGER,
            state      TEXT NOT NULL,
            held       INTEGER,
            size       INTEGER,
            check_name TEXT,
            reason     TEXT,
            source     TEXT
        )""",
        "CREATE INDEX ota_history_by_device ON ota_history (device_id, id)",
        "CREATE INDEX ota_history_by_release ON ota_history (release, id)",
        """CREATE TRIGGER ota_history_no_update BEFORE UPDATE ON ota_history
            BEGIN SELECT RAISE(ABORT, 'ota_history only grows'); END""",
        """CREATE TRIGGER ota_history_no_delete BEFORE DELETE ON ota_history
            BEGIN SELECT RAISE(ABORT, 'ota_history only grows'); END""",
    ),
]
SCHEMA_VERSION = len(MIGRATIONS)

BOOLEAN = 2                    # samples.flags: the value is a boolean stored as 0/1

# The devices columns that may be shown, exported or logged. Never the public
# key's bytes, the setup-code verifier or the plain setup code: every reader
# selects these by name (no ``SELECT *``), so a column added later stays
# hidden until it is listed here.
DEVICE_COLUMNS = ("device_id", "board", "version", "first_seen", "last_seen", "boot", "uptime_ms",
                  "boot_start", "next_seq", "acked", "dropped", "key_fingerprint", "label_printed_at",
                  "provisioned", "provisioned_by", "provisioned_at", "firmware_version",
                  "agent_version", "dev", "protocol", "refused")
_DEVICE_SELECT = ", ".join(f"d.{c}" for c in DEVICE_COLUMNS)
# The bonds columns that may be shown: never bond_key (nor the raw ids, shown
# as hex by the readers that need them).
BOND_COLUMNS = ("device_id", "account", "paired_at", "last_connected")
AUDIT_ACTIONS = ("paired", "unpaired", "forgotten", "factory_reset", "pair_refused")

# OTA (docs/protocol.md 7.2). The host's view of a device's update: "offered"
# is the host's own word (it sent the manifest), the rest are OTA_STATE's.
OTA_DEVICE_STATES = ("offered", "downloading", "stalled", "verified", "installed", "applying", "trial",
                     "confirmed", "rolled-back", "refused", "failed", "stale", "current", "busy")
OTA_IN_PROGRESS = ("downloading", "stalled", "verified", "installed", "applying", "trial")
OTA_FAILED = ("rolled-back", "failed")
# A device "attempted" a release once it started to download it; the halt rule
# weighs the failed among those (a refusal writes nothing: it is not an attempt).
OTA_ATTEMPTED = OTA_IN_PROGRESS + ("confirmed",) + OTA_FAILED
RELEASE_STATES = ("active", "halted", "paused", "done")
_RELEASE_COLUMNS = ("id", "board", "component", "version", "sequence", "digest", "size", "manifest", "image",
                    "expires", "created", "fraction", "halt_at", "min_devices", "state", "halt_reason",
                    "grow_step", "grow_period", "grown_at")


@dataclass(frozen=True)
class Release:
    """One published OTA release (a row of ``releases``)."""

    id: int
    board: str
    component: str
    version: str
    sequence: int
    digest: bytes
    size: int
    manifest: bytes
    image: str
    expires: int
    created: float
    fraction: float
    halt_at: float
    min_devices: int
    state: str
    halt_reason: str | None
    grow_step: float | None
    grow_period: float | None
    grown_at: float | None

    @property
    def key(self) -> str:
        """The release's stable name, ``board/component/sequence``: what the rollout buckets hash."""
        return f"{self.board}/{self.component}/{self.sequence}"

    def as_dict(self) -> dict[str, Any]:
        """The row for people and JSON: digest in hex, no manifest bytes."""
        out = {c: getattr(self, c) for c in _RELEASE_COLUMNS if c != "manifest"}
        out["digest"] = self.digest.hex()
        return out

    @classmethod
    def from_row(cls, row: tuple) -> "Release":
        values = dict(zip(_RELEASE_COLUMNS, row))
        values["digest"] = bytes(values["digest"])
        values["manifest"] = bytes(values["manifest"])
        return cls(**values)

_COLUMNS = "d.device_id, s.seq, r.name, r.unit, s.value, s.t, s.flags, b.estimated, b.boot, b.received"
# Records with their batch, from the samples: the run holding a record is the
# one with the highest first_seq at or below its seq (runs never overlap).
# CROSS JOIN keeps that order (SQLite does not reorder it).
_SELECT = (f"SELECT {_COLUMNS} FROM samples s CROSS JOIN batches b ON b.dev = s.dev AND b.first_seq = "
           "(SELECT max(first_seq) FROM batches WHERE dev = s.dev AND first_seq <= s.seq) "
           "JOIN series r ON r.id = s.series JOIN devices d ON d.dev = s.dev")
# The same, from the runs: a run's records are one range of the samples' key.
_SELECT_BY_RUN = (f"SELECT {_COLUMNS} FROM batches b CROSS JOIN samples s ON s.dev = b.dev "
                  "AND s.seq >= b.first_seq AND s.seq < b.end_seq "
                  "JOIN series r ON r.id = s.series JOIN devices d ON d.dev = b.dev")


_RUNS_MAX = 256          # batches rows per INSERT statement


def _padded(rows: int) -> int:
    """Rows an INSERT of ``rows`` rows is padded to: a multiple of 16, at most 1/8 more."""
    step = max(16, 1 << max(0, rows.bit_length() - 4))
    return -(-rows // step) * step


@lru_cache(maxsize=None)
def _insert_samples(rows: int) -> str:
    return ("INSERT INTO samples (dev, seq, series, t, value, flags) VALUES "
            + ",".join(["(?,?,?,?,?,?)"] * rows) + " ON CONFLICT (dev, seq) DO NOTHING")


@lru_cache(maxsize=64)
def _insert_runs(runs: int) -> str:
    return ("INSERT INTO batches (dev, first_seq, end_seq, t_min, t_max, boot, estimated, received, source) "
            "VALUES " + ",".join(["(?,?,?,?,?,?,?,?,?)"] * runs))


def _runs(dev: int, rows: list[tuple], boot: int, estimated: int, received_ms: int, source: str) -> list[tuple]:
    """The ``batches`` rows of new samples rows in seq order: one per run of consecutive seqs."""
    if rows[-1][1] - rows[0][1] == len(rows) - 1:      # the common case: one run
        times = [row[3] for row in rows]
        return [(dev, rows[0][1], rows[-1][1] + 1, min(times), max(times), boot, estimated, received_ms, source)]
    runs = []
    start = 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or rows[i][1] != rows[i - 1][1] + 1:
            times = [row[3] for row in rows[start:i]]
            runs.append((dev, rows[start][1], rows[i - 1][1] + 1, min(times), max(times), boot, estimated,
                         received_ms, source))
            start = i
    return runs


class Overlap(Exception):
    """Batches staged together (:meth:`Store.staging`) meet records stored before: store them one by one."""


class Record(NamedTuple):
    """One resolved measurement, ready to store: ``t_ms`` is ms since 1970."""

    seq: int
    name: str
    unit: str
    value: float | int | str | bool
    t_ms: int
    estimated: bool
    boot: int


def _sql_type(value: Any) -> str:
    """SQLite's typeof() of a value bound as a parameter (a bool is bound as an integer)."""
    if isinstance(value, str):
        return "text"
    return "real" if isinstance(value, float) else "integer"


def _dicts(cur: sqlite3.Cursor) -> list[dict]:
    """The rows of ``cur`` as dicts by column name."""
    names = [c[0] for c in cur.description]
    return [dict(zip(names, row)) for row in cur]


def _where(**equal: Any) -> tuple[str, list[Any]]:
    """`` WHERE a = ? AND b = ?`` and its arguments for the columns given a value (None: any)."""
    given = {column: value for column, value in equal.items() if value is not None}
    if not given:
        return "", []
    return " WHERE " + " AND ".join(f"{c.replace('__', '.')} = ?" for c in given), list(given.values())


def _ms_bound(seconds: float) -> int:
    """A query bound in Unix seconds as integer ms, clamped to what SQLite holds."""
    return max(-2**63, min(2**63 - 1, math.ceil(seconds * 1000))) if math.isfinite(seconds) else (
        2**63 - 1 if seconds > 0 else -2**63)


def registry_error(path: Path, error: BaseException, *, writing: bool = False) -> EdgeError:
    """The :class:`EdgeError` naming the real cause of ``error`` met on the registry at ``path``.

    A corrupt file, a file that is not a registry, a read-only file, folder or
    mount, a full disk and a lock held elsewhere each get their own message
    and fix; only a file that is not an Edge registry at all is the wrong file.
    """
    path = Path(path)
    name = getattr(error, "sqlite_errorname", "") or ""
    text = str(error)
    if name.startswith("SQLITE_BUSY") or name.startswith("SQLITE_LOCKED") or "locked" in text:
        return Busy(f"the registry {path} is locked by another process",
                    "wait for it to finish, or stop the other `edge` command")
    if name.startswith("SQLITE_CORRUPT") or "malformed" in text:
        return BadInput(f"the registry {path} is corrupt ({text})",
                        f"stop writing to it and restore it from a backup; `sqlite3 {path} .recover` "
                        "saves what it can into a new file")
    if name.startswith("SQLITE_NOTADB") or "not a database" in text:
        return BadInput(f"{path} is not an Edge registry (not a SQLite database, or its header is damaged)",
                        "pass --db with the registry's path; if this file is your registry, restore it "
                        "from a backup")
    if name.startswith("SQLITE_FULL") or getattr(error, "errno", None) == 28 or "disk is full" in text:
        return BadInput(f"the disk holding the registry {path} is full",
                        "free some space on it, or pass --db with a registry on another disk")
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_IOERR", "SQLITE_PERM")) or \
            isinstance(error, OSError):
        where = _read_only_part(path)
        if where:
            return _read_only_error(path, where, text)
        return BadInput(f"cannot {'write' if writing else 'read'} the registry {path} ({text})",
                        "check the disk and the file's permissions")
    return BadInput(f"cannot use the registry {path} ({text})",
                    "check the file; restore it from a backup if it is damaged")


def _read_only_error(path: Path, where: str, detail: str) -> BadInput:
    return BadInput(f"the registry {path} cannot be written: {where} is read-only ({detail})",
                    "make it writable (chmod u+w, or remount the disk read-write), or pass --db "
                    "with a registry in a folder you can write")


def _read_only_part(path: Path) -> str | None:
    """Which of the mount, folder, file or its -wal/-shm keeps ``path`` from being written, or None."""
    folder = path.parent
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return f"the disk mounted at {_mount_point(folder)}"
    except OSError:
        pass
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if file.exists() and not os.access(file, os.W_OK):
            return f"the file {file}"
    if folder.exists() and not os.access(folder, os.W_OK | os.X_OK):
        return f"the folder {folder}"
    return None


def _mount_point(folder: Path) -> Path:
    folder = folder.resolve()
    while not os.path.ismount(folder) and folder != folder.parent:
        folder = folder.parent
    return folder



# Registry files found intact by quick_check in this process: (device, inode,
# size, mtime) of the main file, so a file written since is checked again.
_INTACT: set[tuple[int, int, int, int]] = set()

class StoredRecord(NamedTuple):
    """A telemetry record as the registry holds it (integers come back as integers)."""

    device_id: str
    seq: int
    name: str
    unit: str
    value: float | int | str | bool
    t_ms: int
    estimated: bool
    boot: int
    received_ms: int

    @property
    def t(self) -> float:
        """The record's time in Unix seconds."""
        return self.t_ms / 1000

    @property
    def received(self) -> float:
        """When the host stored it, Unix seconds."""
        return self.received_ms / 1000

    @classmethod
    def from_row(cls, row: tuple) -> "StoredRecord":
        device_id, seq, name, unit, value, t, flags, estimated, boot, received = row
        if flags & BOOLEAN:
            value = bool(value)
        return cls(device_id, seq, name, unit, value, t, bool(estimated), boot, received)


class Store:
    """The registry in the SQLite file at ``path`` (created unless ``create=False``).

    ``synchronous`` is the SQLite setting for this connection: keep ``FULL``
    (see the module docstring); benchmarks pass ``NORMAL`` to show its cost.
    ``shared`` lets several threads use the connection, one at a time.
    """

    def __init__(self, path: str | Path, *, create: bool = True, timeout: float = 10.0,
                 synchronous: str = "FULL", shared: bool = False):
        self.path = Path(path)
        if synchronous.upper() not in ("FULL", "NORMAL", "EXTRA", "OFF"):
            raise ValueError(f"synchronous must be FULL, NORMAL, EXTRA or OFF, not {synchronous!r}")
        if self.path.is_dir():
            raise BadInput(f"the registry path {self.path} is a folder",
                           "pass --db with a file path (e.g. registry.db)")
        if not self.path.exists():
            if not create:
                hint = "run `edge telemetry ingest` first, or pass --db PATH (or set $EDGE_DB)"
                demo = Path(".edge") / "registry.db"
                if demo.is_file() and demo.resolve() != self.path.resolve():
                    # `make demo` keeps its state in the checkout's .edge/.
                    hint += (f"; the registry of `make demo` is {demo.resolve()}: "
                             f"`export EDGE_HOME={Path('.edge').resolve()}` reaches it")
                raise NotFound(f"no registry at {self.path}", hint)
            try:
                private_dir(self.path.parent)
                # Created 0600 before SQLite opens it: SQLite gives the -wal
                # and -shm files the mode of the database file.
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
            except FileExistsError:     # created meanwhile by another process
                pass
            except OSError as e:
                raise registry_error(self.path, e, writing=True) from None
        elif create:
            # SQLite would open a file it cannot write read-only, without a
            # word, and fail at the first write: a writer checks up front.
            read_only = _read_only_part(self.path)
            if read_only:
                raise _read_only_error(self.path, read_only, "not writable")
            # A registry made by an older version (0644 in a 0755 folder) is
            # tightened when a writer opens it: it may hold plain setup codes.
            private_dir(self.path.parent)
            for name in ("", "-wal", "-shm"):
                private_file(self.path.with_name(self.path.name + name))
        try:
            # shared: used from several threads, one at a time (the caller holds a lock).
            self._db = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None,
                                       check_same_thread=not shared)
        except sqlite3.Error as e:
            raise registry_error(self.path, e, writing=create) from None
        self._depth = 0   # nesting of transaction() blocks
        # Inside staging(): the batches waiting for the block's end, and per
        # device the latest arrival and highest dropped count.
        self._staged: list[tuple] | None = None
        self._seen: dict[str, tuple[float, int]] | None = None
        try:
            variables = self._db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        except AttributeError:   # Python < 3.11: assume SQLite's oldest default
            variables = 999
        self._max_rows = max(1, min(4096, variables // 6 * 8 // 9))   # samples rows per statement, padding included
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            self._db.execute("PRAGMA foreign_keys = ON")
            # Switching a new file to WAL, and migrating it, can meet
            # "database is locked" without SQLite's busy handler waiting
            # (several processes or threads opening a new registry at once):
            # retry until the timeout.
            deadline = time.monotonic() + timeout
            while True:
                try:
                    self._db.execute("PRAGMA journal_mode = WAL").fetchone()
                    self._db.execute(f"PRAGMA synchronous = {synchronous.upper()}")
                    if create:
                        self._check_integrity()
                    self._migrate()
                    break
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) or time.monotonic() >= deadline:
                        raise
                    time.sleep(0.05)
        except BaseException as e:
            self._db.close()
            if isinstance(e, sqlite3.Error):
                raise registry_error(self.path, e, writing=create) from None
            raise

    # -- schema

    def _check_integrity(self) -> None:
        """Refuse to write into a damaged file: ``quick_check`` reads every page once.

        Run when a writer opens the registry (ingest, flash, provision), not
        for each read: a write into a malformed page can spread the damage.
        Once per process for the same file unchanged since (`edge flash`
        opens it once per board; a 1 GB registry takes seconds to check).
        """
        st = os.stat(self.path)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if key in _INTACT:
            return
        problems = [row[0] for row in self._db.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError("database disk image is malformed: " + "; ".join(problems))
        _INTACT.add(key)

    def _pragma(self, name: str) -> int:
        return self._db.execute(f"PRAGMA {name}").fetchone()[0]

    def _migrate(self) -> None:
        # One read snapshot: another process may be creating this registry
        # right now, and its tables and application_id must be seen together.
        self._db.execute("BEGIN")
        try:
            version = self._pragma("user_version")
            app_id = self._pragma("application_id")
            tables = self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        finally:
            self._db.execute("COMMIT")
        if app_id not in (0, APPLICATION_ID) or (app_id == 0 and (version or tables)):
            raise BadInput(f"{self.path} is a SQLite database but not an Edge registry",
                           "pass --db with the registry's path, or a new file name")
        if version > SCHEMA_VERSION:
            raise BadInput(
                f"the registry {self.path} has schema version {version}, newer than this "
                f"edge-agent understands ({SCHEMA_VERSION})",
                "upgrade edge-agent (pip install -U edge-agent), or open a registry made by this version")
        if version == SCHEMA_VERSION:
            return
        with self.transaction():
            version = self._pragma("user_version")   # another process may have migrated meanwhile
            for step in MIGRATIONS[version:]:
                for statement in step:
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db.execute(f"PRAGMA application_id = {APPLICATION_ID}")

    @property
    def schema_version(self) -> int:
        """The number of migration steps applied to this registry."""
        return self._pragma("user_version")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes into one transaction: all of them are committed, or none.

        Every write method runs in its own transaction unless called inside
        this block. One commit (one sync) for all the batches of a serial read
        is much cheaper than one per batch (see ``bench/bench_ingest.py``);
        acknowledge the batches only after the block has exited normally.
        """
        if self._depth:
            # Nested: a savepoint keeps the inner write all-or-nothing even if
            # the caller catches its error and goes on with the outer block.
            # Rows staged inside it (staging()) are undone with it.
            name = f"nested{self._depth}"
            self._db.execute(f"SAVEPOINT {name}")
            self._depth += 1
            staged = None if self._staged is None else (len(self._staged), dict(self._seen or {}))
            try:
                yield
            except BaseException:
                self._db.execute(f"ROLLBACK TO {name}")
                if staged is not None and self._staged is not None:
                    del self._staged[staged[0]:]
                    self._seen = staged[1]
                raise
            finally:
                self._depth -= 1
                self._db.execute(f"RELEASE {name}")
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")
        finally:
            self._depth = 0

    # -- writing (ingest: edge_agent.telemetry.writer calls these inside one transaction)

    def device_number(self, device_id: str, seen_ms: int | None = None) -> int:
        """The integer id of ``device_id`` in the telemetry tables, adding the device if new."""
        seen = (time.time() * 1000 if seen_ms is None else seen_ms) / 1000
        row = self._db.execute("SELECT dev FROM devices WHERE device_id = ?", (device_id,)).fetchone()
        if row is not None:
            return row[0]
        with self.transaction():
            self._db.execute("INSERT INTO devices (device_id, first_seen, last_seen) VALUES (?, ?, ?)",
                             (device_id, seen, seen))
            return self._db.execute("SELECT dev FROM devices WHERE device_id = ?", (device_id,)).fetchone()[0]

    def series_numbers(self, dev: int, sensors: Iterable[tuple[str, str]]) -> list[int]:
        """The series id of each (name, unit) of device number ``dev``, in order, adding new ones."""
        out = []
        with self.transaction():
            for name, unit in sensors:
                self._db.execute("INSERT INTO series (dev, name, unit) VALUES (?, ?, ?) "
                                 "ON CONFLICT (dev, name, unit) DO NOTHING", (dev, name, unit))
                out.append(self._db.execute("SELECT id FROM series WHERE dev = ? AND name = ? AND unit = ?",
                                            (dev, name, unit)).fetchone()[0])
        return out

    def put_table(self, device_id: str, table_id: int, sensors_cbor: bytes, seen_ms: int) -> None:
        """Keep a device's sensor table for good (section 2.6: a table never changes meaning)."""
        dev = self.device_number(device_id, seen_ms)
        self._db.execute("INSERT INTO sensor_tables (dev, table_id, sensors, first_seen) VALUES (?, ?, ?, ?) "
                         "ON CONFLICT (dev, table_id) DO NOTHING", (dev, table_id, sensors_cbor, seen_ms))

    def table(self, device_id: str, table_id: int) -> bytes | None:
        """The CBOR of a sensor table the registry holds, or None."""
        row = self._db.execute(
            "SELECT t.sensors FROM sensor_tables t JOIN devices d ON d.dev = t.dev "
            "WHERE d.device_id = ? AND t.table_id = ?", (device_id, table_id)).fetchone()
        return None if row is None else bytes(row[0])

    @contextmanager
    def staging(self, on_insert: Callable[[], None] | None = None) -> Iterator[None]:
        """Inside a transaction: the samples of many batches go in together when the block ends.

        Within the block :meth:`insert_samples` and :meth:`note_seen` only
        take note, and count every staged record as new. The block's end
        writes the runs and arrivals, calls ``on_insert``, then inserts every
        record with as few statements as SQLite's parameter limit allows
        (sqlite3 lets go of the GIL around each statement, and taking it back
        from busy link threads costs more than the statement), and raises
        :class:`Overlap` if any record was stored before: the caller rolls
        back and stores the batches one by one, the way that finds duplicates
        and conflicts.
        """
        if not self._depth or self._staged is not None:
            raise RuntimeError("staging() goes inside one transaction() block, not nested")
        self._staged, self._seen = [], {}
        try:
            yield
            staged, seen = self._staged, self._seen
            self._staged = self._seen = None
            if not staged:
                return
            try:
                self._insert_runs(list(chain.from_iterable(
                    _runs(dev, rows, *facts) for dev, rows, *facts in staged)))
            except sqlite3.IntegrityError:      # a run starting where one is stored
                raise Overlap(f"{len(staged)} batches meet records stored before") from None
            self._db.executemany("UPDATE devices SET last_seen = max(last_seen, ?2), dropped = max(dropped, ?3) "
                                 "WHERE device_id = ?1", [(d, *v) for d, v in seen.items()])
            if on_insert is not None:
                on_insert()
            rows = list(chain.from_iterable(batch[1] for batch in staged))
            if self._insert_rows(rows) != len(rows):
                raise Overlap(f"{len(staged)} batches meet records stored before")
        finally:
            self._staged = self._seen = None

    def _insert_rows(self, rows: list[tuple]) -> int:
        """Insert samples rows with ``ON CONFLICT DO NOTHING``; how many went in."""
        before = self._db.total_changes
        # Few statements: up to _max_rows rows each, padded with copies of
        # the last row (which its own key turns into no-ops) to one of a few
        # sizes, so that few SQL texts are prepared.
        for at in range(0, len(rows), self._max_rows):
            chunk = rows[at:at + self._max_rows]
            size = _padded(len(chunk))
            self._db.execute(_insert_samples(size),
                             list(chain.from_iterable(chunk + [chunk[-1]] * (size - len(chunk)))))
        return self._db.total_changes - before

    def _insert_runs(self, runs: list[tuple]) -> None:
        for at in range(0, len(runs), _RUNS_MAX):
            chunk = runs[at:at + _RUNS_MAX]
            self._db.execute(_insert_runs(len(chunk)), list(chain.from_iterable(chunk)))

    def insert_samples(self, dev: int, rows: list[tuple], boot: int, estimated: bool, received_ms: int,
                       device_id: str = "", source: str = "") -> tuple[int, list[int]]:
        """Insert rows ``(dev, seq, series, t, value, flags)`` of one batch, in seq order; (new rows, conflicting seqs).

        The batch's own facts (``boot``, ``estimated``, ``received_ms``,
        ``source``) and time range go to ``batches``, once per run of
        consecutive new sequence numbers. A row whose (device, seq) is stored
        already is a duplicate when it says the same thing (series, time,
        value and its kind), else a conflict: the first is kept, and both
        versions go to ``conflicts``. Inside :meth:`staging` the rows wait
        for the block's end.
        """
        if not rows:
            return 0, []
        if self._staged is not None:
            self._staged.append((dev, rows, boot, int(estimated), received_ms, source))
            return len(rows), []
        inserted = self._insert_rows(rows)
        conflicts: list[int] = []
        if inserted == len(rows):
            new = rows          # none of these seqs was stored, so no run overlaps them
        else:
            new = self._sort_out_stored(dev, rows, received_ms, device_id, source, conflicts)
        if new:
            self._insert_runs(_runs(dev, new, boot, int(estimated), received_ms, source))
        return inserted, conflicts

    def _sort_out_stored(self, dev: int, rows: list[tuple], received_ms: int, device_id: str, source: str,
                         conflicts: list[int]) -> list[tuple]:
        """The rows that were new; those stored before (in a run, or earlier in ``rows``) are compared."""
        low, high = rows[0][1], rows[-1][1]
        runs = self._db.execute(
            "SELECT first_seq, end_seq FROM batches WHERE dev = ?1 AND first_seq <= ?3 AND first_seq >= "
            "coalesce((SELECT max(first_seq) FROM batches WHERE dev = ?1 AND first_seq <= ?2), ?2) "
            "ORDER BY first_seq", (dev, low, high)).fetchall()
        stored = {r[0]: r[1:] for r in self._db.execute(
            "SELECT seq, series, t, value, typeof(value), flags & 2 FROM samples "
            "WHERE dev = ? AND seq BETWEEN ? AND ?", (dev, low, high))}
        new: list[tuple] = []
        seen: set[int] = set()
        i = 0
        for row in rows:
            seq = row[1]
            while i < len(runs) and runs[i][1] <= seq:
                i += 1
            if seq in seen or (i < len(runs) and runs[i][0] <= seq):
                old = stored[seq]
                if old != (row[2], row[3], row[4], _sql_type(row[4]), row[5] & BOOLEAN):
                    conflicts.append(seq)
                    self.note_conflict(device_id, seq, source, self._describe(old[0], old[1], old[2], old[4]),
                                       self._describe(row[2], row[3], row[4], row[5] & BOOLEAN), received_ms)
            else:
                new.append(row)
            seen.add(seq)
        return new

    def _describe(self, series: int, t: int, value: Any, boolean: int) -> str:
        name, unit = self._db.execute("SELECT name, unit FROM series WHERE id = ?", (series,)).fetchone()
        return json.dumps([name, unit, t, bool(value) if boolean else value])

    def note_conflict(self, device_id: str, seq: int, source: str, stored: str, offered: str,
                      seen_ms: int) -> None:
        """Keep one conflict: a retransmitted (device, seq) whose content differs from the stored one."""
        self._db.execute("INSERT INTO conflicts (device_id, seq, source, stored, offered, received) "
                         "VALUES (?, ?, ?, ?, ?, ?)", (device_id, seq, source, stored, offered, seen_ms))

    def note_refused(self, device_id: str, source: str, first_seq: int, end_seq: int, reason: str,
                     detail: str, payload: bytes, seen_ms: int) -> None:
        """Keep a refused batch: its bytes, range, reason and time."""
        self._db.execute(
            "INSERT INTO refused (device_id, source, first_seq, end_seq, reason, detail, payload, received) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (device_id, source, first_seq, end_seq, reason, detail, bytes(payload), seen_ms))

    def note_device(self, hello: Hello, seen: float) -> None:
        """Record what a HELLO said; ``seen`` is the host clock when it arrived.

        What provisioning recorded (board, keys, versions) is never
        overwritten: the board is set only on a device the registry did not
        know; the ingest checks a known board before it gets here.
        """
        with self.transaction():
            self._db.execute(
                "INSERT INTO devices (device_id, board, version, first_seen, last_seen, boot, "
                "uptime_ms, boot_start, next_seq, acked, dropped, protocol, refused) "
                "VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) "
                "ON CONFLICT (device_id) DO UPDATE SET board = coalesce(board, ?2), version = ?3, "
                "last_seen = max(last_seen, ?4), boot = ?5, uptime_ms = ?6, boot_start = ?7, "
                "next_seq = ?8, acked = ?9, dropped = max(dropped, ?10), protocol = ?11, "
                "refused = max(refused, ?12)",
                (hello.device_id, hello.board, hello.version, seen, hello.boot, hello.uptime_ms,
                 seen - hello.uptime_ms / 1000, hello.next_seq, hello.acked, hello.dropped,
                 hello.protocol, hello.refused))

    def note_seen(self, device_id: str, seen: float, dropped: int) -> None:
        """A batch of ``device_id`` arrived at ``seen`` (Unix seconds); ``dropped`` is its BATCH key 5."""
        if self._seen is not None:
            last, most = self._seen.get(device_id, (seen, dropped))
            self._seen[device_id] = (max(last, seen), max(most, dropped))
            return
        self._db.execute("UPDATE devices SET last_seen = max(last_seen, ?2), dropped = max(dropped, ?3) "
                         "WHERE device_id = ?1", (device_id, seen, dropped))

    def note_bad_frame(self, source: str, reason: str, sample: bytes,
                       seen: float | None = None) -> None:
        """Count one rejected frame or message from ``source`` (a port or device id)."""
        seen = time.time() if seen is None else seen
        with self.transaction():
            self._db.execute(
                "INSERT INTO ingest_errors (source, reason, count, first_seen, last_seen, sample) "
                "VALUES (?1, ?2, 1, ?3, ?3, ?4) "
                "ON CONFLICT (source, reason) DO UPDATE SET count = count + 1, "
                "last_seen = max(last_seen, ?3), sample = ?4",
                (source, reason, seen, bytes(sample[:SAMPLE_BYTES])))

    def registered_board(self, device_id: str) -> str | None:
        """The board the registry holds for ``device_id`` (from provisioning or a first HELLO)."""
        row = self._db.execute("SELECT board FROM devices WHERE device_id = ?", (device_id,)).fetchone()
        return None if row is None else row[0]

    def add_batch(self, device_id: str, records: Iterable[Record], received: float,
                  *, dropped: int | None = None, source: str = "") -> int:
        """Store resolved ``records`` of ``device_id`` in one transaction; return how many were new.

        A convenience for tests and tools; ingest goes through the registry
        writer. Conflicts are kept as :meth:`insert_samples` says.
        """
        records = list(records)
        for r in records:
            if type(r.name) is not str or type(r.t_ms) is not int:
                raise ValueError(f"record {r.seq}: a name (text) and a time (integer ms) are required")
        received_ms = round(received * 1000)
        with self.transaction():
            dev = self.device_number(device_id, received_ms)
            keys = sorted({(r.name, r.unit or "") for r in records})
            series = dict(zip(keys, self.series_numbers(dev, keys)))
            inserted = 0
            ordered = sorted(records, key=lambda r: r.seq)
            for (boot, estimated), group in groupby(ordered, key=lambda r: (r.boot, bool(r.estimated))):
                rows = [(dev, r.seq, series[(r.name, r.unit or "")], r.t_ms, r.value,
                         BOOLEAN if type(r.value) is bool else 0) for r in group]
                inserted += self.insert_samples(dev, rows, boot, estimated, received_ms, device_id, source)[0]
            self.note_seen(device_id, received, dropped or 0)
        return inserted

    # -- identities (edge provision, edge label, edge flash)

    def record_identity(self, device_id: str, board: str, public_key: bytes, fingerprint: str,
                        setup_verifier: str, setup_code: str | None, operator: str | None,
                        at: float | None = None) -> None:
        """Record a newly minted identity, not yet complete; ``provisioned`` restarts at 0.

        It is complete (:meth:`complete_identity`) once the board holds all
        of it; until then it is an orphan-to-be that ``edge label`` refuses.

        ``setup_code`` is kept in plain only until :meth:`take_setup_code`
        (the label) erases it; the verifier stays. Telemetry and ingest
        columns of an existing row are left as they are.
        """
        at = time.time() if at is None else at
        with self.transaction():
            self._db.execute(
                "INSERT INTO devices (device_id, board, first_seen, last_seen, public_key, "
                "key_fingerprint, setup_verifier, setup_code_pending, label_printed_at, "
                "provisioned, provisioned_by, provisioned_at, identity_complete) "
                "VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6, ?7, NULL, 0, ?8, ?3, 0) "
                "ON CONFLICT (device_id) DO UPDATE SET board = ?2, public_key = ?4, "
                "key_fingerprint = ?5, setup_verifier = ?6, setup_code_pending = ?7, "
                "label_printed_at = NULL, provisioned = 0, provisioned_by = ?8, provisioned_at = ?3, "
                "identity_complete = 0",
                (device_id, board, at, bytes(public_key), fingerprint, setup_verifier,
                 setup_code, operator))

    def complete_identity(self, device_id: str) -> None:
        """The board holds the whole identity of ``device_id`` (config.json written last)."""
        with self.transaction():
            self._db.execute("UPDATE devices SET identity_complete = 1 WHERE device_id = ?", (device_id,))

    def drop_orphan(self, device_id: str) -> bool:
        """Remove an identity whose provisioning was cut short; True if there was one.

        Only an incomplete, never provisioned identity is removed, its plain
        setup code erased from the file (``secure_delete``). A row that ingest
        also uses (telemetry under this id) keeps its telemetry columns and
        loses only the identity.
        """
        self._db.execute("PRAGMA secure_delete = ON")
        with self.transaction():
            row = self._db.execute(
                "SELECT version IS NULL AND NOT EXISTS (SELECT 1 FROM samples s WHERE s.dev = d.dev) "
                "FROM devices d WHERE device_id = ? AND public_key IS NOT NULL "
                "AND identity_complete = 0 AND provisioned = 0", (device_id,)).fetchone()
            if row is None:
                return False
            if row[0]:
                self._db.execute("DELETE FROM devices WHERE device_id = ?", (device_id,))
            else:
                self._db.execute(
                    "UPDATE devices SET public_key = NULL, key_fingerprint = NULL, setup_verifier = NULL, "
                    "setup_code_pending = NULL, provisioned_by = NULL, provisioned_at = NULL, "
                    "identity_complete = 1 WHERE device_id = ?", (device_id,))
        if not self._depth:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return True

    def orphans(self) -> list[str]:
        """Device ids whose identity was recorded but never completed on the board."""
        return [r[0] for r in self._db.execute(
            "SELECT device_id FROM devices WHERE public_key IS NOT NULL AND identity_complete = 0 "
            "ORDER BY device_id")]

    def mark_provisioned(self, device_id: str, firmware_version: str | None,
                         agent_version: str | None) -> None:
        """Mark ``device_id`` good (after its self-test passed), with what it runs."""
        with self.transaction():
            cur = self._db.execute(
                "UPDATE devices SET provisioned = 1, firmware_version = ?2, agent_version = ?3 "
                "WHERE device_id = ?1 AND public_key IS NOT NULL",
                (device_id, firmware_version, agent_version))
            if cur.rowcount != 1:
                raise NotFound(f"device {device_id} has no identity in the registry {self.path}",
                               "run `edge provision` on the board first")

    def take_setup_code(self, device_id: str) -> str | None:
        """The plain setup code of ``device_id`` if still kept, erased from the registry.

        Erased from the file too: ``secure_delete`` zeroes the freed bytes
        and a checkpoint moves the page into the database and empties the WAL
        (best effort: a reader holding an old snapshot delays the WAL's reset).
        """
        self._db.execute("PRAGMA secure_delete = ON")
        with self.transaction():
            row = self._db.execute(
                "SELECT setup_code_pending FROM devices WHERE device_id = ?", (device_id,)).fetchone()
            if row is None or row[0] is None:
                return None
            self._db.execute(
                "UPDATE devices SET setup_code_pending = NULL, label_printed_at = ?2 "
                "WHERE device_id = ?1", (device_id, time.time()))
        if not self._depth:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return row[0]

    def identity(self, device_id: str) -> dict | None:
        """The identity columns of ``device_id``, or None if it was never provisioned.

        These include the setup-code verifier and the plain code while it is
        kept: for provisioning and the label only, never to be shown whole.
        """
        cur = self._db.execute(
            "SELECT device_id, board, public_key, key_fingerprint, setup_verifier, "
            "setup_code_pending, label_printed_at, provisioned, provisioned_by, provisioned_at, "
            "firmware_version, agent_version, identity_complete FROM devices "
            "WHERE device_id = ? AND public_key IS NOT NULL", (device_id,))
        row = cur.fetchone()
        if row is None:
            return None
        out = dict(zip([c[0] for c in cur.description], row))
        out["public_key"] = bytes(out["public_key"])
        out["provisioned"] = bool(out["provisioned"])
        out["identity_complete"] = bool(out["identity_complete"])
        return out

    # -- owner accounts and bonds (edge pair, edge devices, edge gateway)

    def host_id(self) -> bytes:
        """This installation's 16-byte host id (protocol 5.4), made on first use and kept."""
        row = self._db.execute("SELECT value FROM host_settings WHERE name = 'host_id'").fetchone()
        if row is not None:
            return bytes(row[0])
        with self.transaction():
            self._db.execute("INSERT OR IGNORE INTO host_settings (name, value) VALUES ('host_id', ?)",
                             (os.urandom(16),))
            return bytes(self._db.execute("SELECT value FROM host_settings WHERE name = 'host_id'")
                         .fetchone()[0])

    def host_key(self) -> tuple[bytes, bytes]:
        """This installation's static X25519 pair (ea, Ea) for pairing (protocol 5.4.1), made once.

        ``ea`` is a secret like a bond key: it never leaves this method's callers.
        """
        rows = dict(self._db.execute("SELECT name, value FROM host_settings "
                                     "WHERE name IN ('host_key', 'host_pub')").fetchall())
        if "host_key" in rows and "host_pub" in rows:
            return bytes(rows["host_key"]), bytes(rows["host_pub"])
        from edge_agent import crypto

        ea = crypto.sample_scalar()
        pub = crypto.scalar_mult_vfy(ea, b"\x09" + bytes(31))
        with self.transaction():
            self._db.execute("INSERT OR IGNORE INTO host_settings (name, value) VALUES ('host_key', ?)", (ea,))
            self._db.execute("INSERT OR IGNORE INTO host_settings (name, value) VALUES ('host_pub', ?)", (pub,))
            rows = dict(self._db.execute("SELECT name, value FROM host_settings "
                                         "WHERE name IN ('host_key', 'host_pub')").fetchall())
        return bytes(rows["host_key"]), bytes(rows["host_pub"])

    def save_bond(self, device_id: str, account: str, host_id: bytes, bond_id: bytes, bond_key: bytes,
                  device_key: bytes, at: float | None = None, detail: str = "") -> None:
        """Record a new bond of ``device_id`` to ``account`` (replacing this host's
        earlier one with the same account) and audit it as ``paired``.

        A device bound to another account is refused (:class:`Busy`): unpair it first.
        """
        at = time.time() if at is None else at
        with self.transaction():
            owner = self.account_of(device_id)
            if owner is not None and owner != account:
                raise Busy(f"{device_id} is bound to the account {owner!r}",
                           f"`edge devices unpair {device_id} --account {owner}` by its owner, "
                           "or a factory reset of the device")
            self._db.execute("INSERT OR IGNORE INTO accounts (account, created) VALUES (?, ?)", (account, at))
            self._db.execute(
                "INSERT INTO bonds (device_id, account, host_id, bond_id, bond_key, device_key, paired_at) "
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (device_id) DO UPDATE SET account = ?2, "
                "host_id = ?3, bond_id = ?4, bond_key = ?5, device_key = ?6, paired_at = ?7, "
                "last_connected = NULL",
                (device_id, account, bytes(host_id), bytes(bond_id), bytes(bond_key), bytes(device_key), at))
            self.audit(device_id, account, "paired", detail, at)

    def account_of(self, device_id: str) -> str | None:
        """The account ``device_id`` is bound to, or None."""
        row = self._db.execute("SELECT account FROM bonds WHERE device_id = ?", (device_id,)).fetchone()
        return row[0] if row else None

    def bond_secret(self, device_id: str) -> dict | None:
        """The whole bond of ``device_id`` with its key, for the BLE link only: never shown."""
        cur = self._db.execute("SELECT device_id, account, host_id, bond_id, bond_key, device_key "
                               "FROM bonds WHERE device_id = ?", (device_id,))
        row = cur.fetchone()
        if row is None:
            return None
        return {c[0]: (bytes(v) if isinstance(v, (bytes, memoryview)) else v)
                for c, v in zip(cur.description, row)}

    def bonds(self, account: str | None = None) -> list[dict]:
        """The paired devices (:data:`BOND_COLUMNS`, with board and key fingerprint), by device id."""
        sql = ("SELECT b.device_id, b.account, b.paired_at, b.last_connected, d.board, d.key_fingerprint, "
               "lower(hex(b.bond_id)) AS bond_id FROM bonds b LEFT JOIN devices d ON d.device_id = b.device_id")
        args: tuple = ()
        if account is not None:
            sql += " WHERE b.account = ?"
            args = (account,)
        return _dicts(self._db.execute(sql + " ORDER BY b.device_id", args))

    def note_connected(self, device_id: str, at: float | None = None) -> None:
        """A bonded device resumed a session now."""
        with self.transaction():
            self._db.execute("UPDATE bonds SET last_connected = ? WHERE device_id = ?",
                             (time.time() if at is None else at, device_id))

    def drop_bond(self, device_id: str, action: str, detail: str = "", at: float | None = None) -> str | None:
        """Remove the bond of ``device_id`` (its key erased from the file) and audit
        ``action``; the account it had, or None if there was none."""
        self._db.execute("PRAGMA secure_delete = ON")
        with self.transaction():
            account = self.account_of(device_id)
            if account is not None:
                self._db.execute("DELETE FROM bonds WHERE device_id = ?", (device_id,))
            self.audit(device_id, account, action, detail, at)
        return account

    def audit(self, device_id: str, account: str | None, action: str, detail: str = "",
              at: float | None = None) -> None:
        """Append one line to the audit log (``action`` one of :data:`AUDIT_ACTIONS`)."""
        if action not in AUDIT_ACTIONS:
            raise ValueError(f"unknown audit action {action!r}")
        with self.transaction():
            self._db.execute("INSERT INTO audit (t, device_id, account, action, detail) VALUES (?, ?, ?, ?, ?)",
                             (time.time() if at is None else at, device_id, account, action, detail))

    def audit_log(self, device_id: str | None = None, account: str | None = None) -> list[dict]:
        """The audit log, oldest first, of one device and/or account."""
        where, args = [], []
        if device_id is not None:
            where.append("device_id = ?")
            args.append(device_id)
        if account is not None:
            where.append("account = ?")
            args.append(account)
        return _dicts(self._db.execute("SELECT t, device_id, account, action, detail FROM audit"
                                       + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id", args))

    def account_devices(self, account: str) -> set[str]:
        """The device ids bound to ``account``."""
        return {r[0] for r in self._db.execute("SELECT device_id FROM bonds WHERE account = ?", (account,))}

    # -- OTA releases and update state (edge ota publish/rollout/status, the OTA server)

    def add_release(self, *, board: str, component: str, version: str, sequence: int, digest: bytes,
                    size: int, manifest: bytes, image: str, expires: int, fraction: float, halt_at: float,
                    min_devices: int, grow: tuple[float, float] | None = None,
                    at: float | None = None) -> tuple[Release, bool]:
        """Record a release (its image already in the update store); (the release, whether it is new).

        The same (board, component, sequence) again with the same digest is
        the same release re-signed: its manifest and expiry are replaced (the
        freshness of 7.9), its rollout kept. Another digest for a sequence
        published before is refused: a sequence names one image for good.
        """
        at = time.time() if at is None else at
        with self.transaction():
            old = self.release_by_sequence(board, component, sequence)
            if old is not None:
                if old.digest != digest:
                    raise BadInput(f"release {old.id} is already {component} sequence {sequence} for {board}, "
                                   f"with another image (sha256 {old.digest.hex()[:16]}...)",
                                   "sign the new image with a higher --sequence (`edge ota sign`)")
                if old.manifest != manifest and expires > old.expires:
                    self._db.execute("UPDATE releases SET manifest = ?, expires = ? WHERE id = ?",
                                     (manifest, expires, old.id))
                    self._release_event(old.id, "re-signed", f"expires {expires}", at)
                return self.release(old.id) or old, False
            cur = self._db.execute(
                "INSERT INTO releases (board, component, version, sequence, digest, size, manifest, image, "
                "expires, created, fraction, halt_at, min_devices, state, grow_step, grow_period, grown_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'active', ?, ?, ?)",
                (board, component, version, sequence, digest, size, manifest, image, expires, at, fraction,
                 halt_at, min_devices, *(grow or (None, None)), at))
            rid = int(cur.lastrowid or 0)
            self._release_event(rid, "published", f"{version}, fraction {fraction:g}", at)
            if fraction >= 1:
                self._supersede(rid, at)
            release = self.release(rid)
            assert release is not None
            return release, True

    def release(self, release_id: int) -> Release | None:
        """The release ``release_id``, or None."""
        row = self._db.execute(f"SELECT {', '.join(_RELEASE_COLUMNS)} FROM releases WHERE id = ?",
                               (release_id,)).fetchone()
        return None if row is None else Release.from_row(row)

    def release_by_sequence(self, board: str, component: str, sequence: int) -> Release | None:
        """The release of ``component`` ``sequence`` for ``board``, or None."""
        row = self._db.execute(f"SELECT {', '.join(_RELEASE_COLUMNS)} FROM releases "
                               "WHERE board = ? AND component = ? AND sequence = ?",
                               (board, component, sequence)).fetchone()
        return None if row is None else Release.from_row(row)

    def releases(self, board: str | None = None, component: str | None = None,
                 states: Iterable[str] | None = None) -> list[Release]:
        """Releases, newest sequence first, of one board / component / set of states."""
        where, args = _where(board=board, component=component)
        if states is not None:
            states = list(states)
            where += (" AND " if where else " WHERE ") + f"state IN ({', '.join('?' * len(states))})"
            args += states
        sql = f"SELECT {', '.join(_RELEASE_COLUMNS)} FROM releases" + where
        return [Release.from_row(r) for r in self._db.execute(sql + " ORDER BY sequence DESC, id DESC", args)]

    def set_rollout(self, release_id: int, *, fraction: float | None = None, state: str | None = None,
                    reason: str | None = None, at: float | None = None) -> Release:
        """Change a release's fraction and/or state (``active``, ``paused``, ``halted``), with history.

        Leaving ``halted`` (resume) clears the halt reason; a fraction of 1
        makes older releases of the same board and component ``done``.
        """
        at = time.time() if at is None else at
        if fraction is not None and not 0 <= fraction <= 1:
            raise BadInput(f"a rollout fraction is 0..1, not {fraction:g}", "pass --fraction 0.25 for 25 %")
        if state is not None and state not in RELEASE_STATES:
            raise ValueError(f"unknown release state {state!r}")
        with self.transaction():
            old = self.release(release_id)
            if old is None:
                raise NotFound(f"no release {release_id} in the registry {self.path}",
                               "see the releases with `edge ota status`")
            if old.state == "done" and state is not None and state != "done":
                raise BadInput(f"release {release_id} is done: a later release of {old.board} "
                               f"{old.component} went to every device", "publish a new release instead")
            if fraction is not None and fraction != old.fraction:
                self._db.execute("UPDATE releases SET fraction = ?, grown_at = ? WHERE id = ?",
                                 (fraction, at, release_id))
                self._release_event(release_id, "fraction", f"{old.fraction:g} -> {fraction:g}", at)
                if fraction >= 1:
                    self._supersede(release_id, at)
            if state is not None and state != old.state:
                self._db.execute("UPDATE releases SET state = ?, halt_reason = ? WHERE id = ?",
                                 (state, reason if state == "halted" else None, release_id))
                self._release_event(release_id, state, reason, at)
            new = self.release(release_id)
            assert new is not None
            return new

    def _supersede(self, release_id: int, at: float) -> None:
        """Release ``release_id`` goes to every device: older ones of its board and component are done."""
        board, component, sequence = self._db.execute(
            "SELECT board, component, sequence FROM releases WHERE id = ?", (release_id,)).fetchone()
        for (rid,) in self._db.execute(
                "SELECT id FROM releases WHERE board = ? AND component = ? AND sequence < ? "
                "AND state != 'done'", (board, component, sequence)).fetchall():
            self._db.execute("UPDATE releases SET state = 'done' WHERE id = ?", (rid,))
            self._release_event(rid, "done", f"superseded by release {release_id}", at)

    def grow_rollouts(self, at: float | None = None) -> list[tuple[Release, float]]:
        """Grow each active release's fraction whose schedule is due; [(release after, fraction before)]."""
        at = time.time() if at is None else at
        grown = []
        with self.transaction():
            for r in self.releases(states=("active",)):
                if not r.grow_step or not r.grow_period or r.fraction >= 1:
                    continue
                if at - (r.grown_at or r.created) < r.grow_period:
                    continue
                new = self.set_rollout(r.id, fraction=min(1.0, round(r.fraction + r.grow_step, 6)), at=at)
                grown.append((new, r.fraction))
        return grown

    def _release_event(self, release_id: int, state: str, reason: str | None, at: float) -> None:
        self._db.execute("INSERT INTO ota_history (t, release, state, reason) VALUES (?, ?, ?, ?)",
                         (at, release_id, state, reason))

    def note_ota_state(self, device_id: str, component: str, sequence: int, state: str, *,
                       release_id: int | None = None, held: int | None = None, size: int | None = None,
                       check: str | None = None, reason: str | None = None, source: str = "",
                       at: float | None = None) -> Release | None:
        """Record one update transition of ``device_id`` (``state`` of :data:`OTA_DEVICE_STATES`).

        The transition always goes to the history; with a release (the
        registry's for the device's board, component and sequence) it is also
        the device's state for that release, and the release's halt rule is
        weighed again. An ``offered`` never hides a transfer in progress.
        Returns the release when this transition halted it, else None.
        """
        if state not in OTA_DEVICE_STATES:
            raise ValueError(f"unknown OTA state {state!r}")
        at = time.time() if at is None else at
        with self.transaction():
            self._db.execute(
                "INSERT INTO ota_history (t, device_id, release, component, sequence, state, held, size, "
                "check_name, reason, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (at, device_id, release_id, component, sequence, state, held, size, check, reason, source))
            if release_id is None:
                return None
            keep = f"state IN ({', '.join('?' * len(OTA_IN_PROGRESS))})" if state == "offered" else "0"
            self._db.execute(
                "INSERT INTO ota_devices (device_id, release, state, held, size, check_name, reason, source, "
                "updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device_id, release) DO UPDATE SET "
                "state = excluded.state, held = coalesce(excluded.held, CASE WHEN excluded.state IN "
                "('downloading', 'stalled') THEN held END), size = coalesce(excluded.size, size), "
                "check_name = excluded.check_name, reason = excluded.reason, source = excluded.source, "
                f"updated = excluded.updated WHERE NOT ({keep})",
                (device_id, release_id, state, held, size, check, reason, source, at,
                 *(OTA_IN_PROGRESS if state == "offered" else ())))
            if state in OTA_ATTEMPTED:     # a new attempt can bring the count to the minimum
                return self._weigh_halt(release_id, at)
        return None

    def note_ota_progress(self, device_id: str, release_id: int, held: int, size: int, source: str = "",
                          at: float | None = None) -> None:
        """A transfer's progress (bytes the device acknowledged): the device's state, not the history."""
        with self.transaction():
            self._db.execute(
                "INSERT INTO ota_devices (device_id, release, state, held, size, source, updated) "
                "VALUES (?, ?, 'downloading', ?, ?, ?, ?) ON CONFLICT (device_id, release) DO UPDATE SET "
                "held = excluded.held, size = excluded.size, source = excluded.source, "
                "updated = excluded.updated, state = CASE WHEN state IN ('offered', 'stalled') "
                "THEN 'downloading' ELSE state END",
                (device_id, release_id, held, size, source, time.time() if at is None else at))

    def _weigh_halt(self, release_id: int, at: float) -> Release | None:
        """Halt an active release whose failed share passed its threshold; the release if it did."""
        from edge_ota.rollout import halt_reason

        release = self.release(release_id)
        if release is None or release.state != "active":
            return None
        counts = self.ota_counts(release_id)
        attempted = sum(counts.get(s, 0) for s in OTA_ATTEMPTED)
        failed = sum(counts.get(s, 0) for s in OTA_FAILED)
        why = halt_reason(attempted, failed, release.halt_at, release.min_devices)
        if why is None:
            return None
        return self.set_rollout(release_id, state="halted", reason=why, at=at)

    def ota_counts(self, release_id: int) -> dict[str, int]:
        """How many devices are in each state for ``release_id``."""
        return dict(self._db.execute("SELECT state, count(*) FROM ota_devices WHERE release = ? "
                                     "GROUP BY state", (release_id,)).fetchall())

    def ota_device(self, device_id: str, release_id: int) -> dict | None:
        """The state of ``device_id`` for ``release_id``, or None if it never had one."""
        rows = self.ota_devices(device_id=device_id, release_id=release_id)
        return rows[0] if rows else None

    def ota_devices(self, device_id: str | None = None, release_id: int | None = None) -> list[dict]:
        """Per device and release: state, held, size, percent, check, reason, source, updated; latest first."""
        where, args = _where(o__device_id=device_id, o__release=release_id)
        rows = _dicts(self._db.execute(
            "SELECT o.device_id, o.release, r.component, r.sequence, r.version, o.state, o.held, "
            "coalesce(o.size, r.size) AS size, o.check_name AS 'check', o.reason, o.source, o.updated "
            "FROM ota_devices o JOIN releases r ON r.id = o.release" + where
            + " ORDER BY o.updated DESC, o.device_id", args))
        for row in rows:
            row["percent"] = (min(100, row["held"] * 100 // row["size"])
                              if row["held"] is not None and row["size"] else None)
        return rows

    def ota_history(self, device_id: str | None = None, release_id: int | None = None) -> list[dict]:
        """The OTA history, oldest first, of one device and/or release."""
        where, args = _where(device_id=device_id, release=release_id)
        return _dicts(self._db.execute(
            "SELECT t, device_id, release, component, sequence, state, held, size, check_name AS 'check', "
            "reason, source FROM ota_history" + where + " ORDER BY id", args))

    def boards_devices(self, board: str) -> list[str]:
        """The device ids the registry holds for ``board``."""
        return [r[0] for r in self._db.execute("SELECT device_id FROM devices WHERE board = ? "
                                               "ORDER BY device_id", (board,))]

    # -- reading

    def device(self, device_id: str) -> dict | None:
        """The registry's row for ``device_id`` (:data:`DEVICE_COLUMNS`) as a dict, or None."""
        cur = self._db.execute(f"SELECT {_DEVICE_SELECT} FROM devices d WHERE device_id = ?", (device_id,))
        row = cur.fetchone()
        return dict(zip([c[0] for c in cur.description], row)) if row else None

    def devices(self) -> list[dict]:
        """Every device row (:data:`DEVICE_COLUMNS`), by device id."""
        cur = self._db.execute(f"SELECT {_DEVICE_SELECT} FROM devices d ORDER BY device_id")
        names = [c[0] for c in cur.description]
        return [dict(zip(names, row)) for row in cur]

    def last_ports(self) -> dict[str, str]:
        """device id -> the link (port) its latest stored batch came on, for
        the devices whose batches say one."""
        cur = self._db.execute(
            "SELECT d.device_id, b.source FROM devices d JOIN batches b ON b.dev = d.dev "
            "WHERE b.source != '' AND b.received = (SELECT max(received) FROM batches "
            "WHERE dev = d.dev AND source != '')")
        return dict(cur.fetchall())

    def bad_frames(self) -> list[dict]:
        """The rejected-input counters, one dict per (source, reason)."""
        cur = self._db.execute("SELECT source, reason, count, first_seen, last_seen, sample FROM ingest_errors ORDER BY source, reason")
        names = [c[0] for c in cur.description]
        return [dict(zip(names, row)) for row in cur]

    def query(self, device: str | None = None, since: float | None = None,
              until: float | None = None, name: str | None = None, limit: int | None = None,
              *, newest_first: bool = False) -> Iterator[StoredRecord]:
        """Stored records, ordered by time (then device and sequence number), streamed.

        ``since`` is inclusive and ``until`` exclusive (Unix seconds); ``name``
        is a glob (``temp*``), case-sensitive; ``newest_first`` reverses the
        order, so that ``limit`` keeps the latest records.
        """
        low = None if since is None else _ms_bound(since)
        high = None if until is None else _ms_bound(until)
        if newest_first and limit is not None and name is None:
            # The limit-th latest run end: each of those runs holds a record at
            # its t_max, so the latest ``limit`` records are at or after it.
            low = self._latest_run_end(device, low, high, int(limit)) or low
        where: list[str] = []
        args: list[Any] = []
        if device is not None:
            where.append("b.dev = (SELECT dev FROM devices WHERE device_id = ?)")
            args.append(device)
        if low is not None:
            where.append("b.t_max >= ? AND s.t >= ?")
            args += [low, low]
        if high is not None:
            where.append("b.t_min < ? AND s.t < ?")
            args += [high, high]
        if name is not None:
            where.append("r.name GLOB ?")
            args.append(name)
        sql = _SELECT_BY_RUN
        if where:
            sql += " WHERE " + " AND ".join(where)
        order = "DESC" if newest_first else "ASC"
        sql += f" ORDER BY s.t {order}, s.dev {order}, s.seq {order}"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        for row in self._db.execute(sql, args):
            yield StoredRecord.from_row(row)

    def _latest_run_end(self, device: str | None, low: int | None, high: int | None, n: int) -> int | None:
        """The ``n``-th highest ``t_max`` of the runs in [low, high) (of one device), or None."""
        where = ["t_max >= ?", "t_max < ?"]
        args: list[Any] = [-2**63 if low is None else low, 2**63 - 1 if high is None else high]
        if device is not None:
            where.append("dev = (SELECT dev FROM devices WHERE device_id = ?)")
            args.append(device)
        row = self._db.execute("SELECT t_max FROM batches WHERE " + " AND ".join(where)
                               + " ORDER BY t_max DESC LIMIT 1 OFFSET ?", (*args, n - 1)).fetchone()
        return None if row is None else row[0]

    def records_after(self, device_id: str, seq: int, limit: int | None = None) -> list[StoredRecord]:
        """Records of ``device_id`` with a sequence number above ``seq``, in sequence order."""
        sql = _SELECT + " WHERE d.device_id = ? AND s.seq > ? ORDER BY s.seq"
        args: list = [device_id, seq]
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        return [StoredRecord.from_row(row) for row in self._db.execute(sql, args)]

    def latest_values(self, device: str | None = None,
                      after_seq: int | None = None) -> list[StoredRecord]:
        """The last record (highest sequence number) of each (device, name).

        With ``device`` and ``after_seq``, only records of that device above
        that sequence number are considered (a cheap range of the primary key).
        """
        where: list[str] = []
        args: list[Any] = []
        if device is not None:
            where.append("dev = (SELECT dev FROM devices WHERE device_id = ?)")
            args.append(device)
            if after_seq is not None:
                where.append("seq > ?")
                args.append(after_seq)
        sql = (_SELECT + " JOIN (SELECT dev, series, max(seq) AS seq FROM samples "
               + ("WHERE " + " AND ".join(where) + " " if where else "")
               + "GROUP BY dev, series) m ON s.dev = m.dev AND s.seq = m.seq "
               "ORDER BY d.device_id, r.name")
        return [StoredRecord.from_row(row) for row in self._db.execute(sql, args)]

    def seq_range(self, device_id: str, after_seq: int = -1) -> tuple[int, int | None]:
        """(count, highest sequence number) of the records of ``device_id`` above ``after_seq``."""
        count, top = self._db.execute(
            "SELECT count(*), max(seq) FROM samples WHERE dev = "
            "(SELECT dev FROM devices WHERE device_id = ?) AND seq > ?", (device_id, after_seq)).fetchone()
        return count, top

    def next_missing(self, device_id: str, start: int = 0) -> int:
        """The lowest sequence number at or above ``start`` not stored for ``device_id``."""
        expected = start
        for (seq,) in self._db.execute(
                "SELECT seq FROM samples WHERE dev = (SELECT dev FROM devices WHERE device_id = ?) "
                "AND seq >= ? ORDER BY seq", (device_id, start)):
            if seq != expected:
                break
            expected += 1
        return expected

    def count(self, device: str | None = None) -> int:
        """How many records are stored (for one device, or all)."""
        if device is None:
            return self._db.execute("SELECT count(*) FROM samples").fetchone()[0]
        return self._db.execute("SELECT count(*) FROM samples WHERE dev = "
                                "(SELECT dev FROM devices WHERE device_id = ?)", (device,)).fetchone()[0]

    def refused_batches(self, device: str | None = None) -> list[dict]:
        """Refused batches, oldest first: device, link, range, reason, detail, bytes and time (ms)."""
        sql = ("SELECT id, device_id, source, first_seq, end_seq, reason, detail, payload, received "
               "FROM refused") + (" WHERE device_id = ?" if device else "") + " ORDER BY id"
        cur = self._db.execute(sql, (device,) if device else ())
        names = [c[0] for c in cur.description]
        return [{**dict(zip(names, row)), "payload": bytes(row[names.index("payload")])} for row in cur]

    def conflicts(self, device: str | None = None) -> list[dict]:
        """Conflicting retransmissions, oldest first."""
        sql = ("SELECT id, device_id, seq, source, stored, offered, received "
               "FROM conflicts") + (" WHERE device_id = ?" if device else "") + " ORDER BY id"
        cur = self._db.execute(sql, (device,) if device else ())
        names = [c[0] for c in cur.description]
        return [dict(zip(names, row)) for row in cur]

    def summary(self) -> list[dict]:
        """One dict per device: its row (:data:`DEVICE_COLUMNS`) plus records, names, time range (ms), gaps, refused, conflicts.

        ``gaps`` counts the sequence numbers missing between the lowest and
        the highest stored one; ``first_t``/``last_t`` are ms since 1970 or None.
        """
        cur = self._db.execute(
            f"SELECT {_DEVICE_SELECT}, coalesce(a.records, 0) AS records, a.min_seq, a.max_seq, a.first_t, a.last_t, "
            "coalesce(a.estimated, 0) AS estimated, "
            "(SELECT count(*) FROM refused f WHERE f.device_id = d.device_id) AS refused_batches, "
            "(SELECT count(*) FROM conflicts c WHERE c.device_id = d.device_id) AS conflicts "
            "FROM devices d LEFT JOIN (SELECT dev, sum(end_seq - first_seq) AS records, min(first_seq) AS min_seq, "
            "max(end_seq) - 1 AS max_seq, min(t_min) AS first_t, max(t_max) AS last_t, "
            "sum((estimated != 0) * (end_seq - first_seq)) AS estimated "
            "FROM batches GROUP BY dev) a ON a.dev = d.dev ORDER BY d.device_id")
        columns = [c[0] for c in cur.description]
        out = [dict(zip(columns, row)) for row in cur]
        names: dict[int, list[str]] = {}
        for dev, name in self._db.execute(
                "SELECT DISTINCT r.dev, r.name FROM series r WHERE EXISTS "
                "(SELECT 1 FROM samples s WHERE s.dev = r.dev AND s.series = r.id) ORDER BY r.dev, r.name"):
            names.setdefault(dev, []).append(name)
        for entry in out:
            entry["names"] = names.get(entry["dev"], [])
            entry["gaps"] = (entry["max_seq"] - entry["min_seq"] + 1 - entry["records"]
                             if entry["records"] else 0)
        return out

    # -- lifetime

    def close(self) -> None:
        """Close the connection (idempotent)."""
        try:
            self._db.execute("PRAGMA optimize")
        except sqlite3.Error:   # already closed, or busy: the statistics can wait
            pass
        self._db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
