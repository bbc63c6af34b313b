"""The server, in rooms: plane/ (protocol-neutral operations, models and their swap, batchers,
limits), grpc/ and rest/ (the bindings: decode -> operation -> encode), observe/ (metrics, tracing,
logs). Here: settings and flags, TLS and tokens, the error-to-status table, the server lifecycle.
Never imports torch."""
