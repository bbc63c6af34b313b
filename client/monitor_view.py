"""`vae-client monitor`: the server's score monitoring (GetMonitoring) as a table or plain JSON, and
the --watch loop that shows it again every few seconds until Ctrl-C."""

import math
import sys
import time
from collections.abc import Callable

from google.protobuf.message import Message

from vae_serve.api.v1 import vae_pb2
from vae_serve.client.errors import VaeClientError
from vae_serve.client.names import score_name

ALARM = "ALARM"
# ANSI: cursor home, then erase the screen; a refresh redraws the table in place on a terminal.
CLEAR_SCREEN = "\x1b[H\x1b[2J"
_LEFT_COLUMNS = 2  # model:version and score read left-aligned; the numbers right-aligned


def monitoring_json(reply: vae_pb2.MonitoringResponse) -> dict:
    """The reply as plain JSON values: 64-bit counts as numbers (json_format writes strings), scores by
    name, and a drift number the server has not computed yet as null."""
    return _plain(reply)


def _plain(message: Message) -> dict:
    plain = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.is_repeated:
            plain[field.name] = [_plain(item) if field.message_type else item for item in value]
        elif field.message_type:
            plain[field.name] = _plain(value)
        elif field.has_presence and not message.HasField(field.name):
            plain[field.name] = None
        else:
            plain[field.name] = score_name(value) if field.enum_type else value
    return plain


def monitoring_lines(reply: vae_pb2.MonitoringResponse) -> list[str]:
    """A heading, one line per model version and score, and under each one line per promised rate."""
    if not reply.enabled:
        return ["score monitoring is off on this server (it was started with --no-monitor)"]
    lines = [
        f"score monitoring: alpha {reply.alpha:g}; a drift test every {reply.step_rows} new rows once the "
        "window holds 100; alerts: deploy/base/prometheus/rules.yml"
    ]
    if not reply.scores:
        return [*lines, "no rows scored yet"]
    rows = [("model:version", "score", "calibration n", "window", "rows seen", "tests", "drift D", "drift p", "")]
    rows += [_drift_cells(entry) for entry in reply.scores]
    table = _aligned(rows)
    lines.append(table[0])
    for entry, line in zip(reply.scores, table[1:], strict=True):
        lines.append(line)
        lines += [_rate_line(rate) for rate in entry.flag_rates]
    return lines


def _drift_cells(entry: vae_pb2.ScoreMonitor) -> tuple[str, ...]:
    tested = entry.HasField("drift_p_value")
    return (
        f"{entry.model.name}:{entry.model.version}",
        score_name(entry.score),
        str(entry.calibration_rows),
        f"{entry.window_rows}/{entry.window_capacity_rows}",
        str(entry.rows_seen),
        str(entry.evaluations),
        f"{entry.drift_statistic:.4f}" if entry.HasField("drift_statistic") else "-",
        f"{entry.drift_p_value:.4g}" if tested else "-",
        ALARM if entry.drift_alarm else "",
    )


def _rate_line(rate: vae_pb2.FlagRateMonitor) -> str:
    """One promised rate: its rows, flags, the observed rate beside the promise, the test's p-value
    (or, below the minimum count, from how many rows the test runs)."""
    minimum = minimum_flag_test_rows(rate.false_positive_rate)
    tested = f"p {rate.p_value:.4g}" if rate.rows >= minimum else f"tested from {minimum} rows"
    mark = f"  {ALARM}" if rate.alarm else ""
    return (
        f"    flag rate at {rate.false_positive_rate:g}: {rate.rows} rows, {rate.flagged} flagged, "
        f"observed {rate.observed_rate:.4g} vs promised {rate.false_positive_rate:g}, {tested}{mark}"
    )


def minimum_flag_test_rows(rate: float) -> int:
    """The flag-rate test's minimum count, max(100, 10 / rate), as vae.proto's FlagRateMonitor states it."""
    return max(100, math.ceil(10.0 / rate)) if rate > 0 else 100


def _aligned(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(width) if column < _LEFT_COLUMNS else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def watch(
    show: Callable[[], None],
    interval_s: float,
    on_error: Callable[[VaeClientError], None],
    clear: bool,
    spaced: bool = True,
) -> int:
    """Call ``show`` now and every ``interval_s`` seconds until Ctrl-C; returns the exit status, 0.

    Args:
        show: Asks the server and prints (one refresh).
        interval_s: Seconds between refreshes.
        on_error: Told of a refresh that failed after the first; the watch goes on (a server that
            restarts comes back into view).
        clear: Redraw in place (a terminal); otherwise each refresh follows the last.
        spaced: Without ``clear``, a blank line between refreshes (not between JSON Lines).

    Raises:
        VaeClientError: The first refresh failed (the server is unreachable or refused the request).
    """
    try:
        _refresh(show, clear, blank_line=False)
        while True:
            time.sleep(interval_s)
            try:
                _refresh(show, clear, blank_line=spaced)
            except VaeClientError as error:
                on_error(error)
    except KeyboardInterrupt:
        return 0


def _refresh(show: Callable[[], None], clear: bool, blank_line: bool) -> None:
    if clear:
        print(CLEAR_SCREEN, end="")
    elif blank_line:
        print()
    show()
    sys.stdout.flush()  # a pipe's reader sees each refresh as it comes
