"""Telemetry on the host: the ingest core, the registry writer and SenML."""
