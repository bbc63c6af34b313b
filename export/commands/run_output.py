"""Where ``vae-train train`` writes: a private work folder beside ``--out`` that holds the bundle and
its report until both are complete, then two renames into place.

A run that fails or is interrupted (Ctrl-C, or SIGTERM, which vae-train handles as Ctrl-C), at any
step, leaves nothing behind: not the work folder, not a staging folder, not a half-drawn report, and
not the parent folders it created for ``--out``. The destination and the report folder are checked
before any data is loaded, so a folder that may not be written is refused before training, not
after.
"""

import contextlib
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vae_serve.export.bundle.writer import check_destination, replace_dir
from vae_serve.export.commands.report import REPORT_FILES, report_dir_for


def is_report_file(entry: Path) -> bool:
    """A file the training report holds (a regular file named as one of its pictures)."""
    return entry.is_file() and not entry.is_symlink() and entry.name in REPORT_FILES


def check_outputs(out: Path, replace_existing: bool) -> None:
    """Refuse, before any work, a ``--out`` or report folder that may not be written.

    A report folder from an earlier run is replaced (as it always was), but only if it holds
    nothing but the report's pictures.

    Raises:
        PublishError: see ``bundle.writer.check_destination``.
    """
    check_destination(out, replace_existing)
    check_destination(
        report_dir_for(out),
        True,
        allowed=is_report_file,
        what=f"a training report (only {', '.join(sorted(REPORT_FILES))})",
    )


def _missing_ancestors(path: Path) -> list[Path]:
    """The ancestors of ``path`` that do not exist yet, deepest first: what a run creates and must remove."""
    missing = []
    for ancestor in path.absolute().parents:
        if os.path.lexists(ancestor):
            break
        missing.append(ancestor)
    return missing


@contextlib.contextmanager
def _no_interrupt() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM during a cleanup or the final renames (both take milliseconds), so that
    a second signal cannot cut either short and leave half of it behind."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set in the main thread, and only it receives SIGINT
        return
    previous = {number: signal.signal(number, signal.SIG_IGN) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@dataclass
class RunOutput:
    """The work folder of one run, and what it published so far."""

    out: Path
    replace_existing: bool
    work: Path = field(init=False)
    created: list[Path] = field(init=False)

    def __post_init__(self) -> None:
        self.work = self.out.parent / f".{self.out.name}.train-{os.getpid()}"
        self.created = _missing_ancestors(self.out)

    @property
    def bundle(self) -> Path:
        """Where the bundle is written before it is published."""
        return self.work / "bundle"

    @property
    def report(self) -> Path:
        """Where the report is drawn before it is published."""
        return self.work / "report"

    def start(self) -> None:
        """Create the work folder (and the parents of ``out``)."""
        self.work.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir()

    def publish(self) -> tuple[Path, Path]:
        """Move the report, then the bundle, into place; returns (bundle, report folder).

        The destination is checked again first: it may have changed while the model trained. If the
        bundle cannot be moved, the report just moved is taken back out.

        Raises:
            PublishError: ``out`` may no longer be written.
        """
        report = report_dir_for(self.out)
        with _no_interrupt():
            check_destination(self.out, self.replace_existing)
            replace_dir(self.report, report)
            try:
                replace_dir(self.bundle, self.out)
            except BaseException:
                shutil.rmtree(report, ignore_errors=True)
                raise
            shutil.rmtree(self.work, ignore_errors=True)
        return self.out, report

    def discard(self) -> None:
        """Remove everything this run wrote: the work folder and the parent folders it created."""
        with _no_interrupt():
            shutil.rmtree(self.work, ignore_errors=True)
            for folder in self.created:
                with contextlib.suppress(OSError):  # not empty: something else was put there meanwhile
                    folder.rmdir()


@contextlib.contextmanager
def run_output(out: Path, replace_existing: bool) -> Iterator[RunOutput]:
    """A ``RunOutput`` whose work folder exists inside the block and is gone after it; on any
    failure (Ctrl-C included) everything the run wrote is removed."""
    output = RunOutput(out, replace_existing)
    output.start()
    try:
        yield output
    except BaseException:
        output.discard()
        raise
    output.discard()  # after publish: only the parents it created and left empty (none, normally)
