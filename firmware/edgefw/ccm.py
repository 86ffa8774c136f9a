# AES-CCM (RFC 3610, NIST SP 800-38C) on the AES block cipher of cryptolib:
# any nonce of 7..13 bytes, tags of 4..16 bytes (even), AAD < 0xFF00 bytes.
#
# Both passes run in C, one call each: the counter blocks are laid out in a
# buffer and ECB-encrypted together (the CTR keystream), and the formatted
# B0 || AAD || message blocks are CBC-encrypted together from a zero IV (the
# CBC-MAC is the last block). Python only lays out bytes and XORs once, on
# big ints. Both buffers live in the CCM object and grow to the largest
# message seen, so a session's steady traffic allocates only its results.
# One CBC object serves every message: cryptolib's keeps chaining from its
# last output block, so each MAC's first block is XORed with that block,
# which gives the chain from a zero IV without a new key schedule.
from micropython import const

try:
    from cryptolib import aes
except ImportError:
    # CPython (a Linux computer runs the firmware sources): pycryptodome's AES
    # behind cryptolib's interface, modes 1 (ECB) and 2 (CBC) only.
    from Crypto.Cipher import AES as _AES  # type: ignore[import-not-found]  # CPython only; absent from the stubs

    class aes:  # type: ignore[no-redef]  # stands in for cryptolib's
        def __init__(self, key, mode, iv=None):
            if mode == 1:
                self._c = _AES.new(key, _AES.MODE_ECB)
            else:
                self._c = _AES.new(key, _AES.MODE_CBC, iv=iv)

        def encrypt(self, data, out=None):
            if out is None:
                return self._c.encrypt(data)
            self._c.encrypt(data, output=out)

_ECB = const(1)
_CBC = const(2)
_MAX_AAD = const(0xFEFF)   # longer AAD needs RFC 3610's 6-byte length form
_ZERO_IV = bytes(16)


def _params(nonce, tag_len):
    # q, the width of the length field; raises on a nonce or tag of a size CCM has not.
    n = len(nonce)
    if n < 7 or n > 13:
        raise ValueError("ccm: nonce must be 7..13 bytes, got %d" % n)
    if tag_len < 4 or tag_len > 16 or tag_len & 1:
        raise ValueError("ccm: tag_len must be even, 4..16, got %d" % tag_len)
    return 15 - n


def _xor(a, b, n):
    # The first n bytes of a XOR b, both buffers (one big-int XOR, no byte loop).
    if n == 0:
        return b""
    return (int.from_bytes(a[:n], "big") ^ int.from_bytes(b[:n], "big")).to_bytes(n, "big")


class CCM:
    def __init__(self, key):
        if len(key) != 16:
            raise ValueError("ccm: key must be 16 bytes")
        self._ecb = aes(key, _ECB)
        self._cbc = aes(key, _CBC, _ZERO_IV)
        self._iv = bytearray(16)     # _cbc's chaining value: its last output block
        self._ctr = bytearray(0)
        self._mac = bytearray(0)

    def _keystream(self, nonce, q, n):
        # E(A_0) || E(A_1) ... covering n bytes after the first block, A_i
        # being flags (q - 1) || nonce || i.
        size = 16 + (n + 15) // 16 * 16
        if len(self._ctr) < size:
            self._ctr = bytearray(size)
        c = memoryview(self._ctr)[:size]
        c[0] = q - 1
        c[1:16 - q] = nonce
        for j in range(16 - q, 16):
            c[j] = 0
        first = c[:16]
        for i in range(1, size // 16):
            at = 16 * i
            c[at:at + 16] = first
            j = at + 15
            v = i
            while v:
                c[j] = v & 0xFF
                v >>= 8
                j -= 1
        self._ecb.encrypt(c, c)
        return c

    def _tag(self, nonce, q, aad, msg, tag_len):
        # The CBC-MAC over B0 || encoded AAD || msg, each zero-padded to blocks.
        la = len(aad)
        lm = len(msg)
        head = (la + 2 + 15) // 16 * 16 if la else 0
        size = 16 + head + (lm + 15) // 16 * 16
        if len(self._mac) < size:
            self._mac = bytearray(size)
        b = memoryview(self._mac)[:size]
        b[0] = (0x40 if la else 0) | (tag_len - 2) << 2 | (q - 1)
        b[1:16 - q] = nonce
        b[16 - q:16] = lm.to_bytes(q, "big")
        at = 16
        if la:
            b[16] = la >> 8
            b[17] = la & 0xFF
            b[18:18 + la] = aad
            at = 18 + la
            end = 16 + head
            b[at:end] = _ZERO_IV[:end - at]
            at = end
        b[at:at + lm] = msg
        b[at + lm:size] = _ZERO_IV[:size - at - lm]
        iv = self._iv
        for i in range(16):
            b[i] ^= iv[i]
        self._cbc.encrypt(b, b)
        iv[:] = b[size - 16:size]
        return b[size - 16:size - 16 + tag_len]

    def seal(self, nonce, aad, plaintext, tag_len=8):
        q = _params(nonce, tag_len)
        lm = len(plaintext)
        if len(aad) > _MAX_AAD or lm >> (8 * q):
            raise ValueError("ccm: aad over 65279 bytes or message too long for the nonce")
        t = _xor(self._tag(nonce, q, aad, plaintext, tag_len), self._keystream(nonce, q, lm), tag_len)
        # _keystream ran last: its buffer holds the keystream now.
        return _xor(plaintext, memoryview(self._ctr)[16:], lm) + t

    def open(self, nonce, aad, data, tag_len=8):
        # The plaintext, or None when the data is not what seal() gave for
        # this key, nonce and aad (a wrong tag, a truncated input).
        q = _params(nonce, tag_len)
        lm = len(data) - tag_len
        if lm < 0 or len(aad) > _MAX_AAD or lm >> (8 * q):
            return None
        data = memoryview(data)
        ks = self._keystream(nonce, q, lm)
        plain = _xor(data, ks[16:], lm)
        s0 = bytes(ks[:tag_len])
        want = self._tag(nonce, q, aad, plain, tag_len)
        got = data[lm:]
        diff = 0
        # Every byte compared whatever the first difference (constant time).
        for i in range(tag_len):
            diff |= want[i] ^ s0[i] ^ got[i]
        return plain if diff == 0 else None
