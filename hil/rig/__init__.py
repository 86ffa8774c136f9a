"""The HIL rig: one rig file describes a bench's boards (docs/hil.md).

:func:`load_rig` reads and checks the file into a :class:`Rig` of
:class:`RigBoard` values (resources: where each board is, how its power and
reset are switched); :func:`open_target` binds :mod:`edge_hil.drivers` to
them and :class:`Strategy` walks a board through its :data:`STATES`.
"""

from edge_hil.rig.load import load_rig
from edge_hil.rig.model import (CAPABILITIES, STATES, BleSpec, PowerSpec, Relay, ResetSpec, Rig, RigBoard,
                                RigError, board_has_radio)
from edge_hil.rig.strategy import Strategy
from edge_hil.rig.target import RigBench, Target, open_target, start_bench

__all__ = ["load_rig", "Rig", "RigBoard", "RigError", "Relay", "PowerSpec", "ResetSpec", "BleSpec",
           "CAPABILITIES", "STATES", "board_has_radio",
           "open_target", "start_bench", "Target", "RigBench", "Strategy"]
