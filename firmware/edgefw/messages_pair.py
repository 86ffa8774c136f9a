# The control messages of the BLE link a device receives (docs/protocol.md
# 5.4-5.6: PAIR_START, PAIR_CONFIRM, RESUME, and UNPAIR once opened), read
# with the rules of section 2.1 in their order. Kept out of messages.py so a
# board that never pairs holds none of it: pairing.py imports it per message.
# Errors: ValueError, never another type.
from edgefw.messages import typed, valid_id

from micropython import const

T_PAIR_START = const(16)
T_PAIR_REPLY = const(17)
T_PAIR_CONFIRM = const(18)
T_PAIR_DONE = const(19)
T_RESUME = const(20)
T_RESUME_OK = const(21)
T_UNPAIR = const(22)
T_UNPAIR_DONE = const(23)
T_ERROR = const(31)
_BSTR = const(2)
_ID = const(3)

# type -> ((key, kind, exact length of a bstr), ...); every key is required.
_KEYS = {
    T_PAIR_START: ((1, _BSTR, 16), (2, _BSTR, 32), (3, _ID, 0), (4, _BSTR, 16), (9, _BSTR, 32)),
    T_PAIR_CONFIRM: ((6, _BSTR, 16),),
    T_RESUME: ((7, _BSTR, 8), (8, _BSTR, 16)),
    T_UNPAIR: (),
}


def decode(payload):
    # -> (type, {key: value}); ValueError naming the first rule broken.
    try:
        r, kind, keys = typed(payload)
    except MemoryError:
        raise ValueError("message does not fit in free memory")
    spec = _KEYS.get(kind)
    if spec is None:
        raise ValueError("type %d not taken here" % kind)
    fields = {}
    for key, vk, size in spec:
        at = keys.get(key, -1)
        if at < 0:
            raise ValueError("key %d missing" % key)
        if r.b[at] >> 5 != vk:  # the kinds are major types
            raise ValueError("key %d of the wrong kind" % key)
        r.i = at
        v = r.item(1)
        if vk == _BSTR and len(v) != size or vk == _ID and not valid_id(v):
            raise ValueError("key %d out of range" % key)
        fields[key] = v
    return kind, fields


def encode(kind, fields):
    # Deterministic encoding, by messages' builder (loaded for the call).
    from edgefw import messages
    return messages.encode(kind, fields)


def error(reason, text, wait_ms=-1):
    f = {1: reason, 3: text[:120]}
    if wait_ms >= 0:
        f[2] = wait_ms
    return encode(T_ERROR, f)
