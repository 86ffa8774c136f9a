# The texts of cbor_read's errors, by number (cbor_read's _E_ constants, in
# this order): imported only when an input is refused, so a board does not
# keep them in its heap. Not dropped after: a peer that sends one bad item
# may send more.

_TEXTS = (
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
)


def text(code, a, b):
    t = _TEXTS[code]
    n = t.count("%d")
    return t % ((a, b) if n == 2 else a) if n else t
