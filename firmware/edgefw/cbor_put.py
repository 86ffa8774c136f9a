# CBOR writing in place, no allocation: heads and scalars written into a
# caller's buffer at an offset (the tick writer, the batch builder, messages).
import struct

_U64 = 0x10000000000000000


def head_len(n):
    # Bytes of the shortest head whose argument is n.
    return 1 if n < 24 else 2 if n < 0x100 else 3 if n < 0x10000 else 5 if n < 0x100000000 else 9


def put_head(buf, i, mt, n):
    # Writes the shortest head of major type mt (0x00, 0x20, ... 0xE0) with
    # argument n at buf[i:]; returns the offset after it. No allocation.
    if n < 24:
        buf[i] = mt | n
        return i + 1
    if n < 0x100:
        buf[i] = mt | 24
        buf[i + 1] = n
        return i + 2
    if n < 0x10000:
        buf[i] = mt | 25
        buf[i + 1] = n >> 8
        buf[i + 2] = n & 0xFF
        return i + 3
    if n < 0x100000000:
        struct.pack_into(">BI", buf, i, mt | 26, n)
        return i + 5
    struct.pack_into(">BQ", buf, i, mt | 27, n)
    return i + 9


def put_float(buf, i, x):
    # The shortest of half / single / double that holds x exactly, at buf[i:]
    # (9 bytes of room needed); returns the offset after it. The binary64
    # image is judged from its bytes as small ints: float arithmetic would
    # allocate a boxed float per step.
    struct.pack_into(">d", buf, i + 1, x)
    b0 = buf[i + 1]
    e = ((b0 & 0x7F) << 4 | buf[i + 2] >> 4) - 1023  # unbiased exponent
    if e == 1024:  # NaN or an infinity: always half precision
        buf[i] = 0xF9
        buf[i + 1] = 0x7E if x != x else 0xFC if b0 & 0x80 else 0x7C
        buf[i + 2] = 0
        return i + 3
    buf[i] = 0xFB
    if buf[i + 8] | buf[i + 7] | buf[i + 6] | buf[i + 5] & 0x1F:  # over 23 significand bits
        return i + 9
    m = (buf[i + 2] & 0xF) << 19 | buf[i + 3] << 11 | buf[i + 4] << 3 | buf[i + 5] >> 5
    if e == -1023 and not m:  # +-0.0
        buf[i] = 0xF9
        buf[i + 1] = b0 & 0x80
        buf[i + 2] = 0
        return i + 3
    if -15 < e < 16 and not m & 0x1FFF or -25 < e < -14 and not m & ((1 << (-1 - e)) - 1):
        # exact in half (normal, or subnormal below -14: fewer significand bits)
        h = (e + 15) << 10 | m >> 13 if e >= -14 else (m | 1 << 23) >> (-1 - e)
        buf[i] = 0xF9
        buf[i + 1] = (b0 & 0x80) | h >> 8
        buf[i + 2] = h & 0xFF
        return i + 3
    if -127 < e < 128 or -150 < e < -126 and not m & ((1 << (-126 - e)) - 1):  # exact in single
        buf[i] = 0xFA
        struct.pack_into(">f", buf, i + 1, x)
        return i + 5
    return i + 9


def put(buf, i, x):
    # One scalar (int below 2**64 in magnitude, float, bool, None, str,
    # bytes) at buf[i:]; returns the offset after it. ValueError when buf has
    # no room left (nothing meaningful is written then).
    if x is None or x is False or x is True:
        if i >= len(buf):
            raise ValueError("CBOR: buffer full")
        buf[i] = 0xF6 if x is None else 0xF5 if x else 0xF4
        return i + 1
    if len(buf) - i < 9:
        raise ValueError("CBOR: buffer full")
    if isinstance(x, int):
        if x < 0:
            if x < -_U64:
                raise ValueError("CBOR: integer %d needs a bignum" % x)
            return put_head(buf, i, 0x20, -1 - x)
        if x >= _U64:
            raise ValueError("CBOR: integer %d needs a bignum" % x)
        return put_head(buf, i, 0, x)
    if isinstance(x, float):
        return put_float(buf, i, x)
    mt = 0x40
    if isinstance(x, str):
        x = x.encode()
        mt = 0x60
    n = len(x)
    if len(buf) - i < 9 + n:
        raise ValueError("CBOR: buffer full")
    i = put_head(buf, i, mt, n)
    buf[i:i + n] = x
    return i + n
