"""`edge sim up` gives every virtual board its identity the way `edge flash`
does: a key made on the board (edge_agent.identity.provision over the board
link), recorded in the registry with a setup code, so each board can be
labelled and paired; the identity survives `sim down` / `sim up`."""

from __future__ import annotations

import json
from pathlib import Path

from Crypto.PublicKey import ECC

from edge_agent.identity import device_id_for
from edge_agent.store import Store


def public_key(fs: str) -> bytes:
    seed = (Path(fs) / "identity" / "key").read_bytes()[:-4]
    return ECC.construct(curve="curve25519", seed=seed).public_key().export_key(format="raw")


def test_sim_up_mints_each_board_a_key_on_the_board_recorded_and_labelled_like_edge_flash(bench, tmp_path):
    boards = bench.up("esp32", "picow")
    with Store(bench.db) as store:
        for b in boards:
            pub = public_key(b["fs"])
            assert b["device_id"] == device_id_for(b["board"], pub)
            config = json.loads((Path(b["fs"]) / "config.json").read_text())
            assert config["device_id"] == b["device_id"] and config["sample_period_ms"] == 1000
            row = store.identity(b["device_id"])
            assert row is not None and row["public_key"] == pub
    # The agent runs with it: its HELLO names the new id.
    for b in boards:
        shown = bench.edge("monitor", b["port"], "--for", "3", timeout=30).stdout
        assert f"HELLO {b['device_id']} " in shown, shown[-500:]
    # A label can be printed for each, as after `edge flash`.
    label = bench.edge("label", boards[0]["device_id"], "--out", str(tmp_path), "--json")
    assert json.loads(label.stdout)
    # Down and up: the boards keep their identities.
    bench.edge("sim", "down")
    again = bench.up("esp32", "picow")
    assert [b["device_id"] for b in again] == [b["device_id"] for b in boards]


def test_sim_up_unprovisioned_leaves_the_identity_to_edge_provision(bench):
    (b,) = bench.up("virtual", extra=("--unprovisioned",))
    assert not (Path(b["fs"]) / "identity" / "key").exists()
    prov = bench.edge("provision", "--port", b["port"], "--json")
    assert json.loads(prov.stdout)["device_id"].startswith("virtual-")
