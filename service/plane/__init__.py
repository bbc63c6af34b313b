"""The data plane: protocol-neutral operations on numpy arrays and plain arguments, the models being
served and their swap on reload, the dynamic batchers and the per-request limits. Imports nothing
of grpc, protobuf or aiohttp: the bindings (service.grpc, service.rest) call it, never the reverse."""
