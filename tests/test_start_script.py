"""scripts/start.sh run for real (issue 24): with ``--ui`` it prints the explorer's address, and that
address serves the page; without it there is neither the line nor the page. SIGTERM to the script's
process group drains the server, which exits 0 and leaves no process behind.

The runs set VAE_SKIP_INSTALL=1: the repository's .venv is the one pytest runs from, and a pip install
into it (seconds, each run) is the script's first-time set-up, not what is tested here.
"""

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
SCRIPT = REPOSITORY / "scripts" / "start.sh"
HTTP_LINE = "vae-serve http on "
EXPLORER_LINE = "vae-serve explorer on "
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 10.0
FREE_PORTS = ("--port", "0", "--http-port", "0", "--metrics-port", "0")
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads process groups from /proc (Linux)"),
    pytest.mark.skipif(
        not (REPOSITORY / ".venv" / "bin" / "vae-serve").exists(),
        reason="scripts/start.sh serves from the repository's .venv, which has no vae-serve (run scripts/test.sh)",
    ),
]


@dataclass
class Script:
    """A running ``bash scripts/start.sh``, the leader of its own process group."""

    process: subprocess.Popen
    lines: "queue.Queue[str | None]"
    stderr_path: Path
    printed: list[str] = field(default_factory=list)
    ended: bool = False

    def _next_line(self, deadline: float) -> str | None:
        remaining_s = deadline - time.monotonic()
        if remaining_s <= 0:
            raise AssertionError(f"start.sh printed nothing more in time; so far: {self.printed}\n{self.stderr()}")
        line = self.lines.get(timeout=remaining_s)
        if line is None:
            self.ended = True
        else:
            self.printed.append(line)
        return line

    def wait_for(self, prefix: str, timeout_s: float = START_TIMEOUT_S) -> str:
        """The rest of the first line on stdout that starts with ``prefix``."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self._next_line(deadline)
            except queue.Empty:
                continue
            if line is None:
                code = self.process.wait(timeout=STOP_TIMEOUT_S)
                raise AssertionError(f"start.sh exited {code} before {prefix!r}: {self.printed}\n{self.stderr()}")
            if line.startswith(prefix):
                return line.removeprefix(prefix)

    def stop(self) -> int:
        """SIGTERM to the whole group, as a terminal's Ctrl-C or a supervisor would; the exit code once
        stdout has ended (every process that held it is gone)."""
        os.killpg(self.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while not self.ended:
            try:
                self._next_line(deadline)
            except queue.Empty:
                continue
        return self.process.wait(timeout=STOP_TIMEOUT_S)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def _read_lines(stream, lines: "queue.Queue[str | None]") -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))
    lines.put(None)


def group_members(pgid: int) -> list[str]:
    """The processes of group ``pgid`` that are still running (zombies excluded), as "pid (name)"."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # exited while listed
            continue
        name_end = text.rindex(")")
        state, _parent, group = text[name_end + 2 :].split()[:3]
        if int(group) == pgid and state != "Z":
            members.append(text[: name_end + 1])
    return members


def wait_until_gone(pgid: int, timeout_s: float = STOP_TIMEOUT_S) -> list[str]:
    """The group's live members once none is left, or when ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    members = group_members(pgid)
    while members and time.monotonic() < deadline:
        time.sleep(0.1)
        members = group_members(pgid)
    return members


@contextmanager
def start_script(bundle: Path, tmp_path: Path, *args: str) -> Iterator[Script]:
    """``bash scripts/start.sh ARGS`` serving ``bundle``; its process group is killed on the way out."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("VAE_")}
    env.update(VAE_BUNDLE=str(bundle), VAE_SKIP_INSTALL="1")
    stderr_path = tmp_path / "start.stderr"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            ["bash", str(SCRIPT), *args],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env,
            cwd=tmp_path,  # the script finds the repository from its own path
            start_new_session=True,
        )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True).start()
    try:
        yield Script(process, lines, stderr_path)
    finally:
        with suppress(ProcessLookupError):  # the whole group has exited already
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT_S)
        process.stdout.close()


def get(url: str) -> tuple[int, str, str]:
    """Status, Content-Type and body of a GET; an HTTP error status is returned, not raised."""
    try:
        with OPENER.open(url, timeout=REQUEST_TIMEOUT_S) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers.get("Content-Type", ""), error.read().decode()


def wait_ready(http_url: str, timeout_s: float = START_TIMEOUT_S) -> None:
    """Until ``/v2/health/ready`` answers 200 (the model is loaded after the addresses are printed)."""
    deadline = time.monotonic() + timeout_s
    while (status := get(http_url + "/v2/health/ready")[0]) != 200:
        assert time.monotonic() < deadline, f"/v2/health/ready still answers {status}"
        time.sleep(0.1)


def assert_drained(script: Script) -> None:
    code = script.stop()
    assert code == 0, f"start.sh exited {code} on SIGTERM:\n{script.stderr()}"
    log = script.stderr()
    assert "draining" in log and "Traceback" not in log, log  # the server's own drain, not a kill
    assert wait_until_gone(script.process.pid) == []


def test_start_sh_prints_the_explorer_address_that_serves_the_page(bundle_copy, tmp_path):
    with start_script(bundle_copy, tmp_path, "--ui", *FREE_PORTS) as script:
        explorer_url = script.wait_for(EXPLORER_LINE)
        http_url = next(line for line in script.printed if line.startswith(HTTP_LINE)).removeprefix(HTTP_LINE)
        assert explorer_url == f"{http_url}/ui/"
        assert explorer_url.startswith("http://127.0.0.1:") and not explorer_url.startswith("http://127.0.0.1:0/")
        wait_ready(http_url)
        status, content_type, page = get(explorer_url)
        assert status == 200 and content_type.startswith("text/html")
        assert "<title>vae-serve model explorer</title>" in page
        assert_drained(script)
    assert [line for line in script.printed if line.startswith("vae-serve explorer")] == [EXPLORER_LINE + explorer_url]


def test_start_sh_without_ui_has_no_explorer(bundle_copy, tmp_path):
    with start_script(bundle_copy, tmp_path, *FREE_PORTS) as script:
        http_url = script.wait_for(HTTP_LINE)
        wait_ready(http_url)
        assert get(http_url + "/ui/")[0] == 404
        assert_drained(script)
    assert not [line for line in script.printed if line.startswith("vae-serve explorer")], script.printed


@pytest.mark.parametrize(
    ("served", "explorer", "bound"),
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000", None),
        ("http://localhost:8000", "http://localhost:8000", None),
        ("http://0.0.0.0:8000", "http://127.0.0.1:8000", "0.0.0.0"),
        ("https://:::8443", "https://[::1]:8443", "::"),  # what the server prints for --host ::
        ("http://[::]:8000", "http://[::1]:8000", "::"),
        ("http://::1:8000", "http://[::1]:8000", None),
    ],
)
def test_explorer_address_is_one_a_browser_opens(served, explorer, bound):
    """The address printed for a server line; a wildcard bind gets the loopback address and a note."""
    printed = subprocess.run(
        ["bash", "-c", 'source "$0" && explorer_lines "$1"', str(SCRIPT), HTTP_LINE + served],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.splitlines()
    assert printed[0] == f"{EXPLORER_LINE}{explorer}/ui/"
    if bound is None:
        assert len(printed) == 1, printed
    else:
        assert len(printed) == 2 and f"every interface (--host {bound})" in printed[1], printed
