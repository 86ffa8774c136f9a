"""What the OTA suite (hil/suites/test_ota.py) builds and asks: signed releases, pushes, the agent's HELLO.

Releases are made as a release engineer makes them (`edge ota keygen`,
`edge ota bundle`, `edge ota sign`) in the run's host folder; a faulty
release is the real bundle with one module of the agent replaced, compiled
by the same mpy-cross. Everything reaches the board through `edge ota push`
and its console, so the suite runs unchanged on real boards.

Sequences count seconds since :data:`SEQUENCE_EPOCH`: each release of a run
is above every earlier one, and above those of earlier runs, so a real
board that kept its counter from yesterday's run still takes today's.
"""

from __future__ import annotations

import fcntl
import json
import re
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from edge_agent.messages import Hello
from hil.suites.conftest import AGENT_TIMEOUT_S, agent_message

SEQUENCE_EPOCH = 1767225600      # 2026-01-01T00:00:00Z
PUSH_TIMEOUT_S = 240
# The line the agent prints as it starts (edgefw/boot_build.py), with the boot count. The number
# must be followed by what ends it (", BLE" or the line's end): a UART delivers "boot 2" before "6".
BOOT_BANNER = re.compile(rb"edge: agent \S+ on .*?, boot (\d+)(?=[,\r\n])")
# An agent that raises as it starts: a release that crashes at boot.
CRASH = 'raise RuntimeError("injected by the OTA suite: this agent crashes at boot")\n'


@dataclass(frozen=True)
class Release:
    """A signed release: the image and its manifest, as `edge ota push` takes them."""

    image: Path
    manifest: Path
    board: str
    version: str
    sequence: int

    @property
    def size(self) -> int:
        return self.image.stat().st_size


class Releases:
    """Makes the suite's releases with the `edge ota` commands, in ``host``'s folder.

    The signing key is made once per run (workers of ``-n`` share the host
    folder: a lock file orders them).
    """

    def __init__(self, host: Any) -> None:
        self.host = host
        self.folder = Path(host.root) / "ota-suite"
        self.folder.mkdir(exist_ok=True)
        self._last = 0
        self._key()

    def _key(self) -> None:
        with open(self.folder / "keygen.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (self.folder / "keygen.done").exists():
                self.host.edge("ota", "keygen")
                (self.folder / "keygen.done").touch()

    def sequence(self) -> int:
        """A sequence above every one made before it."""
        self._last = max(int(time.time()) - SEQUENCE_EPOCH, self._last + 1)
        return self._last

    def make(self, board: str, *, replace: dict[str, str] | None = None, sequence: int | None = None,
             version: str | None = None) -> Release:
        """`edge ota bundle` of the agent for ``board`` (its modules ``replace``d: {"edgefw/agent": source}),
        signed by `edge ota sign`. The version, unless given, names the sequence (90.MMM.NNNNN),
        so a board's HELLO tells which release it runs."""
        seq = self.sequence() if sequence is None else sequence
        version = version or f"90.{seq // 100000}.{seq % 100000}"
        image = self.folder / f"agent-{board}-{version}-{seq}.bundle"
        self.host.edge("ota", "bundle", "--board", board, "--version", version, "-o", str(image))
        if replace:
            _replace_modules(image, replace)
        manifest = image.with_suffix(".manifest")
        self.host.edge("ota", "sign", str(image), "--board", board, "--component", "agent", "--version", version,
                       "--sequence", str(seq), "-o", str(manifest))
        return Release(image, manifest, board, version, seq)


def _replace_modules(image: Path, replace: dict[str, str]) -> None:
    """Compile each ``{module: source}`` with mpy-cross into the bundle ``image``, in its place."""
    from edge_agent.firmware import mpy_cross_exe
    from edge_ota.bundle import pack, unpack

    files = dict(unpack(image.read_bytes()))
    for module, source in replace.items():
        name = module + ".mpy"
        if name not in files:
            raise ValueError(f"{image.name} has no {name} to replace; it has {', '.join(sorted(files))}")
        src, out = image.with_name("module.py"), image.with_name("module.mpy")
        src.write_text(source)
        subprocess.run([mpy_cross_exe(), "-o", str(out), "-s", module + ".py", str(src)], check=True,
                       capture_output=True)
        files[name] = out.read_bytes()
    image.write_bytes(pack(list(files.items())))


def never_confirming_agent() -> str:
    """The agent's source with its health mark (30 s of uptime, then it confirms a trial) moved out of
    reach: it runs and hears its host, and never confirms."""
    from edge_agent.paths import FIRMWARE_DIR

    src = (FIRMWARE_DIR / "edgefw" / "agent.py").read_text()
    out = src.replace("_HEALTHY_MS = const(30000)", "_HEALTHY_MS = const(1 << 29)")
    if out == src:
        raise AssertionError("firmware/edgefw/agent.py no longer sets _HEALTHY_MS = const(30000): "
                             "update never_confirming_agent()")
    return out


@dataclass
class Pushed:
    """What one `edge ota push --json` said: its exit code and its outcome (state, held, size, states)."""

    code: int
    out: dict
    stderr: str

    @property
    def state(self) -> str | None:
        return self.out.get("state")

    @property
    def states(self) -> list[str]:
        return [s["state"] for s in self.out.get("states", [])]

    def last(self) -> dict:
        """The last state the board reported."""
        return (self.out.get("states") or [{}])[-1]

    def reported(self, state: str) -> dict:
        """The first report of ``state`` (its reason, its check), {} if none."""
        return next((s for s in self.out.get("states", []) if s["state"] == state), {})

    def __str__(self) -> str:
        return f"exit {self.code}: {json.dumps(self.out)}\n{self.stderr[-2000:]}"


def push_command(board: Any, release: Release, *args: str, timeout_s: int = PUSH_TIMEOUT_S) -> list[str]:
    """The arguments of `edge ota push` sending ``release`` to ``board`` over its serial port."""
    return ["ota", "push", board.port, str(release.image), str(release.manifest), "--json",
            "--timeout", f"{timeout_s}s", *args]


def push(host: Any, board: Any, release: Release, *args: str, timeout_s: int = PUSH_TIMEOUT_S) -> Pushed:
    """`edge ota push` of ``release`` to ``board``, to its end (any exit code)."""
    proc = host.edge(*push_command(board, release, *args, timeout_s=timeout_s), check=False, timeout=timeout_s + 60)
    return parse_push(proc.returncode, proc.stdout, proc.stderr)


def parse_push(code: int, stdout: str, stderr: str) -> Pushed:
    lines = stdout.strip().splitlines()
    try:
        out = json.loads(lines[-1]) if lines else None
    except ValueError:
        out = None
    if not isinstance(out, dict):
        pytest.fail(f"`edge ota push --json` printed no outcome (exit {code}):\n{stdout}\n{stderr[-3000:]}")
    return Pushed(code, out, stderr)


def agent_hello(board: Any) -> Hello:
    """The HELLO the board's agent sends after a reset: it booted whole (its version, its boot count).

    What the console held from before is dropped first (an agent with no host
    says HELLO again now and then); the HELLO taken is the one of the boot its
    banner names."""
    console = board.console
    console.open()
    try:
        deadline = time.monotonic() + 5
        while console.read(0.1) and time.monotonic() < deadline:
            pass
        board.reset.reset()
        boot = int(console.expect(BOOT_BANNER, AGENT_TIMEOUT_S).group(1))
        said = []
        for _ in range(8):
            message = agent_message(console)
            if isinstance(message, Hello) and message.boot == boot:
                return message
            said.append(type(message).__name__)
    finally:
        console.close()
    pytest.fail(f"{board.name} sent no HELLO of boot {boot} after a reset, only {', '.join(said)}")


@contextmanager
def short_trial(board: Any, seconds: int) -> Iterator[None]:
    """The board's ``ota.trial_s`` set to ``seconds`` in its board.json (through the console, as
    `edge flash` writes it), the agent restarted; the file put back as it was afterwards."""
    from edge_agent.board_link import BoardLink
    from edge_agent.device_fs import BOARD_JSON

    with BoardLink(board.port) as link:
        raw = link.get(BOARD_JSON)
        if raw is None:
            pytest.fail(f"{board.name} has no {BOARD_JSON}: `edge flash` it")
        spec = json.loads(raw)
        spec.setdefault("ota", {})["trial_s"] = seconds
        link.put(BOARD_JSON, json.dumps(spec).encode())
        link.soft_reset()
    try:
        yield
    finally:
        with BoardLink(board.port) as link:
            link.put(BOARD_JSON, raw)
            link.soft_reset()


class BackgroundPush:
    """`edge ota push` running while the test does something else (cuts power, kills it): ``with
    BackgroundPush(...) as p: ...; p.result()``. Leaving the block ends a push still running."""

    def __init__(self, host: Any, board: Any, release: Release, *args: str,
                 timeout_s: int = PUSH_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self.proc = host.start(*push_command(board, release, *args, timeout_s=timeout_s))

    def running(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """Cut the push short (SIGKILL: no goodbye to the board)."""
        self.proc.kill()
        self.proc.communicate()

    def result(self) -> Pushed:
        """Wait for the push to end; what it said."""
        out, err = self.proc.communicate(timeout=self.timeout_s + 60)
        return parse_push(self.proc.returncode, out, err)

    def __enter__(self) -> BackgroundPush:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.running():
            self.kill()


def wait_until_held(host: Any, heard: Any, n: int, pushing: BackgroundPush, timeout: float = 120.0) -> int:
    """Wait until the board has acknowledged ``n`` bytes of the update ``pushing`` sends (as the registry
    records it: :class:`edge_hil.faults.OtaHeard`); the bytes held then."""
    deadline = time.monotonic() + timeout
    with host.registry() as store:
        while True:
            held = heard.held(store)
            if held is not None and held >= n:
                return held
            if not pushing.running() or time.monotonic() > deadline:
                pytest.fail(f"the board acknowledged {held or 0} bytes, not {n}, before the push "
                            + ("ended" if not pushing.running() else f"had run {timeout:.0f} s"))
            time.sleep(0.02)
