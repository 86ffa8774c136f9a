# The OTA client's files: loaded with a query or an OFFER and dropped after
# (OtaClient.run). Each is written whole to a new name and renamed
# (atomic.py), so a power cut leaves the old or the new one:
#   ota/root.json   {"epoch": n, "root": hex} after a root rotation (absent:
#                   the provisioned root of identity/anchors.json, epoch 0)
#   ota/keys.cose   the key list in force, as the root signed it
#   ota/dl.json     the download in progress (7.6)
#   ota/fresh.json  {component: latest expires of a valid manifest that was
#                   current or newer} (7.9)
import json
from binascii import unhexlify

from edgefw import atomic
from edgefw.ota_client import path

COMPONENTS = ("agent", "firmware")


def load(root, name):
    # The JSON of <name> (under ota/ unless it names its folder), or None
    # (absent, damaged).
    # Not shared with identity.anchors through atomic.py: atomic is loaded
    # at boot, and a helper there costs boot's heap peak on every board.
    data = atomic.read(path(root, name if "/" in name else "ota/" + name))
    if data is None:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def save(root, name, value):
    try:
        import os
        os.mkdir(path(root, "ota"))
    except OSError:
        pass
    atomic.write(path(root, "ota/" + name), json.dumps(value).encode())


def trust(root):
    # (root public key or None, epoch): the latest rotation's, else the
    # provisioned anchor's.
    r = load(root, "root.json")
    try:
        if r is not None:
            return unhexlify(r["root"]), int(r["epoch"])
        # identity/anchors.json read here, not through edgefw.identity: its
        # code would take heap the signature checks need.
        a = load(root, "identity/anchors.json") or {}
        return unhexlify(a["ota_root"]), 0
    except (KeyError, TypeError, ValueError):
        return None, 0


def keys_held(root):
    # The signed key list in force, or None.
    return atomic.read(path(root, "ota/keys.cose"), 1024)


def keys_seq(root):
    data = keys_held(root)
    if data is None:
        return 0
    from edgefw import ota_manifest
    try:
        return ota_manifest.held_key_list(data)[1]
    except ValueError:
        return 0


def version_of(c, component):
    if component == "agent":
        return c.version
    # MicroPython's release as x.y.z: sys.implementation is on every port
    # (os.uname is not on the Unix port).
    import sys
    v = sys.implementation.version
    return "%d.%d.%d" % (v[0], v[1], v[2])
