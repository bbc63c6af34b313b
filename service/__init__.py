"""The gRPC server: settings, the data plane, the VaeService and Open Inference Protocol adapters,
errors to statuses, metrics, health, security and the server lifecycle. Never imports torch."""
