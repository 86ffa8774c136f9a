# AES-CCM (RFC 3610, NIST SP 800-38C) on the AES block cipher of cryptolib:
# any nonce of 7..13 bytes, tags of 4..16 bytes (even), AAD < 0xFF00 bytes.
#
# Runs for every sealed message, so it allocates nothing per byte: the
# message goes through in chunks of _CHUNK bytes, in a few work buffers made
# once, at the first seal or open, and shared by every CCM object (a session
# has two): they hold nothing between two calls (each call fills them from
# its own nonce and data, and nothing keeps a view of them), and a call runs
# to its end before the next starts. What is per key stays per object: the
# AES objects, the MAC chaining value and E(A_0). MicroPython has no XOR of two buffers in C, and a
# byte loop is ~10x too slow, so the CTR pass lets AES do the XOR:
#   W  = A_1 | M_1 | A_2 | M_2 ...   (counter block before each data block)
#   W' = ECB(W), then CBC-decrypt W' in place: block 2k+1 becomes
#        D(E(M_k)) ^ E(A_k) = M_k ^ E(A_k)
# (the even blocks come out as garbage). Python only moves 16-byte blocks
# (slice assignments from views made once: no allocation) and sets counter
# bytes. The CBC-MAC runs over each chunk with one chained CBC object:
# cryptolib's keeps chaining from its last output block, so each MAC's B0 is
# XORed with that block, which gives the chain from a zero IV without a new
# key schedule.
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

        def decrypt(self, data, out):
            self._c.decrypt(data, output=out)

_ECB = const(1)
_CBC = const(2)
_MAX_AAD = const(0xFEFF)   # longer AAD needs RFC 3610's 6-byte length form
_CHUNK = const(128)        # bytes of message per pass: 8 blocks
_BLOCKS = const(8)
_ZERO_IV = bytes(16)

# The shared work buffers (_work() makes them): W (A_k | data_k pairs), X
# (ECB(W), CBC-decrypted in place), T (the chunk in), U (the chunk out),
# views of T's blocks, of X's odd blocks and of U's last block.
_W = _X = _T = _U = _TV = _XV = _UL = None


def _work():
    global _W, _X, _T, _U, _TV, _XV, _UL
    _W = bytearray(2 * _CHUNK)
    _X = bytearray(2 * _CHUNK)
    _T = bytearray(_CHUNK)
    _U = bytearray(_CHUNK)
    t = memoryview(_T)
    x = memoryview(_X)
    _TV = [t[16 * k:16 * k + 16] for k in range(_BLOCKS)]
    _XV = [x[32 * k + 16:32 * k + 32] for k in range(_BLOCKS)]
    _UL = memoryview(_U)[_CHUNK - 16:]


def _params(nonce, tag_len):
    # q, the width of the length field; raises on a nonce or tag of a size CCM has not.
    n = len(nonce)
    if n < 7 or n > 13:
        raise ValueError("ccm: nonce must be 7..13 bytes, got %d" % n)
    if tag_len < 4 or tag_len > 16 or tag_len & 1:
        raise ValueError("ccm: tag_len must be even, 4..16, got %d" % tag_len)
    return 15 - n


class CCM:
    def __init__(self, key):
        if len(key) != 16:
            raise ValueError("ccm: key must be 16 bytes")
        self._ecb = aes(key, _ECB)
        self._cbc = aes(key, _CBC, _ZERO_IV)   # the MAC (encrypt only)
        self._dec = aes(key, _CBC, _ZERO_IV)   # the CTR XOR (decrypt only)
        self._iv = bytearray(16)     # _cbc's chaining value: its last output block
        self._s0 = bytearray(16)     # E(A_0), then the tag

    def _start(self, nonce, q, aad, lm, tag_len):
        # Counter blocks' fixed part in W, E(A_0) in _s0; the MAC chain over
        # B0 and the encoded AAD.
        s0 = self._s0
        s0[0] = q - 1
        s0[1:16 - q] = nonce
        for j in range(16 - q, 16):
            s0[j] = 0
        w = _W
        for k in range(min(_BLOCKS, (lm + 15) >> 4)):
            w[32 * k:32 * k + 16] = s0
        self._ecb.encrypt(s0, s0)
        la = len(aad)
        t = _T
        t[0] = (0x40 if la else 0) | (tag_len - 2) << 2 | (q - 1)
        t[1:16 - q] = nonce
        for j in range(16 - q, 16):
            t[j] = lm >> (8 * (15 - j)) & 0xFF
        iv = self._iv
        for j in range(16):
            t[j] ^= iv[j]
        fill = 16
        if la:
            t[16] = la >> 8
            t[17] = la & 0xFF
            fill = 18
            src = memoryview(aad)
            pos = 0
            while True:
                take = min(_CHUNK - fill, la - pos)
                t[fill:fill + take] = src[pos:pos + take]
                fill += take
                pos += take
                if pos == la:
                    break
                self._mac(_CHUNK)
                fill = 0
        end = (fill + 15) & ~15
        for j in range(fill, end):
            t[j] = 0
        self._mac(end)

    def _mac(self, size):
        # Chains the first `size` bytes of _t into the MAC; _iv = its last block.
        if size == _CHUNK:
            self._cbc.encrypt(_T, _U)
            self._iv[:] = _UL
        else:
            # A short chunk (the last): block by block, no views made.
            tv = _TV
            for k in range(size >> 4):
                self._cbc.encrypt(tv[k], self._iv)

    def _ctr(self, first, nb):
        # _u's first nb blocks = _t's XOR E(A_first ..). All of W goes
        # through AES whatever nb (stale blocks cost less than views).
        w = _W
        tv = _TV
        o = 0
        if first + nb <= 256:
            # The counter's high bytes stay 0 from _start.
            for k in range(nb):
                w[o + 15] = first + k
                w[o + 16:o + 32] = tv[k]
                o += 32
        else:
            for k in range(nb):
                c = first + k
                j = o + 15
                while c:
                    w[j] = c & 0xFF
                    c >>= 8
                    j -= 1
                w[o + 16:o + 32] = tv[k]
                o += 32
        x = _X
        self._ecb.encrypt(w, x)
        self._dec.decrypt(x, x)
        u = _U
        xv = _XV
        o = 0
        for k in range(nb):
            u[o:o + 16] = xv[k]
            o += 16

    def _check(self, nonce, aad, lm, tag_len):
        q = _params(nonce, tag_len)
        if len(aad) > _MAX_AAD or lm >> (8 * q):
            raise ValueError("ccm: aad over 65279 bytes or message too long for the nonce")
        return q

    def seal_into(self, nonce, aad, plaintext, out, tag_len=8):
        # Writes ciphertext | tag (len(plaintext) + tag_len bytes) to out.
        lm = len(plaintext)
        if len(out) < lm + tag_len:
            raise ValueError("ccm: out too short")
        q = self._check(nonce, aad, lm, tag_len)
        if _T is None:
            _work()
        self._start(nonce, q, aad, lm, tag_len)
        src = plaintext if type(plaintext) is memoryview else memoryview(plaintext)
        t = _T
        u = _U
        at = 0
        while at < lm:
            r = min(_CHUNK, lm - at)
            size = (r + 15) & ~15
            if r == _CHUNK:
                t[:] = src[at:at + _CHUNK]
            else:
                t[:r] = src[at:at + r]
                for j in range(r, size):
                    t[j] = 0
            self._mac(size)
            self._ctr(at // 16 + 1, size // 16)
            if r == _CHUNK:
                out[at:at + _CHUNK] = u
            else:
                out[at:at + r] = memoryview(u)[:r]
            at += r
        s0 = self._s0
        iv = self._iv
        for j in range(tag_len):
            out[lm + j] = iv[j] ^ s0[j]

    def open_into(self, nonce, aad, data, out, tag_len=8):
        # Writes the plaintext (len(data) - tag_len bytes) to out and returns
        # True, or returns False (out zeroed) when the data is not what seal
        # gave for this key, nonce and aad (a wrong tag, a truncated input).
        q = _params(nonce, tag_len)
        lm = len(data) - tag_len
        if lm < 0 or len(aad) > _MAX_AAD or lm >> (8 * q):
            return False
        if len(out) < lm:
            raise ValueError("ccm: out too short")
        if _T is None:
            _work()
        self._start(nonce, q, aad, lm, tag_len)
        src = data if type(data) is memoryview else memoryview(data)
        t = _T
        u = _U
        at = 0
        while at < lm:
            r = min(_CHUNK, lm - at)
            size = (r + 15) & ~15
            if r == _CHUNK:
                t[:] = src[at:at + _CHUNK]
            else:
                t[:r] = src[at:at + r]
            self._ctr(at // 16 + 1, size // 16)
            for j in range(r, size):
                u[j] = 0
            if r == _CHUNK:
                out[at:at + _CHUNK] = u
            else:
                out[at:at + r] = memoryview(u)[:r]
            t[:] = u
            self._mac(size)
            at += r
        s0 = self._s0
        iv = self._iv
        diff = 0
        # Every byte compared whatever the first difference (constant time).
        for j in range(tag_len):
            diff |= iv[j] ^ s0[j] ^ data[lm + j]
        if diff:
            for j in range(lm):
                out[j] = 0
            return False
        return True

    def seal(self, nonce, aad, plaintext, tag_len=8):
        out = bytearray(len(plaintext) + tag_len)
        self.seal_into(nonce, aad, plaintext, out, tag_len)
        return out

    def open(self, nonce, aad, data, tag_len=8):
        # The plaintext, or None when the data is not what seal() gave for
        # this key, nonce and aad (a wrong tag, a truncated input).
        out = bytearray(max(0, len(data) - tag_len))
        return out if self.open_into(nonce, aad, data, out, tag_len) else None
