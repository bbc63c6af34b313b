"""How a ``vae-train`` command ends: its JSON summary on stdout (exit 0), or one plain line on
stderr (exit 2 refused, 1 failed), never a traceback."""

import json
import sys
from collections.abc import Callable


def summarize(
    command: str,
    run: Callable[[], dict],
    refused: tuple[type[Exception], ...],
    failed: tuple[type[Exception], ...],
    failure: str = "failed",
) -> int:
    """Run a command; print its JSON summary (0), or its error: ``refused`` ones 2, ``failed`` ones 1."""
    try:
        summary = run()
    except refused as error:
        print(f"vae-train {command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a file or folder the OS refused (disk full, permissions) while working
        print(f"vae-train {command}: error: {os_error_text(error)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"vae-train {command}: error: out of memory; use less data or a smaller --batch-size", file=sys.stderr)
        return 2
    except failed as error:
        print(f"vae-train {command}: {failure}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(summary), flush=True)
    return 0


def os_error_text(error: OSError) -> str:
    """``PATH: reason; ...``: what the OS refused, without a traceback."""
    where = f"{error.filename}: " if error.filename else ""
    return f"{where}{error.strerror or error}; check the path, its permissions and the free disk space"


def note(command: str, text: str) -> None:
    print(f"vae-train {command}: note: {text}", file=sys.stderr)
