"""The device's Ed25519 verification (edgefw.ed25519, the check of what the
OTA root key signed) against RFC 8032 section 7.1 and against pycryptodome,
on the real MicroPython with the ESP32's heap (the smallest of boards/*.json)
and the firmware compiled to .mpy, and under CPython.

All cases go to one micropython process: each line of its input is
"<public key hex> <message hex or -> <signature hex>", each answer a line
"1" (verified) or "0"."""

from __future__ import annotations

import random

from Crypto.PublicKey import ECC
from Crypto.Signature import eddsa

from tests.firmware.compiled import prelude
from tests.mpy import BALLAST, firmware_on_path, run

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493

# RFC 8032 section 7.1: (secret key, public key, message, signature).
RFC = [
    ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
    ("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
    # TEST 1024: a 1023-byte message.
    ("f5e5767cf153319517630f226876b86c8160cc583bc013744c6bf255f5cc0ee5",
     "278117fc144c72340f67d0f2316e8386ceffbf2b2428c9c51fef7c597f1d426e",
     (
         "08b8b2b733424243760fe426a4b54908632110a66c2f6591eabd3345e3e4eb98"
         "fa6e264bf09efe12ee50f8f54e9f77b1e355f6c50544e23fb1433ddf73be84d8"
         "79de7c0046dc4996d9e773f4bc9efe5738829adb26c81b37c93a1b270b20329d"
         "658675fc6ea534e0810a4432826bf58c941efb65d57a338bbd2e26640f89ffbc"
         "1a858efcb8550ee3a5e1998bd177e93a7363c344fe6b199ee5d02e82d522c4fe"
         "ba15452f80288a821a579116ec6dad2b3b310da903401aa62100ab5d1a36553e"
         "06203b33890cc9b832f79ef80560ccb9a39ce767967ed628c6ad573cb116dbef"
         "efd75499da96bd68a8a97b928a8bbc103b6621fcde2beca1231d206be6cd9ec7"
         "aff6f6c94fcd7204ed3455c68c83f4a41da4af2b74ef5c53f1d8ac70bdcb7ed1"
         "85ce81bd84359d44254d95629e9855a94a7c1958d1f8ada5d0532ed8a5aa3fb2"
         "d17ba70eb6248e594e1a2297acbbb39d502f1a8c6eb6f1ce22b3de1a1f40cc24"
         "554119a831a9aad6079cad88425de6bde1a9187ebb6092cf67bf2b13fd65f270"
         "88d78b7e883c8759d2c4f5c65adb7553878ad575f9fad878e80a0c9ba63bcbcc"
         "2732e69485bbc9c90bfbd62481d9089beccf80cfe2df16a2cf65bd92dd597b07"
         "07e0917af48bbb75fed413d238f5555a7a569d80c3414a8d0859dc65a46128ba"
         "b27af87a71314f318c782b23ebfe808b82b0ce26401d2e22f04d83d1255dc51a"
         "ddd3b75a2b1ae0784504df543af8969be3ea7082ff7fc9888c144da2af58429e"
         "c96031dbcad3dad9af0dcbaaaf268cb8fcffead94f3c7ca495e056a9b47acdb7"
         "51fb73e666c6c655ade8297297d07ad1ba5e43f1bca32301651339e22904cc8c"
         "42f58c30c04aafdb038dda0847dd988dcda6f3bfd15c4b4c4525004aa06eeff8"
         "ca61783aacec57fb3d1f92b0fe2fd1a85f6724517b65e614ad6808d6f6ee34df"
         "f7310fdc82aebfd904b01e1dc54b2927094b2db68d6f903b68401adebf5a7e08"
         "d78ff4ef5d63653a65040cf9bfd4aca7984a74d37145986780fc0b16ac451649"
         "de6188a7dbdf191f64b5fc5e2ab47b57f7f7276cd419c17a3ca8e1b939ae49e4"
         "88acba6b965610b5480109c8b17b80e1b7b750dfc7598d5d5011fd2dcc5600a3"
         "2ef5b52a1ecc820e308aa342721aac0943bf6686b64b2579376504ccc493d97e"
         "6aed3fb0f9cd71a43dd497f01f17c0e2cb3797aa2a2f256656168e6c496afc5f"
         "b93246f6b1116398a346f1a641f3b041e989f7914f90cc2c7fff357876e506b5"
         "0d334ba77c225bc307ba537152f3f1610e4eafe595f6d9d90d11faa933a15ef1"
         "369546868a7f3a45a96768d40fd9d03412c091c6315cf4fde7cb68606937380d"
         "b2eaaa707b4c4185c32eddcdd306705e4dc1ffc872eeee475a64dfac86aba41c"
         "0618983f8741c5ef68d3a101e8a3b8cac60c905c15fc910840b94c00a0b9d0"
     ),
     "0aab4c900501b3e24d7cdf4663326a3a87df5e4843b2cbdb67cbf6e460fec350aa5371b1508f9f4528ecea23c436d94b5e8fcd4f681e30a6ac00a9704a188a03"),
    # TEST SHA(abc): the message is SHA-512("abc").
    ("833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
     "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
     "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
     "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704"),
]

DEVICE = """
import sys
from binascii import unhexlify as h
from edgefw import ed25519

while True:
    line = sys.stdin.readline()
    if not line.strip():
        break
    pub, msg, sig = line.split()
    msg = b"" if msg == "-" else h(msg)
    print(1 if ed25519.verify(h(pub), msg, h(sig)) else 0)
"""


def on_device(cases: list[tuple[bytes, bytes, bytes]]) -> list[bool]:
    lines = "".join(f"{p.hex()} {m.hex() or '-'} {s.hex()}\n" for p, m, s in cases)
    out = run(prelude() + DEVICE, heap="esp32", stdin=lines.encode(), timeout=300).stdout.decode().split()
    return [x == "1" for x in out]


def _flip(b: bytes, bit: int) -> bytes:
    out = bytearray(b)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def _non_point() -> bytes:
    # A y whose x^2 = (y^2 - 1) / (d y^2 + 1) has no square root mod p.
    d = -121665 * pow(121666, _P - 2, _P) % _P
    y = 2
    while True:
        x2 = (y * y - 1) * pow(d * y * y + 1, _P - 2, _P) % _P
        if x2 and pow(x2, (_P - 1) // 2, _P) != 1:
            return y.to_bytes(32, "little")
        y += 1


def cases() -> list[tuple[bytes, bytes, bytes, bool]]:
    """(public key, message, signature, expected) for every check."""
    rng = random.Random(8032)
    out = []
    for sk, pk, msg, sig in RFC:
        key = ECC.construct(curve="Ed25519", seed=bytes.fromhex(sk))
        assert key.public_key().export_key(format="raw").hex() == pk           # the transcription is right
        assert eddsa.new(key, "rfc8032").sign(bytes.fromhex(msg)).hex() == sig
        out.append((bytes.fromhex(pk), bytes.fromhex(msg), bytes.fromhex(sig), True))
    for i in range(12):
        key = ECC.construct(curve="Ed25519", seed=rng.randbytes(32))
        pub = key.public_key().export_key(format="raw")
        msg = rng.randbytes(rng.choice((0, 1, 31, 64, 127, 128, 129, 300, 700)))
        sig = eddsa.new(key, "rfc8032").sign(msg)
        out.append((pub, msg, sig, True))
        out.append((pub, msg, _flip(sig, rng.randrange(256)), False))          # in R
        out.append((pub, msg, _flip(sig, 256 + rng.randrange(253)), False))    # in S
        out.append((pub, msg + b"\0" if not msg else _flip(msg, rng.randrange(8 * len(msg))), sig, False))
        out.append((_flip(pub, rng.randrange(255)), msg, sig, False))
        s = int.from_bytes(sig[32:], "little")
        out.append((pub, msg, sig[:32] + (s + _L).to_bytes(32, "little"), False))  # S >= L, same S mod L
    pub, msg, sig = out[0][:3]
    out.append((pub, msg, sig[:32] + _L.to_bytes(32, "little"), False))
    out.append((pub, msg, sig[:32] + b"\xff" * 32, False))
    out.append((_non_point(), msg, sig, False))                                   # A is not a point
    out.append(((_P + 1).to_bytes(32, "little"), msg, sig, False))                # y >= p
    out.append(((1 | 1 << 255).to_bytes(32, "little"), msg, sig, False))          # x = 0 with the sign bit
    out.append((pub[:31], msg, sig, False))                                       # wrong lengths
    out.append((pub, msg, sig[:63], False))
    out.append((pub, msg, sig + b"\0", False))
    return out


def test_rfc8032_vectors_pycryptodome_signatures_and_forgeries_on_the_device_and_cpython():
    want = cases()
    assert on_device([c[:3] for c in want]) == [c[3] for c in want]
    firmware_on_path()
    from edgefw import ed25519

    assert [ed25519.verify(*c[:3]) for c in want] == [c[3] for c in want]
    assert ed25519.verify(None, b"", bytes(64)) is False
    assert ed25519.verify(bytes(32), "text", bytes(64)) is False


STREAMED = """
from binascii import unhexlify as h
from edgefw import ed25519
pub = h(%r)
sig = h(%r)
msg = h(%r)
hs = ed25519.start(pub, sig)
for i in range(0, len(msg), 100):
    hs.update(memoryview(msg)[i:i + 100])
print(ed25519.finish(pub, sig, hs), ed25519.finish(pub, sig[:32] + bytes(32), ed25519.start(pub, sig)))
"""


def test_a_message_hashed_as_it_arrives_verifies_on_the_device():
    _, pk, msg, sig = RFC[3]
    assert run(prelude() + STREAMED % (pk, sig, msg), heap="esp32").stdout.decode().split() == ["True", "False"]


# One verify of a 300-byte manifest after a ballast has taken all the heap
# but `free` bytes (collections included). bench/bench_ed25519_device.py
# searches the least that fits.
IN_FREE_HEAP = """
import gc
from binascii import unhexlify as h
from edgefw import ed25519
pub = h(%r)
msg = h(%r)
sig = h(%r)
%s
FREE = %d
""" + BALLAST + """try:
    print("fits" if ed25519.verify(pub, msg, sig) else "wrong")
except MemoryError:
    print("MemoryError")
"""


def fits_in_free_heap(free: int, heap: int | str = "esp32", warm: bool = False) -> bool:
    """Whether one verify of a 300-byte message runs with only ``free`` bytes of heap left to it.

    ``warm``: after a first verify made before the ballast (B's table kept).
    """
    key = ECC.construct(curve="Ed25519", seed=bytes(range(32)))
    msg = bytes(range(256)) + bytes(44)
    sig = eddsa.new(key, "rfc8032").sign(msg)
    pub = key.public_key().export_key(format="raw")
    out = run(prelude() + IN_FREE_HEAP % (pub.hex(), msg.hex(), sig.hex(),
                                            "ed25519.verify(pub, msg, sig)" if warm else "", free), heap=heap,
              timeout=120).stdout.decode().split()
    assert out != ["wrong"], out
    return out == ["fits"]


def test_a_verify_runs_in_a_small_part_of_the_esp32_heap():
    assert fits_in_free_heap(24 * 1024)     # ~20 KB measured (64-bit Unix port), B's table made in it
    assert not fits_in_free_heap(256)      # the ballast does hold the rest
