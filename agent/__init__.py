"""Edge Agent host side: the ``edge`` command line, transports, registry, telemetry."""

__version__ = "0.1.0"
