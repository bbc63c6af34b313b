"""The REST binding: the Open Inference Protocol over HTTP/JSON (aiohttp), beside gRPC on the same
event loop and calling the same plane operations: routes, JSON/binary codec, the HTTP guard and
error replies."""
