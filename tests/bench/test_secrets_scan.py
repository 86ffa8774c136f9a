"""No secret leaves through a command: a virtual bench is flashed and labelled,
then every `edge` command that reads state runs, and its output, the exports
and every log are scanned for the setup codes, verifiers and private keys.

Also here: a virtual board's identity files are its owner's alone, and a
provisioning cut after the registry row is written leaves no orphan that
could be labelled.
"""

from __future__ import annotations

import base64
import json
import os
import re
import stat
from pathlib import Path

import pytest
from Crypto.PublicKey import ECC

from edge_agent.board_link import BoardLink
from edge_agent.boards import load_board
from edge_agent.errors import DeviceError
from edge_agent.identity import provision
from edge_agent.label import format_code
from edge_agent.store import Store

FORMATS = ["csv", "json", "jsonl", "senml-json", "senml-cbor"]


def _b64_forms(data: bytes) -> list[bytes]:
    """Base64 of ``data`` at each of the three alignments it can have inside a longer text."""
    out = []
    for pad in range(3):
        enc = base64.b64encode(b"\0" * pad + data)
        start = (pad * 4 + 2) // 3 + 1          # skip characters mixed with the padding
        out.append(enc[start:start + 16])
    return out


class Secrets:
    """Every spelling of the bench's secrets, and a scan for them."""

    def __init__(self) -> None:
        self.codes: list[str] = []
        self.forms: list[tuple[str, bytes]] = []

    def add_code(self, code: str) -> None:
        self.codes.append(code)
        self.forms.append((f"setup code {format_code(code)}", format_code(code).encode()))

    def add_verifier(self, verifier: str) -> None:
        salt, digest = (bytes.fromhex(x) for x in verifier.split("$")[-2:])
        self.forms += [("verifier", verifier.encode()), ("verifier salt", salt.hex().encode()),
                       ("verifier hash", digest.hex().encode()), ("verifier hash", digest.hex().upper().encode())]
        self.forms += [("verifier hash b64", f) for f in _b64_forms(digest)]
        self.forms += [("verifier salt b64", f) for f in _b64_forms(salt)]

    def add_key(self, key: bytes) -> None:
        pem = ECC.construct(curve="curve25519", seed=key).export_key(format="PEM")
        body = "".join(pem.splitlines()[1:-1]).encode()
        self.forms += [("private key", key), ("private key hex", key.hex().encode()),
                       ("private key hex", key.hex().upper().encode()), ("private key PEM", body)]
        self.forms += [("private key b64", f) for f in _b64_forms(key)]

    def add_bond_key(self, key: bytes) -> None:
        self.forms += [("bond key", key), ("bond key hex", key.hex().encode()),
                       ("bond key hex", key.hex().upper().encode())]
        self.forms += [("bond key b64", f) for f in _b64_forms(key)]

    def found(self, data: bytes | str) -> list[str]:
        if isinstance(data, str):
            data = data.encode()
        hits = [what for what, form in self.forms if form in data]
        for code in self.codes:   # a whole number: not the same digits inside a longer one
            if re.search(rb"(?<![0-9])" + code.encode() + rb"(?![0-9])", data):
                hits.append(f"setup code {code}")
        return hits


def take_secrets(bench, boards) -> Secrets:
    secrets = Secrets()
    with Store(bench.db) as store:
        for d in store.devices():
            ident = store.identity(d["device_id"])
            if ident is None:
                continue
            secrets.add_verifier(ident["setup_verifier"])
            if ident["setup_code_pending"]:
                secrets.add_code(ident["setup_code_pending"])
        for b in store.bonds():           # edge pair's bonds: their keys never leave the registry
            secrets.add_bond_key(store.bond_secret(b["device_id"])["bond_key"])
        secrets.add_bond_key(store.host_key()[0])   # the host's static pairing key: the same rule
    for b in boards:
        ident = Path(b["fs"]) / "identity"
        secrets.add_key((ident / "key").read_bytes()[:-4])
        secrets.add_code((ident / "setup").read_bytes()[:-4].decode())
    return secrets


def reading_commands(bench, boards, ids, out: Path) -> list[tuple[str, ...]]:
    port = boards[0]["port"]
    cmds: list[tuple[str, ...]] = [
        ("telemetry", "show"), ("telemetry", "show", "--json"), ("telemetry", "show", "-r"),
        ("telemetry", "show", "-r", "--json"), ("telemetry", "show", "-d", ids[0], "--json"),
        ("telemetry", "live", "--once"),
        ("telemetry", "export", "--json"),
        ("sim", "ls"), ("sim", "ls", "--json"),
        ("flash", "--all", "--json"), ("flash", "--all"),
        ("provision", "--port", port, "--json"), ("provision", "--port", port),
        ("monitor", port, "--for", "2"),
        ("telemetry", "ingest", "--sim", "--for", "3", "--json"),
        ("devices",), ("devices", "--json"), ("devices", "show", ids[0]), ("devices", "show", ids[0], "--json"),
    ]
    for fmt in FORMATS:
        cmds += [("telemetry", "export", "--format", fmt),
                 ("telemetry", "export", "--format", fmt, "-o", str(out / f"export.{fmt}"))]
    for fmt in ("csv", "json", "jsonl"):
        cmds += [("telemetry", "export", "--refused", "--format", fmt),
                 ("telemetry", "export", "--refused", "--format", fmt, "-o", str(out / f"refused.{fmt}"))]
    return cmds


def scan_everything(bench, boards, secrets: Secrets, runs: list, out: Path, phase: str) -> list[str]:
    leaks = []
    for args, proc in runs:
        for name, text in (("stdout", proc.stdout), ("stderr", proc.stderr)):
            leaks += [f"{phase}: edge {' '.join(args)} {name}: {hit}" for hit in secrets.found(text)]
    logs = [p for p in bench.sim_dir.rglob("*.log")] + \
        [p for p in bench.root.rglob("*.log")]
    assert any(p.name == "console.log" for p in logs)
    for path in logs + [p for p in out.iterdir() if p.is_file()]:
        leaks += [f"{phase}: {path}: {hit}" for hit in secrets.found(path.read_bytes())]
    return leaks


@pytest.mark.slow
def test_no_output_export_or_log_holds_a_setup_code_verifier_or_private_key(bench, tmp_path):
    boards = bench.up("esp32", "picow", blank=True)
    ids = [r["device_id"] for r in json.loads(bench.edge("flash", "--all", "--json").stdout)]
    bench.edge("telemetry", "ingest", "--sim", "--for", "3", timeout=60)
    with Store(bench.db) as store:    # a bond as `edge pair` keeps it
        store.save_bond(ids[0], "home", store.host_id(), os.urandom(8), os.urandom(32), os.urandom(32))
    secrets = take_secrets(bench, boards)
    assert len(secrets.codes) == 4, "each board's code, from the registry and from its flash"
    out = tmp_path / "exports"
    out.mkdir()

    # Before the labels: only `edge label` may show a code.
    runs = [(args, bench.edge(*args, text=False, timeout=90)) for args in reading_commands(bench, boards, ids, out)]
    assert not scan_everything(bench, boards, secrets, runs, out, "before the labels")

    labels = tmp_path / "labels"
    for device in ids:
        made = bench.edge("label", device, "--out", str(labels))
        assert [c for c in secrets.codes if format_code(c) in made.stdout], "the label shows its code"
    with Store(bench.db) as store:
        assert all(store.identity(d)["setup_code_pending"] is None for d in ids)
    held = b"".join(p.read_bytes() for p in Path(bench.db).parent.glob("registry.db*"))
    assert not [c for c in secrets.codes if c.encode() in held], "the registry file forgot the codes"

    # After the labels: nowhere, the label command included.
    for p in out.iterdir():
        p.unlink()
    runs = [(args, bench.edge(*args, text=False, timeout=90)) for args in reading_commands(bench, boards, ids, out)]
    runs += [(("label", d), bench.edge("label", d, "--out", str(labels), check=False, text=False)) for d in ids]
    runs += [(("label", d, "--json"), bench.edge("label", d, "--json", check=False, text=False)) for d in ids]
    assert all(p.returncode == 3 for a, p in runs if a[0] == "label")
    assert not scan_everything(bench, boards, secrets, runs, out, "after the labels")
    assert len(list(out.iterdir())) == len(FORMATS) + 3, "every -o export was written and scanned"


def test_a_virtual_boards_identity_files_are_readable_only_by_their_owner(bench):
    (board,) = bench.up("esp32c3", blank=True)
    bench.edge("flash", "--all")
    ident = Path(board["fs"]) / "identity"
    assert stat.S_IMODE(ident.stat().st_mode) == 0o700
    for name in ("key", "setup"):
        assert stat.S_IMODE((ident / name).stat().st_mode) == 0o600, name


class CutAfter:
    """A board link that loses the board right after the registry row is written.

    The first write of the setup code is where `provision` goes to the board
    after recording the identity: the link fails there, as on a power cut.
    """

    def __init__(self, link: BoardLink):
        self.link = link

    def __getattr__(self, name):
        return getattr(self.link, name)

    def exec(self, code, *a, **kw):
        if "write_setup" in code:
            raise DeviceError(f"the board on {self.link.port} stopped answering", "check its power")
        return self.link.exec(code, *a, **kw)


def provision_cut(bench, board) -> str | None:
    """Provision ``board`` with the cut; the device id the registry row was written for."""
    with BoardLink(board["port"]) as link, Store(bench.db) as store:
        seen: list[str] = []
        record = store.record_identity
        store.record_identity = lambda device_id, *a, **kw: (seen.append(device_id), record(device_id, *a, **kw))
        with pytest.raises(DeviceError):
            provision(CutAfter(link), store, load_board(board["board"]))
        return seen[0] if seen else None


def test_a_provisioning_cut_after_the_registry_row_leaves_no_orphan_and_the_rerun_is_whole(bench):
    (board,) = bench.up("esp32", blank=True)
    first = json.loads(bench.edge("flash", "--all", "--json").stdout)[0]["device_id"]
    # A config not naming the board's key: the next provisioning mints a new identity.
    (Path(board["fs"]) / "config.json").write_text(json.dumps({"device_id": "esp32-cut"}))

    orphan = provision_cut(bench, board)
    assert orphan
    with Store(bench.db) as store:
        assert store.identity(orphan) is None and store.orphans() == []
    r = bench.edge("label", orphan, check=False)
    assert r.returncode == 3 and not re.search(r"\b\d{4}-\d{4}\b", r.stdout + r.stderr)

    again = json.loads(bench.edge("flash", "--all", "--json").stdout)[0]
    assert again["ok"] and again["identity_created"] and again["device_id"] not in (orphan, first)
    with Store(bench.db) as store:
        assert store.orphans() == [] and store.identity(again["device_id"])["provisioned"]
    assert json.loads(bench.edge("label", again["device_id"], "--json").stdout)["setup_code"]


def test_an_orphan_left_by_a_bench_that_stopped_is_refused_by_label_and_removed_by_the_rerun(
        bench, monkeypatch):
    (board,) = bench.up("picow", blank=True)
    bench.edge("flash", "--all")
    # The bench itself stops between the row and the board's files: nothing
    # cleans up (its own clean-up never runs).
    monkeypatch.setattr(Store, "drop_orphan", lambda self, device_id: False)
    (Path(board["fs"]) / "config.json").write_text(json.dumps({"device_id": "picow-cut"}))
    orphan = provision_cut(bench, board)
    monkeypatch.undo()
    with Store(bench.db) as store:
        assert store.orphans() == [orphan] and store.identity(orphan)["setup_code_pending"]
    r = bench.edge("label", orphan, check=False)
    assert r.returncode == 3 and "cut short" in r.stderr
    assert not re.search(r"\b\d{4}-?\d{4}\b", r.stdout + r.stderr)

    again = json.loads(bench.edge("flash", "--all", "--json").stdout)[0]
    assert again["ok"] and again["identity_created"]
    with Store(bench.db) as store:
        assert store.orphans() == [] and store.identity(orphan) is None
