"""Run by tests/test_triton_export.py with a venv that has tritonclient[grpc]==2.51.0 (not the project's).

Usage: tritonclient_config_probe.py CONFIG.pbtxt... Parses each file with protobuf's text_format into
Triton's own ``ModelConfig`` (``tritonclient.grpc.model_config_pb2``, generated from Triton's
model_config.proto) and prints one JSON line: per file, the fields the test checks, or the parse error.
"""

import json
import sys
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2


def tensors(specs) -> list[dict]:
    return [
        {"name": spec.name, "data_type": model_config_pb2.DataType.Name(spec.data_type), "dims": list(spec.dims)}
        for spec in specs
    ]


def summary(config: model_config_pb2.ModelConfig) -> dict:
    return {
        "name": config.name,
        "platform": config.platform,
        "max_batch_size": config.max_batch_size,
        "input": tensors(config.input),
        "output": tensors(config.output),
        "dynamic_batching": (
            {"max_queue_delay_microseconds": config.dynamic_batching.max_queue_delay_microseconds}
            if config.HasField("dynamic_batching")
            else None
        ),
        "instance_group": [
            {"count": group.count, "kind": model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind)}
            for group in config.instance_group
        ],
    }


def main() -> None:
    report = {}
    for path in sys.argv[1:]:
        config = model_config_pb2.ModelConfig()
        try:
            text_format.Parse(Path(path).read_text(), config)
        except text_format.ParseError as error:
            report[path] = {"error": str(error)}
            continue
        report[path] = {"config": summary(config)}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
