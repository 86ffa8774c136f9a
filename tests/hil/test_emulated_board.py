"""An emulated Pico on the bench: the real MicroPython rp2 firmware on an emulated RP2040.

`edge sim up --board pico --emulated` starts it; its USB CDC console is a
pseudo-terminal that plain mpremote drives; its flash image keeps littlefs
across power off/on; machine.reset() reboots the chip. Every test shares one
bench (a boot costs seconds); each leaves the board running.

These need Node + npm (rp2040js), pip (the boot ROM) and the firmware
(`edge emulator build`): run them with `make test-emulated`.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import serial

from tests.harness import mpremote

pytestmark = [pytest.mark.emulated, pytest.mark.timeout(600)]

NAME = "pico-1"


@pytest.fixture(scope="module")
def pico(module_bench):
    """A bench with one emulated Pico (its row from `edge sim up --json`)."""
    rows = module_bench.up("pico", extra=("--emulated", "--unprovisioned"), timeout=300)
    assert [r["name"] for r in rows] == [NAME]
    wait_repl(rows[0]["port"])
    return module_bench


def wait_repl(port: str, timeout: float = 60) -> None:
    """Wait until the firmware's REPL answers (after a boot: `sim power on` returns once the emulator
    runs, before the chip has enumerated its USB; a Ctrl-C then would reach the firmware's boot)."""
    deadline = time.monotonic() + timeout
    with serial.Serial(port, timeout=0.2) as s:
        seen = b""
        while b">>> " not in seen:
            assert time.monotonic() < deadline, f"no REPL prompt on {port}: {seen[-200:]!r}"
            s.write(b"\r")
            seen += s.read(256)


def repl(port: str, line: bytes, timeout: float = 30) -> bytes:
    """Type ``line`` at the friendly REPL; what it printed, up to the prompt after it."""
    with serial.Serial(port, timeout=timeout) as s:
        s.write(b"\r\x03\x02")              # stop whatever runs, friendly REPL
        time.sleep(0.5)
        s.reset_input_buffer()               # earlier prompts
        s.write(line + b"; print('--' + 'end')\r")
        return s.read_until(b"--end\r\n>>> ")


def type_lines(port: str, *lines: bytes) -> None:
    """Type ``lines`` at the friendly REPL, the last one without waiting for an answer (it may
    never come: a reset)."""
    with serial.Serial(port, timeout=30) as s:
        s.write(b"\r\x03\x02")
        s.read_until(b">>> ")
        for line in lines[:-1]:
            s.write(line + b"\r")
            s.read_until(b">>> ")
        s.write(lines[-1] + b"\r")
        s.read_until(lines[-1])


def run(home, code: str, timeout: float = 60) -> str:
    proc = mpremote(home.port(NAME), "exec", code, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_its_repl_answers_over_the_pty_as_a_real_pico(pico):
    out = repl(pico.port(NAME), b"print(1+1)")
    assert b"\r\n2\r\n" in out
    out = repl(pico.port(NAME), b"import sys; print(sys.platform, sys.implementation._machine)")
    assert b"rp2 Raspberry Pi Pico with RP2040" in out
    # The flash chip's unique id is the board's own, the same on every run.
    from edge_hil.emulated.chip import unique_id

    out = repl(pico.port(NAME), b"import machine; print(machine.unique_id().hex())")
    assert unique_id(NAME).encode() in out


def test_sim_ls_shows_it_as_an_emulated_board(pico):
    rows = pico.json("sim", "ls")
    row = next(r for r in rows if r["name"] == NAME)
    assert row["kind"] == "emulated"
    assert row["board"] == "pico"
    assert row["state"] == "running"
    assert row["fs"].endswith("flash.bin")


def test_plain_mpremote_execs_lists_copies_and_soft_resets(pico, tmp_path):
    assert run(pico, "print(6*7)").strip() == "42"
    src = tmp_path / "hello.txt"
    src.write_bytes(b"hello from the host\n" * 50)
    proc = mpremote(pico.port(NAME), "fs", "cp", str(src), ":hello.txt", timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = mpremote(pico.port(NAME), "fs", "ls", "/", timeout=60)
    assert proc.returncode == 0 and "hello.txt" in proc.stdout, proc.stdout + proc.stderr
    back = tmp_path / "back.txt"
    proc = mpremote(pico.port(NAME), "fs", "cp", ":hello.txt", str(back), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert back.read_bytes() == src.read_bytes()
    # A soft reset clears the interpreter's globals but not the chip.
    proc = mpremote(pico.port(NAME), "exec", "marker = 1", "soft-reset", "exec",
                    "print('marker' in globals())", timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("False")


def test_a_file_written_survives_power_off_and_on(pico):
    run(pico, "f = open('kept.txt', 'w'); f.write('across a power cut'); f.close()")
    pico.edge("sim", "power", NAME, "off")
    assert pico.control.mode(NAME) == "off"
    pico.edge("sim", "power", NAME, "on")
    wait_repl(pico.port(NAME))
    assert run(pico, "print(open('kept.txt').read())").strip() == "across a power cut"


def test_machine_reset_reboots_the_chip_and_keeps_its_files(pico):
    port = pico.port(NAME)
    # Closed: littlefs commits a file at close (an open one is lost at a reset, as on a Pico).
    run(pico, "with open('before_reset.txt', 'w') as f: f.write('x')")
    type_lines(port, b"marker = 1", b"import machine; machine.reset()")
    wait_repl(port)
    out = run(pico, "import machine; print(machine.reset_cause() == machine.WDT_RESET, "
                    "'marker' in globals(), open('before_reset.txt').read())")
    assert out.split() == ["True", "False", "x"]


def test_a_watchdog_not_fed_reboots_the_chip_as_on_a_pico(pico):
    # The agent arms machine.WDT; one left unfed must reset the chip (the
    # emulator once spun for ever in its timer when the watchdog expired).
    port = pico.port(NAME)
    type_lines(port, b"marker = 2", b"import machine; w = machine.WDT(timeout=1000)")
    time.sleep(3)                       # the idle chip's time follows the wall clock
    wait_repl(port)
    out = run(pico, "import machine; print(machine.reset_cause() == machine.WDT_RESET, 'marker' in globals())")
    assert out.split() == ["True", "False"]


def test_its_temperature_sensor_reads_27_c_through_the_adc(pico):
    out = run(pico, "import machine; print(machine.ADC(4).read_u16())")
    celsius = 27 - (int(out) * 3.3 / 65535 - 0.706) / 0.001721
    assert abs(celsius - 27) < 0.5, celsius


def test_edge_sim_reset_boots_it_again(pico):
    pico.edge("sim", "reset", NAME)
    wait_repl(pico.port(NAME))
    assert b"\r\n2\r\n" in repl(pico.port(NAME), b"print(1+1)")


def test_machine_bootloader_shows_the_bootsel_drive_which_takes_a_uf2(pico):
    from edge_hil.emulated import assets

    uf2 = assets.firmware().with_name("firmware.uf2")
    assert uf2.is_file(), f"the firmware build made no {uf2}"  # it writes one and reads it back
    port = pico.port(NAME)
    run(pico, "with open('kept_by_uf2.txt', 'w') as f: f.write('y')")
    type_lines(port, b"import machine; machine.bootloader()")
    deadline = time.monotonic() + 30
    while pico.control.mode(NAME) != "bootsel":
        assert time.monotonic() < deadline, f"{NAME} is {pico.control.mode(NAME)!r}, not in BOOTSEL"
        time.sleep(0.1)
    drive = Path(pico.control.board(NAME)["uf2_drive"])
    (drive / "firmware.uf2").write_bytes(uf2.read_bytes())
    while pico.control.mode(NAME) != "micropython":
        assert time.monotonic() < deadline + 30, f"{NAME} did not boot the UF2"
        time.sleep(0.1)
    wait_repl(port)
    assert run(pico, "print(open('kept_by_uf2.txt').read())").strip() == "y"
    assert "UF2 firmware.uf2 written, rebooting (emulated pico)" in pico.edge("sim", "logs", NAME).stdout
