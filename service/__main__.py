"""``vae-serve``: parse settings, configure logging, run the server, exit with its code. Nothing else
lives here: the flags, their help and their environment variables come from ``Settings`` through
service/cli_settings.py.
"""

import asyncio
import logging
import sys

from pydantic import ValidationError

from vae_serve.core.errors import BundleError
from vae_serve.core.runtime import DeviceUnavailable
from vae_serve.service.cli_settings import build_parser, describe, settings_from

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
    except ValidationError as error:
        print(f"vae-serve: invalid settings: {describe(error)}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), stream=sys.stderr, format=LOG_FORMAT)
    if settings.processes > 1:
        from vae_serve.service.processes import run_processes

        return run_processes(settings, sys.argv[1:] if argv is None else argv)
    from vae_serve.service.security import SecurityError
    from vae_serve.service.server import StartupError, serve  # imported once settings are valid: grpc is not free

    try:
        return asyncio.run(serve(settings))
    except (BundleError, DeviceUnavailable, SecurityError, StartupError) as error:
        print(f"vae-serve: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
