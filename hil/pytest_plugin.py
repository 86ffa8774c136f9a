"""The HIL rig's pytest plugin: ``pytest --rig RIGFILE hil/suites`` (docs/hil.md section 3).

Registered through the ``pytest11`` entry point, so it is loaded in every
pytest run of this environment; without ``--rig`` it only declares its
options, markers and fixtures, and a test that asks for a rig fixture is
skipped with :data:`NO_RIG`. The project's own tests are untouched.

With ``--rig`` it loads the rig file once (an error in it stops the run
before collection, naming file and line), parametrises every test that uses
``board`` over the rig's boards that match its ``boards(...)`` and
``needs(...)`` markers (ids are board names; each board is its own
pytest-xdist group), holds the board's lock (:mod:`edge_hil.locks`) for the
test, and reports: JUnit properties per test case, the board's console since
the test began on a failure, and a table per board at the end.

The virtual bench of a rig's ``virtual``/``emulated`` boards is started once
per run: by the ``rig`` fixture, or, under ``-n``, by the controller before
the workers start (the workers attach to it), and stopped at the end. A run
stopped with SIGTERM (a CI job's timeout, ``kill``) stops as Ctrl-C stops it,
running the teardowns that stop the bench and the commands tests started.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Generator, Iterator, TypeVar

import pytest

from edge_agent.errors import EdgeError
from edge_hil.faults import Faults, error_text
from edge_hil.locks import WAIT_S, BoardLock
from edge_hil.virtual.state import dies_with_this_thread

NO_RIG = "no rig: run with --rig RIGFILE (docs/hil.md)"
# Under -n, the controller's host folder and bench folder, for the workers to share.
HOST_ENV = "EDGE_HIL_HOST"
BENCH_ENV = "EDGE_HIL_BENCH"
PROPERTIES = ("board", "board_type", "board_kind", "board_serial", "firmware", "agent_version",
              "git_revision", "retries")
# Facts a test may record itself (record_property) and the plugin then keeps for the board.
LEARNED = ("firmware", "agent_version")
UNKNOWN = "unknown"

T = TypeVar("T")


# -- options and markers ------------------------------------------------------------

def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("edge-hil", "Edge Agent HIL rig (docs/hil.md)")
    group.addoption("--rig", metavar="RIGFILE", default=None,
                    help="Rig file (YAML) describing the bench's boards; without it the rig's tests are skipped.")
    group.addoption("--rig-board", metavar="NAME", action="append", default=[],
                    help="Run on this board of the rig only (repeat for more).")
    group.addoption("--rig-answers", metavar="FILE", default=None,
                    help="Answers to the run's questions to a person (manual power), one line each.")
    group.addoption("--rig-lock-wait", metavar="SECONDS", type=float, default=WAIT_S,
                    help=f"How long a test waits for a board another process holds [default: {WAIT_S:.0f}].")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "boards(*types): run only on boards of these types (files in boards/)")
    config.addinivalue_line("markers", "needs(*capabilities): run only on boards that have these "
                                       "(console, reset, power, ble, ota, firmware-image)")
    path = config.getoption("rig")
    if not path:
        return
    run = RigRun(config, _load(config, path))
    config.stash[RUN] = run
    config.pluginmanager.register(run, "edge-hil-run")
    config.add_cleanup(_stop_on_sigterm_as_on_ctrl_c())
    # One worker owns a board: xdist's default distribution would spread a board's tests.
    if getattr(config.option, "numprocesses", None) and config.option.dist in ("no", "load"):
        config.option.dist = "loadgroup"


def _stop_on_sigterm_as_on_ctrl_c() -> Callable[[], None]:
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does: pytest then tears every fixture down (the
    rig's virtual bench, the commands a test left running, the board locks) where SIGTERM's default
    would leave them running. Only where nobody else handles SIGTERM (xdist's workers included).
    Returns what puts the former handler back."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        return lambda: None
    signal.signal(signal.SIGTERM, _interrupt)

    def restore() -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return restore


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")


def _load(config: pytest.Config, path: str) -> Any:
    from edge_hil.rig import load_rig

    answers = config.getoption("rig_answers")
    if answers and not Path(answers).is_file():
        raise pytest.UsageError(f"--rig-answers {answers}: no such file\n  fix: give a file of answers, one a line")
    try:
        rig = load_rig(path, person=bool(answers) or _has_terminal())
    except EdgeError as e:
        raise pytest.UsageError(error_text(e)) from None
    chosen = config.getoption("rig_board")
    unknown = [n for n in chosen if n not in {b.name for b in rig.boards}]
    if unknown:
        raise pytest.UsageError(f"--rig-board {', '.join(unknown)}: no such board in rig {rig.name} ({path})\n"
                                f"  fix: boards: {', '.join(b.name for b in rig.boards)}")
    if chosen:
        rig = dataclasses.replace(rig, boards=tuple(b for b in rig.boards if b.name in chosen))
    return rig


def _has_terminal() -> bool:
    """Whether a person can be asked: the run has a controlling terminal (pytest captures fd 0)."""
    try:
        os.close(os.open("/dev/tty", os.O_RDWR))
        return True
    except OSError:
        return False


def _asker(answers: str | None) -> Any:
    """Where a manual power switch's questions go: the answers file, else the terminal, else nowhere
    (then a manual board has no power driver and its power tests are skipped)."""
    from edge_hil.drivers.power import AnswersFile, terminal_ask

    if answers:
        return AnswersFile(answers)
    return terminal_ask() if _has_terminal() else None


# -- which boards a test runs on -----------------------------------------------------

def _marker_args(item_or_def: Any, name: str, where: str) -> tuple[str, ...] | None:
    """All arguments of the ``name`` markers on a test (None when it has none), checked to be text."""
    marks = list(item_or_def.iter_markers(name))
    if not marks:
        return None
    values: list[str] = []
    for mark in marks:
        if mark.kwargs or not mark.args:
            pytest.fail(f"{where}: @pytest.mark.{name} takes one or more names, as "
                        f"@pytest.mark.{name}(\"a\", \"b\"), not {mark.args!r} {mark.kwargs or ''}", pytrace=False)
        for a in mark.args:
            if not isinstance(a, str):
                pytest.fail(f"{where}: @pytest.mark.{name} takes names (text), not {a!r}", pytrace=False)
            values.append(a)
    return tuple(dict.fromkeys(values))


def wanted(definition: Any, where: str) -> tuple[tuple[str, ...] | None, frozenset[str]]:
    """The board types (None: any) and capabilities a test asks for with its markers.

    A type that is no board file, or a capability the rig does not know,
    fails the test's collection naming the known ones: a typo must not turn
    into a silently skipped test.
    """
    from edge_agent.boards import known_boards
    from edge_hil.rig import CAPABILITIES

    types = _marker_args(definition, "boards", where)
    needs = _marker_args(definition, "needs", where) or ()
    if types is not None:
        known = known_boards()
        bad = [t for t in types if t not in known]
        if bad:
            pytest.fail(f"{where}: @pytest.mark.boards names no board type {', '.join(map(repr, bad))}; "
                        f"board types: {', '.join(sorted(known))}", pytrace=False)
    bad = [c for c in needs if c not in CAPABILITIES]
    if bad:
        pytest.fail(f"{where}: @pytest.mark.needs names no capability {', '.join(map(repr, bad))}; "
                    f"capabilities: {', '.join(CAPABILITIES)}", pytrace=False)
    return types, frozenset(needs)


def select(rig: Any, types: tuple[str, ...] | None, needs: frozenset[str]) -> tuple[list[Any], str]:
    """The rig's boards of one of ``types`` that have every capability in ``needs``,
    and, when there are none, why (the reason the test is skipped with)."""
    of_type = [b for b in rig.boards if types is None or b.board in types]
    chosen = [b for b in of_type if needs <= b.capabilities]
    if chosen:
        return chosen, ""
    if not rig.boards:
        return [], f"rig {rig.name} has no board to run on (--rig-board leaves none)"
    if not of_type:
        have = ", ".join(sorted({b.board for b in rig.boards}))
        return [], f"no board of type {' or '.join(types or ())} in rig {rig.name} (it has {have})"
    lacks = "; ".join(f"{b.name} lacks {', '.join(sorted(needs - b.capabilities))}" for b in of_type)
    return [], f"no board of rig {rig.name} has {', '.join(sorted(needs))}: {lacks}"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "board" not in metafunc.fixturenames:
        return
    types, needs = wanted(metafunc.definition, metafunc.definition.nodeid)
    run = metafunc.config.stash.get(RUN, None)
    if run is None:
        return      # the rig fixture skips it
    boards, why = select(run.rig, types, needs)
    if not boards:
        metafunc.parametrize("board", [pytest.param(None, id="no-board", marks=pytest.mark.skip(reason=why))],
                             indirect=True)
        return
    metafunc.parametrize("board", [pytest.param(b.name, id=b.name,
                                                marks=pytest.mark.xdist_group(f"{run.rig.name}:{b.name}"))
                                   for b in boards], indirect=True)


# -- the run: bench, per-board facts, results ----------------------------------------

class RigRun:
    """One pytest run (or one xdist worker's part of it) on one rig: its host side, its virtual
    bench, per-board facts and the results the summary is made of."""

    def __init__(self, config: pytest.Config, rig: Any) -> None:
        self.config, self.rig = config, rig
        self.host: Host | None = None
        self.bench: Any = None          # edge_hil.rig's RigBench, when the rig has bench boards
        self._bench_dir: str | None = None
        self.targets: dict[str, Any] = {}
        self.facts: dict[str, dict[str, str]] = defaultdict(dict)
        self.results: dict[str, dict[str, Any]] = {}      # nodeid -> what its reports said
        self.revision = _git_revision(Path(str(config.rootpath)))
        self.ask = _asker(config.getoption("rig_answers"))

    def prepare(self, factory: pytest.TempPathFactory) -> Host:
        """The run's host side and its virtual bench, made once. A worker of ``-n`` shares its
        controller's (one registry, one bench): their folders come in :data:`HOST_ENV`/:data:`BENCH_ENV`."""
        if self.host is not None:
            return self.host
        worker = hasattr(self.config, "workerinput")
        shared_home = os.environ.get(HOST_ENV) if worker else None
        host = Host(Path(shared_home) if shared_home else factory.mktemp("edge-host"))
        if self.rig.bench_boards:
            from edge_hil.rig import start_bench

            rig = self.rig
            shared_bench = os.environ.get(BENCH_ENV) if worker else None
            if shared_bench and rig.bench_dir is None:
                rig = dataclasses.replace(rig, bench_dir=Path(shared_bench))
            # Short and outside pytest's folders: the virtual air's unix sockets need a short path.
            self._bench_dir = None if rig.bench_dir else tempfile.mkdtemp(prefix="edge-rig-")
            try:
                self.bench = start_bench(rig, Path(self._bench_dir or "."), env=host.env)
            except EdgeError as e:
                self._remove_bench_dir()
                pytest.exit(f"rig {self.rig.name}: the virtual bench did not start: {error_text(e)}",
                            returncode=pytest.ExitCode.INTERNAL_ERROR)
            host.use_bench(Path(self.bench.sim_dir), air=any(b.kind == "virtual" for b in rig.bench_boards))
        self.host = host
        return host

    def stop(self) -> None:
        for target in self.targets.values():
            target.close()
        self.targets.clear()
        if self.bench is not None:
            bench, self.bench = self.bench, None
            bench.down()        # a no-op for a bench this process only attached to
        self._remove_bench_dir()

    def _remove_bench_dir(self) -> None:
        if self._bench_dir is not None:
            shutil.rmtree(self._bench_dir, ignore_errors=True)
            self._bench_dir = None

    def target(self, name: str) -> Any:
        """Board ``name`` with its drivers, made once per process."""
        from edge_hil.rig import open_target

        if name not in self.targets:
            self.targets[name] = open_target(self.rig, name, self.host, bench=self.bench, ask=self.ask)
        return self.targets[name]

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        # Under -n: one host folder and one bench for every worker, made before the workers start
        # (they inherit the environment).
        if session.config.pluginmanager.has_plugin("dsession"):
            host = self.prepare(session.config._tmp_path_factory)  # type: ignore[attr-defined]
            os.environ[HOST_ENV] = str(host.root)
            if self.bench is not None:
                os.environ[BENCH_ENV] = str(self.bench.sim_dir)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.stop()

    # Reports ----------------------------------------------------------------------
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item,
                                  call: pytest.CallInfo) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        info: BoardUse | None = item.stash.get(USE, None)
        if info is None:
            return report
        report.edge_hil = info.summary()     # type: ignore[attr-defined]  # carried to xdist's controller
        if report.failed and report.when in ("setup", "call"):
            info.console_section = (f"Captured stdout: console of {info.name} since the test began",
                                    info.console_since())
            report.sections.append(info.console_section)
        if report.when == "teardown":
            # JUnit's system-out is written from the teardown report.
            if info.console_section is not None:
                report.sections.append(info.console_section)
            own = {name for name, _ in report.user_properties}
            for name, value in info.properties(self).items():
                if name not in own:
                    report.user_properties.append((name, value))
            for name, recorded in report.user_properties:
                if name in LEARNED and str(recorded) not in ("None", "", UNKNOWN):
                    self.facts[info.name][name] = str(recorded)
        return report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        hil = getattr(report, "edge_hil", None)
        if not hil:
            if report.skipped and report.when == "setup" and report.nodeid.endswith("[no-board]"):
                self.results[report.nodeid] = {"board": None, "outcome": "skipped"}
            return
        row = self.results.setdefault(report.nodeid, {"board": hil["board"], "outcome": "passed"})
        row.update(hil)
        if report.failed:
            row["outcome"] = "failed"
        elif report.skipped and row["outcome"] != "failed":
            row["outcome"] = "skipped"

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        lines = summary_lines(self.rig, self.results)
        if lines:
            terminalreporter.section(f"rig {self.rig.name}")
            for line in lines:
                terminalreporter.write_line(line)


def _git_revision(root: Path) -> str:
    try:
        proc = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    if proc.returncode != 0:
        return UNKNOWN
    return proc.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


RUN = pytest.StashKey[RigRun]()


class BoardUse:
    """One test's use of one board: what the reports say about it."""

    def __init__(self, target: Any, row: Any, console_log: Callable[[], bytes]) -> None:
        self.target, self.row, self.name = target, row, row.name
        self._console_log = console_log
        self._console_start = len(console_log())
        self.retries = 0
        self.retried: list[str] = []
        self.strategy_times: dict[str, float] = {}
        self.console_section: tuple[str, str] | None = None

    def console_since(self) -> str:
        """What the board printed since the test began."""
        try:
            data = self._console_log()[self._console_start:]
        except (OSError, EdgeError) as e:
            return f"(console log unreadable: {e})"
        return data.decode("utf-8", errors="replace") or "(nothing)"

    def properties(self, run: RigRun) -> dict[str, str]:
        facts = run.facts.get(self.name, {})
        return {"board": self.name, "board_type": self.row.board, "board_kind": self.row.kind,
                "board_serial": board_serial(self.row, self.target),
                "firmware": facts.get("firmware", UNKNOWN), "agent_version": facts.get("agent_version", UNKNOWN),
                "git_revision": run.revision, "retries": str(self.retries)}

    def summary(self) -> dict[str, Any]:
        return {"board": self.name, "board_type": self.row.board, "board_kind": self.row.kind,
                "retries": self.retries, "retried": list(self.retried),
                "strategy": dict(self.strategy_times)}


USE = pytest.StashKey[BoardUse]()


def board_serial(row: Any, target: Any) -> str:
    """A USB board's serial number (from its port), a bench board's name on its bench."""
    if row.kind != "usb":
        return str(getattr(target, "bench_name", None) or row.name)
    port = row.port or ""
    if "://" in port:
        return port
    try:
        from serial.tools import list_ports

        real = os.path.realpath(port)
        for p in list_ports.comports():
            if os.path.realpath(p.device) == real and p.serial_number:
                return str(p.serial_number)
    except (ImportError, OSError):
        pass
    return port


def summary_lines(rig: Any, results: dict[str, dict[str, Any]]) -> list[str]:
    """The end-of-run table: per board, tests passed/failed/skipped, retries, seconds per strategy state."""
    from edge_hil.rig import STATES

    per: dict[str, dict[str, Any]] = {}
    unmatched = 0
    retried: list[str] = []
    for nodeid, r in results.items():
        if r.get("board") is None:
            unmatched += 1
            continue
        row = per.setdefault(r["board"], {"passed": 0, "failed": 0, "skipped": 0, "retries": 0,
                                           "type": r.get("board_type", ""), "kind": r.get("board_kind", ""),
                                           "states": defaultdict(float)})
        row[r["outcome"]] += 1
        row["retries"] += int(r.get("retries") or 0)
        for state, seconds in (r.get("strategy") or {}).items():
            row["states"][state] += float(seconds)
        retried += [f"{r['board']}: {nodeid.split('::')[-1]}: retried {what}" for what in r.get("retried") or ()]
    if not per and not unmatched:
        return []
    states = [s for s in STATES if any(s in row["states"] for row in per.values())]
    head = ["board", "type", "kind", "passed", "failed", "skipped", "retries"] + [f"{s} s" for s in states]
    order = [b.name for b in rig.boards if b.name in per] + sorted(set(per) - {b.name for b in rig.boards})
    rows = [[name, per[name]["type"], per[name]["kind"], str(per[name]["passed"]), str(per[name]["failed"]),
             str(per[name]["skipped"]), str(per[name]["retries"])]
            + [f"{per[name]['states'][s]:.1f}" if s in per[name]["states"] else "-" for s in states]
            for name in order]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
             for r in [head, *rows]]
    if unmatched:
        lines.append(f"{unmatched} test(s) skipped: no board of the rig matches their markers (see -rs)")
    return lines + retried


# -- fixtures ------------------------------------------------------------------------

def _run(request: pytest.FixtureRequest) -> RigRun:
    run = request.config.stash.get(RUN, None)
    if run is None:
        pytest.skip(NO_RIG)
    return run


@pytest.fixture(scope="session")
def rig(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The loaded rig (``edge_hil.rig.Rig``), its virtual bench running."""
    run = _run(request)
    run.prepare(tmp_path_factory)
    try:
        yield run.rig
    finally:
        if not request.config.pluginmanager.has_plugin("dsession"):
            run.stop()


class Host:
    """The host side of a run: its own ``EDGE_HOME`` (registry, keys) and the ``edge`` command.

    ``env`` is what every command runs with: ``EDGE_HOME``/``EDGE_DB`` in
    ``root``; once the rig's virtual bench runs, ``EDGE_SIM_DIR`` (its
    boards by name) and ``EDGE_BLE=sim`` (its virtual air).
    """

    def __init__(self, root: Path) -> None:
        from edge_hil.rig.target import edge_command

        self.root = Path(root)
        self.db = self.root / "registry.db"
        self.env = {**os.environ, "EDGE_HOME": str(self.root), "EDGE_DB": str(self.db),
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                    "COLUMNS": "200"}
        self.command = edge_command()

    def use_bench(self, sim_dir: Path, air: bool) -> None:
        self.env["EDGE_SIM_DIR"] = str(sim_dir)
        if air:
            self.env["EDGE_BLE"] = "sim"

    def edge(self, *args: str, timeout: float = 180, check: bool = True, input: str | None = None,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run ``edge ARGS`` as a user does (a subprocess, stdin closed); with ``check``, an exit
        other than 0 raises :class:`EdgeCommandFailed` carrying both streams."""
        proc = subprocess.run([*self.command, *args], capture_output=True, text=True, timeout=timeout,
                              env={**self.env, **(env or {})}, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL,
                              preexec_fn=dies_with_this_thread())
        if check and proc.returncode != 0:
            raise EdgeCommandFailed(args, proc)
        return proc

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """``edge ARGS`` in the background (an ingest, a gateway, a push), stdin closed, both
        streams piped as text. It dies with the test's process: a run killed even by SIGKILL
        leaves no command holding a board's port."""
        return subprocess.Popen([*self.command, *args], env={**self.env, **(env or {})}, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=dies_with_this_thread())

    def registry(self) -> Any:
        """The run's registry (an ``edge_agent.store.Store``; close it, or use it in ``with``)."""
        from edge_agent.store import Store

        return Store(self.db)


class EdgeCommandFailed(EdgeError):
    """An ``edge`` command a test or a strategy ran exited non-zero."""

    def __init__(self, args: tuple[str, ...], proc: subprocess.CompletedProcess) -> None:
        self.proc = proc
        super().__init__(f"edge {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}".rstrip(),
                         "see its output above")
        self.exit_code = proc.returncode


@pytest.fixture(scope="session")
def host(rig: Any, request: pytest.FixtureRequest) -> Host:
    """The host side, shared by the run's tests (and workers): a registry in a temporary folder,
    `edge`, BLE on the rig's air."""
    host = request.config.stash[RUN].host
    assert host is not None      # made with the rig
    return host


@pytest.fixture
def board(request: pytest.FixtureRequest, rig: Any, host: Host) -> Iterator[Any]:
    """The board under test (a ``Target``), held under its lock for the test."""
    run = request.config.stash[RUN]
    name = request.param
    row = rig.board(name)
    lock = BoardLock(rig.name, name)
    try:
        lock.acquire(request.config.getoption("rig_lock_wait"))
    except EdgeError as e:
        pytest.fail(error_text(e), pytrace=False)
    try:
        try:
            target = run.target(name)
        except EdgeError as e:
            pytest.fail(f"{name}: {error_text(e)}", pytrace=False)
        use = BoardUse(target, row, lambda: console_log(target))
        request.node.stash[USE] = use
        yield target
    finally:
        lock.release()


def console_log(target: Any) -> bytes:
    """Everything the board's console printed so far: the bench's log of a bench board
    (it holds what any program read), else what the console driver read."""
    if target.bench is not None and target.bench_name:
        try:
            return target.bench.console_log(target.bench_name).read_bytes()
        except FileNotFoundError:
            return b""
    return bytes(target.console.log)


@pytest.fixture
def console(board: Any) -> Any:
    """The board's console driver (open, write, read, expect; ``log`` for reports)."""
    return board.console


@pytest.fixture
def power(board: Any) -> Any:
    """The board's power driver (on, off, cycle); skips on a board the run cannot switch."""
    if board.power is None:
        pytest.skip(f"{board.name} has no power switch this run can drive (power: manual and no person: "
                    "give --rig-answers FILE)")
    return board.power


@pytest.fixture
def strategy(board: Any, host: Host, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A ``Strategy`` walking the board through its states; the time it spends in each is reported."""
    from edge_hil.rig import Strategy

    s = Strategy(board, host)
    try:
        yield s
    finally:
        use = request.node.stash.get(USE, None)
        if use is not None:
            for state, seconds in (getattr(s, "times", None) or {}).items():
                use.strategy_times[state] = use.strategy_times.get(state, 0.0) + float(seconds)


class Retry:
    """``retry(fn, attempts, what)``: call ``fn`` until it returns, at most ``attempts`` times.

    Each retry is counted on the test (JUnit property ``retries``, the
    summary table, a line naming the step): flakiness is reported, never
    hidden. The last failure is raised as it was.
    """

    def __init__(self, use: BoardUse | None) -> None:
        self.use = use
        self.count = 0

    def __call__(self, fn: Callable[[], T], attempts: int = 3, what: str = "a step",
                 errors: tuple[type[BaseException], ...] = (EdgeError, AssertionError, OSError)) -> T:
        if attempts < 1:
            raise ValueError(f"retry({what!r}): attempts must be at least 1, not {attempts}")
        for attempt in range(1, attempts + 1):
            try:
                return fn()
            except errors as e:
                if attempt == attempts:
                    raise
                self.count += 1
                if self.use is not None:
                    self.use.retries += 1
                    self.use.retried.append(f"{what} (attempt {attempt} of {attempts}: {str(e).splitlines()[0] if str(e) else type(e).__name__})")
        raise AssertionError("unreachable")


@pytest.fixture
def retry(request: pytest.FixtureRequest) -> Retry:
    """:class:`Retry` counting on this test's board (use it after ``board``)."""
    return Retry(request.node.stash.get(USE, None))


@pytest.fixture
def faults(board: Any, host: Host) -> Iterator[Faults]:
    """:class:`Faults` on the board under test; what they left behind is undone when the test ends."""
    f = Faults(board, host)
    try:
        yield f
    finally:
        f.undo()

