"""The names users type for vae.v1's enums, derived from the proto itself, in one place.

``SCORE_TYPE_NEGATIVE_ELBO`` -> ``"negative_elbo"``, ``INTERPOLATION_PATH_LINEAR`` -> ``"linear"``.
The server's gRPC binding (service/grpc/score_types.py) reads SCORE_TYPES from here too, so a new
enum value is named by this one rule on both sides.

Why here: vae_serve.core may import no protobuf (tests/test_bundle.py checks it), api/ is rewritten
wholesale by scripts/gen_protos.sh, and the client must not import the server (it would load ONNX
Runtime through core.scores). This module imports only the generated vae_pb2, so the arrow from the
server's binding to it points down to a leaf.
"""

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from vae_serve.api.v1 import vae_pb2


def enum_names(enum: EnumTypeWrapper, prefix: str) -> dict[str, int]:
    """Name -> value for every value of ``enum`` but its UNSPECIFIED one, named without ``prefix``, in lower case.

    Args:
        enum: A generated enum, e.g. ``vae_pb2.ScoreType``.
        prefix: What every value's proto name starts with, e.g. ``"SCORE_TYPE_"``.

    Returns:
        E.g. {"negative_elbo": 1, ...}, in the enum's order.
    """
    # By name, not by value 0: InterpolationPath has no UNSPECIFIED, its 0 is LINEAR.
    return {name.removeprefix(prefix).lower(): value for name, value in enum.items() if name != f"{prefix}UNSPECIFIED"}


SCORE_TYPES: dict[str, int] = enum_names(vae_pb2.ScoreType, "SCORE_TYPE_")
INTERPOLATION_PATHS: dict[str, int] = enum_names(vae_pb2.InterpolationPath, "INTERPOLATION_PATH_")
_SCORE_NAMES = {value: name for name, value in SCORE_TYPES.items()}


def score_name(score_type: int) -> str:
    """The name of a ScoreType value; one these stubs do not know (proto3 enums are open) by number."""
    return _SCORE_NAMES.get(score_type, f"score_type_{score_type}")
