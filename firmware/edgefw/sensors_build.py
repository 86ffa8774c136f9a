# The board file's sensors turned into Sensor objects (sensors.py), once at
# boot: imported then and dropped after, so its code does not stay in the
# heap. Every read function is made in sensors.py.
from edgefw.sensors import Sensor, _Rand, _battery, _seed, _sim, _uptime


def build(board, port, clock, device_id):
    specs = list(board.get("sensors", ()))
    if port.virtual:
        specs = specs + list(board.get("virtual_sensors", ()))
    rnd = _Rand(_seed(device_id))
    out = []
    for spec in specs:
        kind = spec.get("kind")
        if kind == "uptime":
            read = _uptime(clock)
        elif kind == "heap_free":
            read = port.mem_free
        elif kind == "mcu_temp":
            if port.virtual:
                read = _sim({"mean": 41.0, "swing": 1.5, "period_s": 300, "noise": 0.3}, clock, rnd)
            else:
                read = port.mcu_temp
        elif kind == "rssi":
            read = port.rssi
        elif kind == "sim":
            read = _sim(spec, clock, rnd)
        elif kind == "battery":
            read = _battery(spec, clock, rnd)
        else:
            raise ValueError("board file: sensor %s has unknown kind %s" % (spec.get("name"), kind))
        out.append(Sensor(spec, read))
    return out
