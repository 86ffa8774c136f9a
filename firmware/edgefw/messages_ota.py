# The builders of the OTA messages (docs/protocol.md 7.2) a device sends,
# loaded through messages.<name> like messages_write.py's and dropped after:
# apart from them, so a board that sends a HELLO or a STATUS loads none of
# this (the transfer writes its OTA_WINDOW in place, ota_transfer.py).
from edgefw.messages import T_OTA_QUERY, T_OTA_STATE, T_OTA_WINDOW
from edgefw.messages_write import encode


def _some(f, k, v):
    # An optional key: present only when it has a value.
    if v is not None:
        f[k] = v


def ota_query(device_id, component, version, counter, keys_seq, epoch, why, dl_seq=None, held=None):
    f = {1: device_id, 2: component, 3: version, 4: counter, 5: keys_seq, 6: epoch, 9: why}
    if dl_seq is not None:
        f[7] = dl_seq
        f[8] = held or 0
    return encode(T_OTA_QUERY, f)


def ota_window(device_id, seq, ack, limit, rewind=False):
    f = {1: device_id, 2: seq, 3: ack, 4: limit}
    if rewind:
        f[5] = True
    return encode(T_OTA_WINDOW, f)


def ota_state(device_id, component, seq, state, version=None, held=None, size=None, check=None,
              reason=None):
    # reason is cut to the 200 characters section 7.2 allows.
    f = {1: device_id, 2: component, 3: seq, 4: state}
    _some(f, 5, version)
    _some(f, 6, held)
    _some(f, 7, size)
    _some(f, 8, check)
    _some(f, 9, None if reason is None else reason[:200])
    return encode(T_OTA_STATE, f)
