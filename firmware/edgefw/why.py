# The texts of the errors raised when an input is refused, by number:
# the _E_ constants of cbor_read (0-18), messages (19-33) and uplink
# (34-37), in this order.
# Imported only at the first refusal, so a board does not keep them in its
# heap; not dropped after: a peer that sends one bad input may send more.

_TEXTS = (
    # cbor_read.py
    "truncated: %d bytes needed, %d left",
    "reserved additional information %d",
    "truncated: indefinite-length item has no break",
    "text string is not valid UTF-8",
    "chunk of an indefinite-length string must be a definite string of major type %d",
    "map key is not hashable (an array or map)",
    "duplicate map key",
    "truncated: data item expected",
    "indefinite length is not allowed for major type %d",
    "tag %d not allowed here",
    "nesting deeper than %d levels",
    "array of %d items is longer than the %d bytes left",
    "map of %d pairs is longer than the %d bytes left",
    "bignum tag %d must hold a byte string",
    "simple value must use the one-byte form",
    "break or reserved additional information %d",
    "container of %d items is longer than the %d bytes left",
    "simple value %d must use the one-byte form",
    "break (0xff) outside an indefinite-length item",
    # messages.py
    "key %d must be true or false",
    "key %d has the wrong type",
    "key %d is out of range (%d..%d)",
    "key %d must be text of %d to %d characters without control characters",
    "key %d is not a valid device id",
    "key %d must hold %d to %d items",
    "message of %d bytes is over %d",
    "message has %d bytes after its data item",
    "message is not a map",
    "key %d appears twice",
    "key 0 (message type) is missing",
    "key 0 (message type) must be an unsigned integer",
    "key 0: unknown message type %d",
    "key %d is missing",
    "key 3 (end) must be above key 2 (first)",
    # uplink.py
    "message type %d is not for a device",
    "message for device %s, this is %s",
    "ACK %d is above the %d records sent: it would free records the host never saw",
    "REFUSE %d..%d is outside the records in flight (%d..%d)",
)


def text(code, a=0, b=0, c=0, d=0):
    t = _TEXTS[code]
    return t % (a, b, c, d)[:t.count("%")]
