"""A damaged, read-only or full registry, and export targets that are not regular files.

Each cause is named as what it is (never "move this file away" for a good
registry), and an export that fails leaves nothing half written.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from edge_agent.errors import BadInput
from edge_agent.store import Record, Store, registry_error
from tests.harness import invoke

T0 = 1_700_000_000_000


def filled(path: Path, records: int = 3000) -> Path:
    with Store(path) as s:
        s.add_batch("esp32-0a0b0c0d0e0f", [Record(i, "temp", "Cel", 20 + i / 100, T0 + i * 1000, False, 1)
                                           for i in range(records)], 1.0)
    return path


def corrupt_a_samples_page(path: Path) -> None:
    """Overwrite a leaf page of the samples table past its first rows with garbage."""
    db = sqlite3.connect(path)
    size = db.execute("PRAGMA page_size").fetchone()[0]
    pages = [n for (n,) in db.execute("SELECT pageno FROM dbstat WHERE name = 'samples' "
                                      "AND pagetype = 'leaf' ORDER BY pageno")]
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    page = pages[len(pages) * 2 // 3]
    with open(path, "r+b") as f:
        f.seek((page - 1) * size)
        f.write(bytes([0x0D, 0xFF, 0xFF, 0xFF]) + b"\xA5" * (size - 4))


def test_a_registry_with_a_malformed_page_is_refused_for_writing_and_named_corrupt(tmp_path):
    db = filled(tmp_path / "registry.db")
    corrupt_a_samples_page(db)
    before = db.read_bytes()
    with pytest.raises(BadInput) as e:
        Store(db)
    assert "corrupt" in e.value.message and "move" not in (e.value.hint or "")
    assert "backup" in e.value.hint and ".recover" in e.value.hint
    assert db.read_bytes() == before, "nothing was written into the damaged file"


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl", "senml-json", "senml-cbor"])
def test_export_of_a_corrupt_registry_names_the_corruption_and_writes_nothing(tmp_path, fmt):
    db = filled(tmp_path / "registry.db")
    corrupt_a_samples_page(db)
    r = invoke("telemetry", "export", "--format", fmt, "--db", str(db))
    assert r.exit_code == 5, r.output
    assert r.stdout_bytes == b"", "not one byte of a half export"
    assert "corrupt" in r.stderr and "Traceback" not in r.output
    out = tmp_path / "out"
    out.write_text("the previous export\n")
    r = invoke("telemetry", "export", "--format", fmt, "--db", str(db), "-o", str(out))
    assert r.exit_code == 5 and "corrupt" in r.stderr
    assert out.read_text() == "the previous export\n"
    assert not [p.name for p in tmp_path.iterdir() if "partial" in p.name], "no temporary file left"


def test_show_of_a_corrupt_registry_is_an_error_naming_the_corruption_not_a_traceback(tmp_path):
    db = filled(tmp_path / "registry.db")
    corrupt_a_samples_page(db)
    r = invoke("telemetry", "show", "--records", "--limit", "5000", "--db", str(db))
    assert r.exit_code == 5, r.output
    assert r.stdout == "" and "corrupt" in r.stderr and "move" not in r.stderr


def test_a_file_that_is_not_a_database_is_named_as_such_and_a_foreign_sqlite_file_too(tmp_path):
    junk = tmp_path / "notes.db"
    junk.write_bytes(b"these are my notes, not a database" * 200)
    with pytest.raises(BadInput) as e:
        Store(junk)
    assert "not an Edge registry" in e.value.message
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(BadInput) as e:
        Store(other)
    assert "not an Edge registry" in e.value.message


def test_a_full_disk_is_named_full_not_a_wrong_file(tmp_path):
    db = filled(tmp_path / "registry.db", records=10)
    with Store(db) as s:
        s._db.execute("PRAGMA max_page_count = 8")   # SQLite's own "disk full" (SQLITE_FULL)
        with pytest.raises(sqlite3.Error) as raised:
            s.add_batch("esp32-0a0b0c0d0e0f", [Record(i, "temp", "Cel", 1.5, T0 + i, False, 1)
                                               for i in range(100, 5000)], 2.0)
    err = registry_error(db, raised.value, writing=True)
    assert "full" in err.message and "not an Edge registry" not in err.message
    assert "free some space" in err.hint


# Read-only files and folders: root ignores permission bits, so as root these
# run as the unprivileged user "nobody" in a subprocess.

_OPEN_FOR_WRITING = """
import os, sys
from edge_agent.errors import EdgeError
from edge_agent.store import Store
if os.geteuid() == 0:          # imports done as root (its Python is not readable by others)
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
try:
    Store(sys.argv[1]).close()
except EdgeError as e:
    print(e.message); print(e.hint)
else:
    print("opened")
"""


def open_for_writing_as_other_user(db: Path) -> str:
    r = subprocess.run([sys.executable, "-c", _OPEN_FOR_WRITING, str(db)], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "EDGE_HOME": str(db.parent / "home")})
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture
def shared_folder():
    folder = Path(tempfile.mkdtemp(prefix="edge-ro-"))
    os.chmod(folder, 0o777)
    yield folder
    for p in folder.iterdir():
        p.unlink()
    os.chmod(folder, 0o700)
    folder.rmdir()


def test_a_read_only_registry_file_or_folder_is_named_read_only_not_a_wrong_file(shared_folder):
    db = filled(shared_folder / "registry.db", records=10)
    owner = os.stat(db).st_uid
    for name in ("registry.db", "registry.db-wal", "registry.db-shm"):
        if (shared_folder / name).exists():
            os.chmod(shared_folder / name, 0o644)
    if os.geteuid() == 0:
        os.chown(shared_folder, owner, 0)
    out = open_for_writing_as_other_user(db)
    assert "read-only" in out and "registry.db" in out, out
    assert "not an Edge registry" not in out and "move" not in out

    new = shared_folder / "new.db"
    os.chmod(shared_folder, 0o755)
    out = open_for_writing_as_other_user(new)
    assert "read-only" in out and f"the folder {shared_folder}" in out, out
    os.chmod(shared_folder, 0o777)


# -- export targets

def test_export_refuses_a_symlink_a_fifo_and_a_device_and_leaves_them_as_they_were(tmp_path):
    db = filled(tmp_path / "registry.db", records=5)
    real = tmp_path / "real.csv"
    real.write_text("kept\n")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for target, kind in ((link, "symbolic link"), (fifo, "FIFO"), (Path("/dev/null"), "device")):
        r = invoke("telemetry", "export", "--db", str(db), "-o", str(target))
        assert r.exit_code == 5, r.output
        assert f"is a {kind}" in r.stderr and "> PATH" in r.stderr
    assert link.is_symlink() and real.read_text() == "kept\n"
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_export_replaces_a_regular_file_keeping_its_mode_and_makes_new_ones_by_the_umask(tmp_path):
    db = filled(tmp_path / "registry.db", records=5)
    old = tmp_path / "old.csv"
    old.write_text("x\n")
    os.chmod(old, 0o640)
    r = invoke("telemetry", "export", "--db", str(db), "-o", str(old))
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE(old.stat().st_mode) == 0o640 and old.read_text().count("\n") == 6
    mask = os.umask(0o022)
    try:
        r = invoke("telemetry", "export", "--db", str(db), "-o", str(tmp_path / "new.csv"))
    finally:
        os.umask(mask)
    assert r.exit_code == 0 and stat.S_IMODE((tmp_path / "new.csv").stat().st_mode) == 0o644


def test_export_to_stdout_still_streams_every_format_whole(tmp_path):
    db = filled(tmp_path / "registry.db", records=50)
    r = invoke("telemetry", "export", "--db", str(db))
    assert r.exit_code == 0 and r.stdout.count("\n") == 51
    r = invoke("telemetry", "export", "--format", "senml-cbor", "--db", str(db))
    import cbor2

    assert r.exit_code == 0 and len(cbor2.loads(r.stdout_bytes)) >= 50
