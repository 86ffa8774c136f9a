"""Virtual boards: the MicroPython Unix port running a board's filesystem behind a serial port.

``edge sim up`` starts a supervisor (:mod:`.supervisor`) that runs each board
(:mod:`.board`) with its filesystem in a folder (:mod:`.fs`) and its console
on a pseudo-terminal that ``mpremote`` drives as it drives a real board
(:mod:`.console`, :mod:`.runner`). :class:`.control.Bench` is the Python API;
:mod:`.cli` the ``edge sim`` commands.
"""
