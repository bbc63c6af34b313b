"""The gRPC binding: vae.v1.VaeService and the Open Inference Protocol over gRPC (decode -> plane
operation -> encode), the vae.v1 tensor codec, the interceptor that maps errors to statuses, health
and grpc.aio's log. (Absolute ``import grpc`` in these modules still gets the grpc library.)"""
