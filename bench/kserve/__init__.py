"""Open Inference Protocol stubs for the load generator, generated on first import into a cache
directory with the project's pinned grpcio-tools (bench only; not part of the package)."""

import importlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
GENERATED = HERE / "_generated"


def _generate() -> None:
    from grpc_tools import protoc

    GENERATED.mkdir(exist_ok=True)
    result = protoc.main(
        [
            "protoc",
            f"-I{HERE}",
            f"--python_out={GENERATED}",
            f"--grpc_python_out={GENERATED}",
            str(HERE / "grpc_predict_v2.proto"),
        ]
    )
    if result != 0:
        raise RuntimeError("protoc failed on bench/kserve/grpc_predict_v2.proto")


if not (GENERATED / "grpc_predict_v2_pb2_grpc.py").exists():
    _generate()
sys.path.insert(0, str(GENERATED))
service_pb2 = importlib.import_module("grpc_predict_v2_pb2")
service_pb2_grpc = importlib.import_module("grpc_predict_v2_pb2_grpc")
