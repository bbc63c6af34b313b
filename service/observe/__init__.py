"""Observation: Prometheus metrics, OpenTelemetry tracing and log helpers, handed to the plane and
the bindings as objects; nothing here imports the plane or a binding."""
