"""``Settings`` is the one source of vae-serve's flags, help, environment variables and the README's
settings table; and ``vae-healthcheck`` takes flags of its own."""

import socket
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from tests.server_process import VAE_SERVE, start_server
from vae_serve.service import healthcheck
from vae_serve.service.__main__ import main as vae_serve_main
from vae_serve.service.cli_settings import base_type, build_parser, options, settings_from, table_diff
from vae_serve.service.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"
VAE_HEALTHCHECK = str(Path(sys.executable).with_name("vae-healthcheck"))

# Flags that scripts, manifests and the README used before they were generated: they must keep working.
EXISTING_FLAGS = (
    "--bundle",
    "--model-repository",
    "--host",
    "--port",
    "--metrics-port",
    "--no-metrics",
    "--metrics-host",
    "--processes",
    "--device",
    "--intra-op-threads",
    "--worker-threads",
    "--grace",
    "--max-batch-rows",
    "--max-batch-wait",
    "--batch-wait",
    "--batch-runners",
    "--max-queue-rows",
    "--repository-poll",
    "--tls-cert",
    "--tls-key",
    "--tls-client-ca",
    "--auth-tokens-file",
    "--max-concurrent-rpcs",
    "--keepalive-time",
    "--max-connection-age",
    "--max-rows",
    "--max-k",
    "--max-row-samples",
    "--max-sample-n",
    "--max-stream-sample-n",
    "--reflection",
    "--no-reflection",
    "--log-level",
    "--reuse-port",
)


@pytest.fixture
def clean_env(monkeypatch):
    """No VAE_* variable from the environment the tests run in."""
    for option in options():
        monkeypatch.delenv(option.env, raising=False)
    return monkeypatch


def parse(*flags: str) -> Settings:
    return settings_from(build_parser().parse_args(list(flags)))


def test_readme_settings_table_is_the_generated_one():
    diff = table_diff(README.read_text())
    assert not diff, (
        "README.md's settings table disagrees with Settings; regenerate it with "
        f"`python -m vae_serve.service.cli_settings --write README.md`:\n{diff}"
    )


def test_every_setting_has_a_flag_unless_it_says_why_not():
    found = options()
    assert [option.field for option in found] == list(Settings.model_fields)
    assert {option.field for option in found if option.kind == "env-only"} == {"auth_tokens"}
    assert {option.field for option in found if option.kind == "hidden"} == {"reuse_port"}
    flags = [flag for option in found for flag in option.flags]
    assert len(flags) == len(set(flags))
    assert set(EXISTING_FLAGS) <= set(flags)
    parser = build_parser()
    for option in found:
        assert option.description, f"Settings.{option.field} has no docstring"
        if option.flag is None:
            continue
        kind = base_type(option.info.annotation)
        if kind is bool:
            value = []
        elif typing.get_origin(kind) is typing.Literal:
            value = [typing.get_args(kind)[-1]]
        else:
            value = ["7"]
        given = getattr(parser.parse_args([option.flag, *value]), option.field)
        assert given is not None, f"{option.flag} does not set {option.field}"


def test_help_lists_every_generated_flag_and_variable():
    result = subprocess.run([VAE_SERVE, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for option in options():
        if option.kind == "hidden":
            assert option.flag not in result.stdout
            continue
        assert option.env in result.stdout
        for flag in option.flags:
            assert flag in result.stdout, flag


def test_a_flag_beats_the_environment_which_beats_the_default(clean_env):
    clean_env.setenv("VAE_BUNDLE", "from-env")
    clean_env.setenv("VAE_PORT", "6000")
    clean_env.setenv("VAE_GRACE_S", "3")
    clean_env.setenv("VAE_REFLECTION", "false")
    clean_env.setenv("VAE_METRICS_PORT", "7000")
    clean_env.setenv("VAE_LOG_LEVEL", "WARNING")
    settings = parse("--port", "7001", "--reflection", "--no-metrics", "--keepalive-timeout", "5")
    assert settings.bundle == Path("from-env")
    assert settings.port == 7001 and settings.reflection is True and settings.metrics_port is None
    assert settings.grace_s == 3 and settings.log_level == "warning"
    assert settings.keepalive_timeout_s == 5  # a setting that had no flag before they were generated
    assert settings.max_rows == Settings.model_fields["max_rows"].default
    # 0 is a value, not "not given"; of --metrics-port and --no-metrics the last one wins.
    assert parse("--metrics-port", "0").metrics_port == 0
    assert parse("--no-metrics", "--metrics-port", "9").metrics_port == 9
    assert parse("--grace", "0", "--log-level", "Debug").grace_s == 0
    # Every level logging knows by name, and its "warn" alias, as the flag took them before.
    assert [parse("--log-level", name).log_level for name in ("CRITICAL", "warn")] == ["critical", "warning"]


def test_an_invalid_setting_names_its_flag_and_variable(clean_env, capsys):
    assert vae_serve_main(["--bundle", "x", "--log-level", "loud"]) == 2
    assert "--log-level / VAE_LOG_LEVEL" in capsys.readouterr().err


def test_log_level_from_flag_and_from_environment(digits_bundle, server):
    assert " INFO " in server.log() and " DEBUG " not in server.log()  # the default: info
    # The flag beats VAE_LOG_LEVEL: asyncio logs its selector at DEBUG when the server's loop starts.
    verbose = start_server("--bundle", str(digits_bundle), "--log-level", "DEBUG", env={"VAE_LOG_LEVEL": "error"})
    assert verbose.stop() == 0
    assert " DEBUG " in verbose.log()
    quiet = start_server("--bundle", str(digits_bundle), env={"VAE_LOG_LEVEL": "warning"}, metrics=False)
    assert quiet.stop() == 0
    assert " INFO " not in quiet.log() and " DEBUG " not in quiet.log()


def test_healthcheck_help_exits_0():
    result = subprocess.run([VAE_HEALTHCHECK, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--target" in result.stdout


def test_healthcheck_is_0_only_when_serving(server, monkeypatch):
    target = f"127.0.0.1:{server.port}"
    assert healthcheck.main(["--target", target]) == 0
    assert healthcheck.main(["--target", target, "--service", "vae.v1.VaeService"]) == 0
    assert healthcheck.main(["--target", target, "--service", "no.such.Service"]) == 1  # NOT_FOUND
    monkeypatch.setenv("VAE_PORT", str(server.port))
    assert healthcheck.main([]) == 0  # the container's default: the local server on VAE_PORT


def test_healthcheck_of_a_closed_port_is_1():
    with socket.socket() as bound:  # bound, never listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        assert healthcheck.main(["--target", f"127.0.0.1:{port}", "--timeout", "2"]) == 1
