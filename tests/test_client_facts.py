"""Facts defined once (issue 21): the client restates no score, and the default port and message
limits live in vae_serve.core.defaults alone. Read from the sources (what a new score or a new
default must touch) and from the objects that use them."""

import ast
from pathlib import Path

from vae_serve.client import split
from vae_serve.client.cli import DEFAULT_TARGET, build_parser
from vae_serve.client.connection import MAX_MESSAGE_BYTES
from vae_serve.client.names import INTERPOLATION_PATHS, SCORE_TYPES
from vae_serve.core.defaults import DEFAULT_PORT, MAX_REPLY_BYTES, MAX_REQUEST_BYTES
from vae_serve.core.scores import SCORES
from vae_serve.service import healthcheck
from vae_serve.service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEFAULTS_MODULE = ROOT / "core" / "defaults.py"


def modules(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (ROOT / folder).rglob("*.py"))


def constants(path: Path) -> list[object]:
    """Every literal value in the module's code: constants, and sizes written in KiB arithmetic
    evaluated (``16 * 1024 * 1024`` is one value; ``1 << 24``, a count of values, is not a size)."""
    values = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant):
            values.append(node.value)
        elif isinstance(node, ast.BinOp):
            parts = list(ast.walk(node))
            if all(isinstance(part, ast.Constant | ast.BinOp | ast.operator) for part in parts) and any(
                isinstance(part, ast.Constant) and part.value == 1024 for part in parts
            ):
                values.append(eval(compile(ast.Expression(node), str(path), "eval")))  # constants only
    return values


def test_the_client_names_no_score():
    # A new score is core/scores.py and the proto enum: the client reads names from the enum and
    # draws and the default from GetModelInfo, so no client module may spell a score's name.
    for path in modules("client"):
        named = {value for value in constants(path) if isinstance(value, str)} & set(SCORES)
        assert not named, f"{path.relative_to(ROOT)} restates the scores {sorted(named)}"
    assert set(SCORE_TYPES) == set(SCORES)  # the enum names every score of the registry
    assert set(INTERPOLATION_PATHS) == {"linear", "spherical"}


def test_the_default_port_and_message_limits_are_defined_once():
    for path in modules("client", "service", "core"):
        if path == DEFAULTS_MODULE:
            continue
        values = constants(path)
        assert DEFAULT_PORT not in values, f"{path.relative_to(ROOT)} restates the port"
        assert not [v for v in values if isinstance(v, str) and (v == "50051" or v.endswith(":50051"))], path
        for limit in (MAX_REQUEST_BYTES, MAX_REPLY_BYTES):
            assert limit not in values, f"{path.relative_to(ROOT)} restates the message limit {limit}"


def test_every_user_of_the_defaults_reads_them(monkeypatch):
    fields = Settings.model_fields
    assert fields["port"].default == DEFAULT_PORT
    assert fields["max_receive_message_bytes"].default == MAX_REQUEST_BYTES
    assert fields["max_send_message_bytes"].default == MAX_REPLY_BYTES
    assert f"127.0.0.1:{DEFAULT_PORT}" == DEFAULT_TARGET
    monkeypatch.delenv("VAE_TARGET", raising=False)
    assert build_parser().parse_args(["health"]).target == DEFAULT_TARGET
    monkeypatch.delenv("VAE_PORT", raising=False)
    assert healthcheck.build_parser().parse_args([]).target == f"127.0.0.1:{DEFAULT_PORT}"
    monkeypatch.setenv("VAE_PORT", "6000")
    assert healthcheck.build_parser().parse_args([]).target == "127.0.0.1:6000"
    assert split.REQUEST_BYTES + split.MESSAGE_OVERHEAD_BYTES == MAX_REQUEST_BYTES
    assert split.REPLY_BYTES + split.MESSAGE_OVERHEAD_BYTES == MAX_REPLY_BYTES == MAX_MESSAGE_BYTES
