# The device's half of the pairing exchange (docs/protocol.md 5.4.1): CPace
# (CPACE-X25519-SHA512) on the setup code, plus the device's static key.
# The heavy code of pairing: pairing.py imports it for one PAIR_START and
# drops it at once; what PAIR_CONFIRM needs is returned as plain bytes.
from gc import collect

from edgefw.cpace import generator, isk_ir, prepend_len, sample_scalar, scalar_mult_vfy
from edgefw.hkdf import hkdf_expand, hkdf_extract, hmac_sha256
from edgefw.x25519 import public_key


def channel(device_id):
    # CI = lv("edge-ble-pair-1") | lv(device id)
    return prepend_len(b"edge-ble-pair-1") + prepend_len(device_id.encode())


def respond(code, device_id, sid, ya_pub, account, host_id, ea_pub, d, dpub, rand=None):
    # -> (Yb, D, tag_d, tag_h, bond_id, bond_key), or None when Ya or Ea is
    # a low-order point (K or S all zero). dpub: D if known, else computed from d.
    # rand(n) replaces the random scalar (test vectors only).
    # A collection after each step: the ladder and SHA-512 leave big-int
    # garbage in every hole, and the next step's big ints need room.
    g = generator(code.encode(), channel(device_id), sid)
    collect()
    yb = rand(32) if rand else sample_scalar()
    yb_pub = scalar_mult_vfy(yb, g)
    collect()
    try:
        k = scalar_mult_vfy(yb, ya_pub)
        collect()
        s = scalar_mult_vfy(d, ea_pub)  # the static key's proof: X(d, Ea) = X(ea, D)
    except ValueError:
        return None
    collect()
    dpub = dpub or public_key(d)
    ada = prepend_len(account.encode()) + prepend_len(host_id) + prepend_len(ea_pub)
    isk = isk_ir(sid, k, ya_pub, ada, yb_pub, prepend_len(dpub))
    prk = hkdf_extract(sid, isk + s)
    tag_d = hmac_sha256(hkdf_expand(prk, b"edge pair confirm device", 32),
                        ya_pub + yb_pub + dpub)[:16]
    tag_h = hmac_sha256(hkdf_expand(prk, b"edge pair confirm host", 32),
                        yb_pub + ya_pub + dpub)[:16]
    return (yb_pub, dpub, tag_d, tag_h, hkdf_expand(prk, b"edge bond id", 8),
            hkdf_expand(prk, b"edge bond key", 32))
