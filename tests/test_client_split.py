"""Inputs beyond the server's per-request limits, split by the client; retries of overloaded and
unavailable calls. Real vae-serve processes throughout (docs/client.md)."""

import fcntl
import itertools
import json
import os
import pty
import struct
import subprocess
import termios
import threading
import time

import numpy as np
import pytest

from tests.server_process import start_server
from tests.test_client import VAE_CLIENT, run_client
from tests.test_server_lifecycle import samples, scrape
from vae_serve.client import Piece, RetryPolicy, VaeClient, VaeClientError, piece_seed
from vae_serve.client.names import score_name
from vae_serve.core.scores import DEFAULT_SCORE, SCORES
from vae_serve.export.sources import load_source

SMALL_LIMITS = ("--max-rows", "100", "--max-row-samples", "1000")


@pytest.fixture(scope="module")
def digits_x() -> np.ndarray:
    """All 1,797 digits, raw grey levels [1797, 64]: more rows than the default limit of 1,024."""
    x = load_source("digits").train.x
    assert x.shape == (1797, 64)
    return x


@pytest.fixture(scope="module")
def small_server(digits_bundle):
    """The digits bundle behind limits small enough to split small inputs."""
    server = start_server("--bundle", str(digits_bundle), *SMALL_LIMITS)
    yield server
    assert server.stop() == 0, server.log()


def address(server) -> str:
    return f"127.0.0.1:{server.port}"


def counts(server) -> dict[tuple[str, str], float]:
    """vae_requests_total by (method, code), from a real scrape."""
    return {
        (dict(labels)["method"], dict(labels)["code"]): value
        for (name, labels), value in samples(scrape(server.metrics_url)).items()
        if name == "vae_requests_total"
    }


def delta(before: dict, after: dict, method: str, code: str = "OK") -> float:
    return after.get((method, code), 0.0) - before.get((method, code), 0.0)


def assert_tiles(pieces: tuple[Piece, ...], rows: int, most: int) -> None:
    """Consecutive pieces from row 0 to ``rows``, none above ``most`` rows."""
    assert pieces[0].start == 0 and pieces[-1].stop == rows
    assert all(a.stop == b.start for a, b in itertools.pairwise(pieces))
    assert all(0 < piece.stop - piece.start <= most for piece in pieces)


def test_1797_rows_score_and_elbo_as_pieces_equal_to_their_own_requests(server, digits_x):
    with VaeClient(address(server)) as client:
        scored = client.score(digits_x, "negative_elbo", false_positive_rate=0.05, seed=11)
        bounds = client.elbo(digits_x, k=5, seed=2)
        assert scored.pieces == (Piece(0, 1024, 11), Piece(1024, 1797, piece_seed(11, 1)))
        assert bounds.pieces == (Piece(0, 1024, 2), Piece(1024, 1797, piece_seed(2, 1)))
        assert scored.seed == 11 and bounds.seed == 2 and bounds.k == 5
        assert len(scored.scores) == len(scored.is_anomaly) == len(bounds.iwae) == 1797
        for piece in scored.pieces:
            rows = slice(piece.start, piece.stop)
            alone = client.score(digits_x[rows], "negative_elbo", false_positive_rate=0.05, seed=piece.seed)
            for field in ("scores", "percentile", "p_value", "is_anomaly"):
                np.testing.assert_array_equal(getattr(scored, field)[rows], getattr(alone, field))
            assert alone.threshold == scored.threshold
        for piece in bounds.pieces:
            rows = slice(piece.start, piece.stop)
            alone = client.elbo(digits_x[rows], k=5, seed=piece.seed)
            for field in ("elbo", "reconstruction", "kl", "iwae", "iwae_standard_error", "iwae_bits_per_dim"):
                np.testing.assert_array_equal(getattr(bounds, field)[rows], getattr(alone, field))


def test_cli_scores_and_bounds_a_1797_row_file(server, digits_x, tmp_path):
    path = tmp_path / "digits.npy"
    np.save(path, digits_x.reshape(-1, 8, 8))  # the natural shape, as a user would keep it
    score = run_client(server, "score", str(path), "--score", "negative_elbo", "--seed", "4", "--json")
    assert score.returncode == 0, score.stderr
    assert score.stderr == ""  # not a terminal: no progress bar
    scored = json.loads(score.stdout)
    assert len(scored["scores"]) == 1797 and scored["seed"] == 4
    assert scored["pieces"] == [
        {"start": 0, "stop": 1024, "seed": 4},
        {"start": 1024, "stop": 1797, "seed": piece_seed(4, 1)},
    ]
    elbo = run_client(server, "elbo", str(path), "--k", "3", "--seed", "4", "--json")
    assert elbo.returncode == 0, elbo.stderr
    with VaeClient(address(server)) as client:
        np.testing.assert_array_equal(scored["scores"], client.score(digits_x, "negative_elbo", seed=4).scores)
        np.testing.assert_array_equal(json.loads(elbo.stdout)["iwae"], client.elbo(digits_x, k=3, seed=4).iwae)
    human = run_client(server, "score", str(path))
    assert human.returncode == 0 and "sent as 2 requests" in human.stdout.splitlines()[0], human.stderr
    assert human.stdout.splitlines()[-1].endswith("of 1797 flagged")


def test_pieces_fit_every_limit_the_server_reports(small_server, server, digits_x):
    x = digits_x[:450]
    with VaeClient(address(small_server)) as client, VaeClient(address(server)) as whole:
        info = client.info()
        assert (info.max_rows, info.max_row_samples) == (100, 1000)
        before = counts(small_server)
        bounds = client.elbo(x, k=20, seed=1)  # rows x k <= 1000: 50 rows a request
        assert_tiles(bounds.pieces, 450, 50)
        assert len(bounds.pieces) == 9
        scored = client.score(x, "negative_iwae", seed=1)  # 100 draws a row: 10 rows a request
        assert_tiles(scored.pieces, 450, 10)
        assert len(scored.pieces) == 45
        errors = client.score(x, "reconstruction_error", feature_errors=True)  # max_rows: 100
        assert_tiles(errors.pieces, 450, 100)
        assert len(errors.pieces) == 5
        encoded = client.encode(x, num_samples=4, seed=1)
        assert_tiles(encoded.pieces, 450, 100)
        assert encoded.z_samples.shape == (4, 450, 8)
        decoded = client.decode(encoded.z_mean, num_samples=30, seed=1)  # 1000 // 30 = 33 rows
        assert_tiles(decoded.pieces, 450, 33)
        assert decoded.x_samples.shape == (30, 450, 64)
        path = client.interpolate(x[:30], x[30:60], steps=8, num_samples=5, seed=1)  # 8 x 5 draws a path
        assert_tiles(path.pieces, 30, 25)
        assert path.x_samples.shape == (5, 30, 8, 64)
        after = counts(small_server)
        assert delta(before, after, "Elbo") == 9
        assert delta(before, after, "ScoreAnomaly") == 45 + 5
        assert delta(before, after, "Encode") == 5 and delta(before, after, "Interpolate") == 2
        assert not any(code != "OK" and delta(before, after, method, code) for method, code in after)
        assert delta(before, after, "GetModelInfo") == 0  # asked once, by info() above
        # What draws nothing is the same as one request of all rows would give.
        assert len(whole.elbo(x, k=20).pieces) == 1
        np.testing.assert_allclose(bounds.kl, whole.elbo(x, k=20).kl, rtol=1e-5)
        np.testing.assert_allclose(errors.scores, whole.score(x, "reconstruction_error").scores, rtol=1e-5)
        np.testing.assert_allclose(errors.feature_errors.sum(axis=1), errors.scores, rtol=1e-5)
        single = whole.encode(x)
        np.testing.assert_allclose(encoded.z_mean, single.z_mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(encoded.z_logvar, single.z_logvar, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(decoded.x_mean, whole.decode(encoded.z_mean).x_mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(path.x_mean, whole.interpolate(x[:30], x[30:60], steps=8).x_mean, atol=1e-5)


def test_the_seed_rule(server, digits_x):
    # Piece 0 keeps the seed; piece i the i-th child of SeedSequence(seed).spawn, cut to 53 bits.
    for seed in (0, 7, 2**64 - 1):
        assert piece_seed(seed, 0) == seed
        children = np.random.SeedSequence(seed).spawn(4)
        for index in (1, 2, 3):
            assert piece_seed(seed, index) == int(children[index].generate_state(1, np.uint64)[0]) >> 11
            assert 0 <= piece_seed(seed, index) < 2**53
    assert piece_seed(7, 1) != piece_seed(8, 0) and piece_seed(7, 2) != piece_seed(8, 1)  # unlike seed + i
    x = digits_x[:1000]
    with VaeClient(address(server), max_rows_per_request=400) as split, VaeClient(address(server)) as whole:
        first = split.elbo(x, k=4, seed=9)
        assert [(p.start, p.stop) for p in first.pieces] == [(0, 400), (400, 800), (800, 1000)]
        assert [p.seed for p in first.pieces] == [9, piece_seed(9, 1), piece_seed(9, 2)]
        again = split.elbo(x, k=4, seed=9)
        np.testing.assert_array_equal(first.iwae, again.iwae)  # reproducible
        # The first piece is the request an unsplit call of its rows makes.
        np.testing.assert_array_equal(first.iwae[:400], whole.elbo(x[:400], k=4, seed=9).iwae)
        # The later pieces draw other noise than one request of all 1,000 rows: the server draws
        # eps [k, n, L] for the whole request. What draws nothing is the same.
        unsplit = whole.elbo(x, k=4, seed=9)
        assert len(unsplit.pieces) == 1
        np.testing.assert_allclose(first.kl, unsplit.kl, rtol=1e-5)
        assert not np.allclose(first.reconstruction[400:], unsplit.reconstruction[400:])
        # Without a seed the client picks one for a split call; the result's seed replays it.
        unseeded = split.elbo(x, k=4)
        assert 0 <= unseeded.seed < 2**53 and unseeded.pieces[0].seed == unseeded.seed
        np.testing.assert_array_equal(split.elbo(x, k=4, seed=unseeded.seed).iwae, unseeded.iwae)
        # A call that fits one request reports the seed the server picked, as before.
        small = whole.elbo(x[:5], k=4)
        assert small.pieces == (Piece(0, 5, small.seed),)


def test_score_costs_and_the_default_score_come_from_the_server(small_server, digits_x):
    # The client keeps no copy of each score's draws: GetModelInfo's ScoreFacts say them, and the
    # pieces of every score fit max_row_samples (1000) by those draws, a score without draws by one.
    x = digits_x[:120]
    with VaeClient(address(small_server)) as client:
        info = client.info()
        draws = {score_name(facts.score): facts.draws for facts in info.scores}
        assert draws == {name: score.num_samples for name, score in SCORES.items()}
        assert score_name(info.default_score) == DEFAULT_SCORE
        for name, per_row in draws.items():
            most = min(100, 1000 // max(per_row, 1))  # max_rows 100
            scored = client.score(x, name, seed=3)
            assert scored.score == name and len(scored.scores) == 120
            assert_tiles(scored.pieces, 120, most)
            assert max(piece.stop - piece.start for piece in scored.pieces) == most
        default = client.score(x, seed=3)  # no score named: the server's default, and its cost
        assert default.score == DEFAULT_SCORE
        assert default.pieces == client.score(x, DEFAULT_SCORE, seed=3).pieces
        np.testing.assert_array_equal(default.scores, client.score(x, DEFAULT_SCORE, seed=3).scores)


def run_on_terminal(server, *args: str) -> tuple[int, str]:
    """vae-client with stderr on a pseudo-terminal of 100 columns: (exit status, what stderr showed)."""
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    shown: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the terminal's other side closed
                return
            if not chunk:
                return
            shown.append(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        done = subprocess.run(
            [VAE_CLIENT, "--target", address(server), *args], stdout=subprocess.PIPE, stderr=secondary, timeout=120
        )
    finally:
        os.close(secondary)
        reader.join(timeout=10)
        os.close(primary)
    return done.returncode, b"".join(shown).decode(errors="replace")


def test_progress_bar_only_on_a_terminal_for_several_requests(small_server, digits_x, tmp_path):
    np.save(tmp_path / "many.npy", digits_x[:300])
    np.save(tmp_path / "few.npy", digits_x[:50])
    status, shown = run_on_terminal(small_server, "score", str(tmp_path / "many.npy"))
    assert status == 0 and "score:" in shown and "/300" in shown and "row/s" in shown, shown
    status, shown = run_on_terminal(small_server, "score", str(tmp_path / "many.npy"), "--no-progress")
    assert status == 0 and shown == ""
    status, shown = run_on_terminal(small_server, "score", str(tmp_path / "few.npy"))  # one request
    assert status == 0 and shown == ""
    piped = run_client(small_server, "score", str(tmp_path / "many.npy"))
    assert piped.returncode == 0 and piped.stderr == ""


@pytest.fixture
def overload_server(digits_bundle):
    """Room for one Elbo call of 10 rows x k=10 at a time, which waits 0.2 s for its batch: a
    second one sent meanwhile is refused RESOURCE_EXHAUSTED (with 100 ms pushback), deterministically.
    0.2 s leaves the same margin on both sides on a loaded machine: for the second call to arrive
    within the hold, and for four retries' pushback (0.4 s) to outlast it."""
    server = start_server(
        "--bundle", str(digits_bundle), "--max-queue-rows", "100", "--batch-wait", "fixed",
        "--max-batch-wait", "0.2", "--inline-max-rows", "0",
    )  # fmt: skip
    yield server
    assert server.stop() == 0, server.log()


def while_one_call_holds_the_queue(server, second: VaeClient) -> tuple[float, object]:
    """Send one full-cost Elbo call, and ``second``'s identical one once the first is queued:
    (seconds the second took, its result or VaeClientError)."""
    x = np.full((10, 64), 8.0, np.float32)
    with VaeClient(address(server)) as holder:
        holder.info()  # the limits are cached: each client sends just its Elbo call
        second.info()
        first: dict = {}
        thread = threading.Thread(target=lambda: first.update(result=holder.elbo(x, k=10, seed=1)))
        thread.start()
        deadline = time.monotonic() + 30
        while not any(
            name == "vae_queue_rows" and dict(labels)["kind"] == "elbo" and value > 0
            for (name, labels), value in samples(scrape(server.metrics_url)).items()
        ):
            assert time.monotonic() < deadline, "the first call never queued"
            time.sleep(0.005)
        started = time.monotonic()
        try:
            outcome = second.elbo(x, k=10, seed=2)
        except VaeClientError as error:
            outcome = error
        took = time.monotonic() - started
        thread.join()
    assert len(first["result"].elbo) == 10
    return took, outcome


def test_an_overloaded_call_is_retried_after_the_pushback_and_succeeds(overload_server):
    before = counts(overload_server)
    with VaeClient(address(overload_server), retry=None) as no_retry:
        _, refused = while_one_call_holds_the_queue(overload_server, no_retry)
    assert isinstance(refused, VaeClientError) and refused.code_name == "RESOURCE_EXHAUSTED"
    middle = counts(overload_server)
    assert delta(before, middle, "Elbo", "RESOURCE_EXHAUSTED") == 1
    # Tiny backoffs: only the server's 100 ms pushback can make the retries wait out the 0.2 s hold.
    policy = RetryPolicy(max_attempts=5, initial_backoff_s=0.001, max_backoff_s=0.002)
    with VaeClient(address(overload_server), retry=policy) as retrying:
        took, result = while_one_call_holds_the_queue(overload_server, retrying)
    after = counts(overload_server)
    assert not isinstance(result, VaeClientError), result
    assert len(result.elbo) == 10 and result.seed == 2
    refusals = delta(middle, after, "Elbo", "RESOURCE_EXHAUSTED")
    assert 1 <= refusals <= 4 and delta(middle, after, "Elbo") == 2  # the holder's call and the retried one
    assert took >= 0.1 * refusals  # each retry waited out the pushback


def test_retry_policy_bounds():
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=6)  # gRPC treats more than 5 as 5: refuse rather than mislead
    with pytest.raises(ValueError, match="backoff"):
        RetryPolicy(initial_backoff_s=2.0, max_backoff_s=1.0)
    config = json.loads(RetryPolicy().service_config())["methodConfig"][0]
    assert config["name"] == [{"service": "vae.v1.VaeService"}]
    assert config["retryPolicy"]["retryableStatusCodes"] == ["RESOURCE_EXHAUSTED", "UNAVAILABLE"]
    with pytest.raises(ValueError, match="max_rows_per_request"):
        VaeClient("127.0.0.1:1", max_rows_per_request=0)


def test_pieces_fit_the_message_sizes_the_server_reports(digits_bundle, digits_x):
    """A server with a small --max-receive-message-bytes says so in GetModelInfo, and the client sends
    requests under it: no RESOURCE_EXHAUSTED (which no retry could cure) at all."""
    limit_bytes = 128 * 1024
    small = start_server("--bundle", str(digits_bundle), "--max-receive-message-bytes", str(limit_bytes))
    try:
        with VaeClient(address(small)) as client:
            info = client.info()
            assert (info.max_request_bytes, info.max_reply_bytes) == (limit_bytes, 64 * 1024 * 1024)
            before = counts(small)
            scored = client.score(digits_x, "reconstruction_error")
        after = counts(small)
        per_piece = max(piece.stop - piece.start for piece in scored.pieces)
        assert per_piece * 64 * 4 < limit_bytes and len(scored.pieces) == -(-1797 // per_piece)
        assert_tiles(scored.pieces, 1797, per_piece)
        assert delta(before, after, "ScoreAnomaly") == len(scored.pieces)
        assert not any(code != "OK" and delta(before, after, method, code) for method, code in after)
    finally:
        assert small.stop() == 0
