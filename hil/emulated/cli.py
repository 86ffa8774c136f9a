"""``edge emulator``: the emulated chips' firmware (``edge emulator build``)."""

from __future__ import annotations

import json

import click


@click.group()
def emulator() -> None:
    """The real MicroPython firmware that emulated boards run.

    \b
      edge emulator build            # the rp2 port for RPI_PICO, cached after the first time
      edge emulator build --json     # where the files are, versions, sizes, seconds
    """


@emulator.command()
@click.option("--board", default="RPI_PICO", show_default=True, metavar="BOARD",
              help="MicroPython rp2 board to build (ports/rp2/boards/BOARD).")
@click.option("--force", is_flag=True,
              help="Fetch Debian's package lists again and rebuild, even when a build is cached.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=None,
              help="Parallel compile jobs (default: the number of CPUs).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def build(board: str, force: bool, jobs: int | None, as_json: bool) -> None:
    """Build the MicroPython rp2 firmware an emulated Pico runs, or reuse the cached one.

    The first run installs the ARM toolchain from the machine's apt, fetches
    MicroPython 1.25, the Pico SDK, TinyUSB and Mbed TLS from Debian 13
    (trixie) through a private apt configuration (the system's is left
    alone), and builds mpy-cross and the firmware: 1-2 minutes and about
    1 GB of packages. The result (firmware.bin, firmware.uf2, firmware.elf,
    mpy-cross, build.json) is cached in
    ${XDG_CACHE_HOME:-~/.cache}/edge-agent/rp2/<key>/, keyed by the source
    versions, our freeze manifest and the build flags; later runs reuse it.
    See docs/emulated.md.
    """
    from edge_hil.emulated import build as rp2

    spec = rp2.BuildSpec(board=board)
    fw = None if force else rp2.find_cached(spec)
    if fw is None:
        fw = _build_with_progress(rp2, spec, force, jobs, quiet=as_json)
    if as_json:
        click.echo(json.dumps({**fw.as_dict(), "pico_w": rp2.pico_w_note(fw).splitlines()}, indent=2))
        return
    _report(rp2, fw)


def _build_with_progress(rp2, spec, force: bool, jobs: int | None, quiet: bool):
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description:<16}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                   TimeElapsedColumn(), console=Console(stderr=True), disable=quiet)
    tasks: dict[str, TaskID] = {}

    def progress(step: str, done: float, total: float | None) -> None:
        if step not in tasks:
            tasks[step] = bar.add_task(rp2.STEPS.get(step, step), total=total)
        bar.update(tasks[step], completed=done, total=total)

    with bar:
        return rp2.build(spec, force=force, progress=progress, jobs=jobs)


def _report(rp2, fw) -> None:
    how = "cached" if fw.cached else f"built in {fw.info['seconds']['total']:.0f} s"
    mpy = fw.info["mpy"]
    click.echo(f"{fw.info['board']}: MicroPython {fw.micropython} (.mpy {mpy['version']}.{mpy['sub']} "
               f"{mpy['arch']}), {how}")
    for label, path in (("firmware.bin", fw.bin), ("firmware.uf2", fw.uf2), ("firmware.elf", fw.elf),
                        ("mpy-cross", fw.mpy_cross)):
        if path is not None:
            click.echo(f"  {label:<13} {path}  ({path.stat().st_size / 1024:.0f} KB)")
    click.echo("  sources       " + ", ".join(f"{k} {v}" for k, v in fw.info["sources"].items()))
    click.echo("")
    click.echo(rp2.pico_w_note(fw))
