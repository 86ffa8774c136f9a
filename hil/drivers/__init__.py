"""The rig's drivers: one per kind of hardware, each behind a tiny protocol
(docs/hil.md section 2). They bind to the resources of a loaded rig
(:mod:`edge_hil.rig`): :mod:`.power` switches a supply, :mod:`.reset`
restarts a chip, :mod:`.console` reads and writes its serial console,
:mod:`.relay` speaks to a relay board and :mod:`.virtual_relay` is one on a
pseudo-terminal, :mod:`.ble` drops a board's BLE link, and :mod:`.tool` runs
the host tools they call (uhubctl, busctl). Which driver a board gets is decided in one place,
:func:`edge_hil.rig.open_target`.
"""
