"""One seam for every kind of board (edge_agent.drivers): the host package
never imports the virtual bench; the command line's composition root joins
them, and a USB board and a virtual one answer the same driver protocols."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.drivers import BoardDriver, FlasherProtocol, PowerProtocol, ResetProtocol, UsbBoard
from edge_agent.errors import DeviceError

AGENT = Path(__file__).resolve().parents[1] / "agent"
COMPOSITION_ROOT = AGENT / "cli" / "__init__.py"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_only_the_composition_root_imports_the_virtual_bench():
    offenders = [str(p.relative_to(AGENT)) for p in sorted(AGENT.rglob("*.py"))
                 if p != COMPOSITION_ROOT and any(n.split(".")[0] == "edge_hil" for n in _imports(p))]
    assert offenders == []


def test_importing_every_host_module_but_the_composition_root_loads_no_virtual_bench():
    modules = sorted("edge_agent." + ".".join(p.relative_to(AGENT).with_suffix("").parts)
                     for p in AGENT.rglob("*.py") if p.name != "__init__.py" and "cli" not in p.parts)
    code = ("import importlib, sys\n"
            f"for m in {modules!r}:\n    importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m.startswith('edge_hil')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_usb_board_offers_the_driver_protocols_and_says_a_person_does_its_power():
    usb = UsbBoard("/dev/ttyACM0")
    assert isinstance(usb, BoardDriver) and usb.kind == "usb" and usb.console_port() == "/dev/ttyACM0"
    assert isinstance(usb.power, PowerProtocol) and isinstance(usb.reset, ResetProtocol)
    assert isinstance(usb.flasher, FlasherProtocol)
    with pytest.raises(DeviceError) as e:
        usb.power.power_off()
    assert "unplug" in e.value.hint
    assert usb.mpy_arch({"mpy_arch": "armv6m"}) == "armv6m" and usb.config_defaults() == {}


def test_a_virtual_board_offers_the_same_protocols(tmp_path):
    from edge_hil.virtual.control import Bench
    from edge_hil.virtual.drivers import VirtualBoards

    bench = Bench.up(["esp32"], rundir=tmp_path / "sim", blank=True)
    try:
        (c,) = VirtualBoards().boards(bench.rundir)
        v = c.driver
        assert isinstance(v, BoardDriver) and c.kind == "virtual" and c.board == "esp32"
        assert isinstance(v.power, PowerProtocol) and isinstance(v.reset, ResetProtocol)
        assert v.why_not_running() is None
        v.power.power_off()
        assert "powered off" in v.why_not_running().message
        v.power.power_on()
        v.reset.reset_to_bootloader()
        assert "download mode" in v.why_not_running().message
        v.reset.reset()
        v.wait_running(__import__("time").monotonic() + 10)
        assert v.why_not_running() is None
    finally:
        bench.down()
