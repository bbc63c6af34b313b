"""Where decision-log records go: a JSON Lines file or an HTTP endpoint taking CloudEvents in binary
mode (KServe's payload logger's form). A sink is handed batches of (event, row) pairs and builds
each row's record itself, so the request path never formats JSON.

A sink's ``write`` returns how many records it delivered; the rest are lost and the caller counts
them. It never raises for a failed delivery and never retries: a sink that is down must not make
records pile up.
"""

import asyncio
import json
import logging
import math
import os
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import aiohttp
import numpy as np
from yarl import URL

from vae_serve.service.monitor.events import ScoredEvent

log = logging.getLogger(__name__)
FILE_BATCH_RECORDS = 512  # records per write(): one system call, one flush
HTTP_CONCURRENT_POSTS = 8  # records in flight at once to an HTTP sink
POST_TIMEOUT_S = 5.0  # one POST's whole life, connect to body read
CLOUDEVENT_TYPE = "ai.vae-serve.decision"

Row = tuple[ScoredEvent, int]  # one scored row: the event and the row's index in it


def rfc3339(time_s: float) -> str:
    """``time_s`` (seconds since the epoch) as an RFC 3339 UTC timestamp with microseconds."""
    return datetime.fromtimestamp(time_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _number(value) -> float | None:
    # JSON has no NaN or infinity; a non-finite number (an unbounded threshold, say) is written null.
    value = float(value)
    return value if math.isfinite(value) else None


def decision_record(event: ScoredEvent, row: int, with_inputs: bool) -> dict:
    """The decision-log record of one scored row (the fields of docs/monitoring.md).

    Args:
        event: the score call the row belongs to.
        row: the row's index in ``event``.
        with_inputs: add the row's input values as "input" (when the event carries them).

    Returns:
        A JSON-ready dict.
    """
    record = {
        "id": str(uuid.uuid4()),
        "request_id": event.request_id,
        "trace_id": event.trace_id,
        "model": event.model,
        "version": event.version,
        "score": event.score,
        "value": _number(event.scores[row]),
        "p_value": _number(event.p_values[row]),
        "percentile": _number(event.percentiles[row]),
        "threshold": _number(event.threshold),
        "false_positive_rate": _number(event.false_positive_rate),
        "decision": "anomaly" if bool(event.flagged[row]) else "normal",
        "seed": int(event.seed),
        "row": int(row),
        "time": rfc3339(event.time_s),
    }
    if with_inputs and event.inputs is not None:
        values = np.asarray(event.inputs[row], dtype=np.float64)
        record["input"] = values.tolist() if np.isfinite(values).all() else [_number(v) for v in values]
    return record


def _json(record: dict) -> str:
    return json.dumps(record, separators=(",", ":"), allow_nan=False)


class FileSink:
    """Appends records to a JSON Lines file from a thread of its own, so the event loop never waits on
    the disk. Each batch is one ``write()`` on a file opened with O_APPEND, unbuffered: a batch is
    on its way to the file when ``write`` returns, and processes sharing the file (``--processes``)
    interleave whole batches, not halves of lines."""

    batch_records = FILE_BATCH_RECORDS

    def __init__(self, fd: int, name: str, with_inputs: bool) -> None:
        """Args: fd: the file, opened for appending; name: its path, for log messages; with_inputs: as
        in ``decision_record``."""
        self._fd = fd
        self._name = name
        self._with_inputs = with_inputs
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vae-decision-log")
        self._failing = False

    def __repr__(self) -> str:
        return f"file {self._name}"

    async def open(self) -> None:
        """Nothing to do: the file was opened when the settings were checked."""

    async def write(self, rows: Sequence[Row]) -> int:
        """Append the rows' records; returns how many were written (all, or none on an OSError)."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._append, rows)
        except OSError as error:
            if not self._failing:
                log.warning("decision log: cannot write to %s: %s; records are dropped", self._name, error.strerror)
            self._failing = True
            return 0
        if self._failing:
            log.info("decision log: writing to %s again", self._name)
        self._failing = False
        return len(rows)

    def _append(self, rows: Sequence[Row]) -> None:
        data = "".join(_json(decision_record(event, row, self._with_inputs)) + "\n" for event, row in rows).encode()
        view = memoryview(data)
        while view:  # write() may take less than all of it (a pipe, a signal); the rest follows
            view = view[os.write(self._fd, view) :]

    async def close(self) -> None:
        """Close the file once the writes already handed to the thread are done."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, os.close, self._fd)
        self._executor.shutdown(wait=False)


def cloudevent_headers(record: dict) -> dict[str, str]:
    """The CloudEvents 1.0 binary-mode headers of ``record`` (the body is the record's JSON)."""
    return {
        "ce-specversion": "1.0",
        "ce-id": record["id"],
        "ce-source": f"vae-serve/{record['model']}",
        "ce-type": CLOUDEVENT_TYPE,
        "ce-time": record["time"],
        "content-type": "application/json",
    }


class HttpSink:
    """POSTs each record to a URL as a CloudEvent in binary mode, a few at a time. A POST that fails,
    is answered other than 2xx, or takes longer than ``post_timeout_s`` loses its record."""

    batch_records = HTTP_CONCURRENT_POSTS

    def __init__(self, url: str, with_inputs: bool, post_timeout_s: float = POST_TIMEOUT_S) -> None:
        self._url = url
        self._shown = str(URL(url).with_user(None))  # never log a password given in the URL
        self._with_inputs = with_inputs
        self._timeout = aiohttp.ClientTimeout(total=post_timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._failing = False

    def __repr__(self) -> str:
        return f"HTTP sink {self._shown}"

    async def open(self) -> None:
        """Open the client session (on the running event loop)."""
        # trust_env stays off: the sink is the address given, not one a proxy variable redirects.
        self._session = aiohttp.ClientSession(timeout=self._timeout)

    async def write(self, rows: Sequence[Row]) -> int:
        """POST the rows' records concurrently; returns how many the sink accepted."""
        records = [decision_record(event, row, self._with_inputs) for event, row in rows]
        delivered = await asyncio.gather(*(self._post(record) for record in records))
        return sum(delivered)

    async def _post(self, record: dict) -> bool:
        try:
            async with self._session.post(self._url, data=_json(record), headers=cloudevent_headers(record)) as reply:
                await reply.read()
                if 200 <= reply.status < 300:
                    self._recovered()
                    return True
                self._failed(f"answered HTTP {reply.status}")
        except TimeoutError:
            self._failed(f"no answer within {self._timeout.total:g} s")
        except aiohttp.ClientError as error:
            self._failed(f"{type(error).__name__}: {error}")
        return False

    def _failed(self, reason: str) -> None:
        if not self._failing:  # once per outage, not once per record
            log.warning("decision log: %s %s; records are dropped until it answers", self._shown, reason)
        self._failing = True

    def _recovered(self) -> None:
        if self._failing:
            log.info("decision log: %s answers again", self._shown)
        self._failing = False

    async def close(self) -> None:
        """Close the client session."""
        if self._session is not None:
            await self._session.close()
