# The board file's sensors turned into Sensor objects (sensors.py), once at
# boot: imported then and dropped after, so its code does not stay in the
# heap. Every read function is made in sensors.py.
from edgefw.sensors import Sensor, _uptime


def build(board, port, clock, device_id):
    specs = list(board.get("sensors", ()))
    if port.virtual:
        specs = specs + list(board.get("virtual_sensors", ()))
    rnd = None  # one generator for every simulated sensor, seeded by the device id
    out = []
    for spec in specs:
        kind = spec.get("kind")
        if kind == "uptime":
            read = _uptime(clock)
        elif kind == "heap_free":
            read = port.mem_free
        elif kind == "mcu_temp":
            if port.virtual:
                sim, rnd = _sim(device_id, rnd)
                read = sim.sim({"mean": 41.0, "swing": 1.5, "period_s": 300, "noise": 0.3}, clock, rnd)
            else:
                read = port.mcu_temp
        elif kind == "rssi":
            read = port.rssi
        elif kind == "sim":
            sim, rnd = _sim(device_id, rnd)
            read = sim.sim(spec, clock, rnd)
        elif kind == "battery":
            sim, rnd = _sim(device_id, rnd)
            read = sim.battery(spec, clock, rnd)
        else:
            raise ValueError("board file: sensor %s has unknown kind %s" % (spec.get("name"), kind))
        out.append(Sensor(spec, read))
    return out


# The apply conditions of the board file's `ota` object and the sensor each
# names (docs/protocol.md 7.10; agent/boards.py checks a board file with the
# same table).
_CONDITIONS = (("battery_min_v", "battery"), ("parked", "parked"))


def ota(board, port):
    # The board file's `ota` object as this board keeps it (7.10): a condition
    # on a sensor the board file lists only among its virtual_sensors binds a
    # virtual board alone, the one board that has that sensor (a real Pico has
    # no battery gauge; its battery is simulated on the bench). Every other
    # condition binds: a sensor that does not read holds the switch.
    cfg = board.get("ota")
    a = cfg.get("apply") if isinstance(cfg, dict) else None
    if not isinstance(a, dict) or port.virtual:
        return cfg
    real = [s.get("name") for s in board.get("sensors", ())]
    bench = [s.get("name") for s in board.get("virtual_sensors", ())]
    a = dict(a)
    for key, name in _CONDITIONS:
        if name in bench and name not in real:
            a.pop(key, None)
    cfg = dict(cfg)
    cfg["apply"] = a
    return cfg


def _sim(device_id, rnd):
    # sensors_sim.py and the generator (made at the first simulated sensor).
    from edgefw import sensors_sim
    if rnd is None:
        rnd = sensors_sim._Rand(sensors_sim._seed(device_id))
    return sensors_sim, rnd
