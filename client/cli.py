"""vae-client: query a vae-serve server from the shell.

Exit status: 0 on success; 1 when the server answers with an error (or health is not SERVING);
2 for bad local input (arguments, files). Errors go to stderr as one line, never a traceback.

Inputs larger than the server's per-request limits are sent as several requests (a progress bar on
a terminal's stderr), and overloaded or unavailable servers are retried: see VaeClient.
"""

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable

import numpy as np

from vae_serve.api.v1 import vae_pb2
from vae_serve.client import monitor_view
from vae_serve.client.client import VaeClient, VaeClientError
from vae_serve.client.files import InputError, load_rows, save, write_png_grid, write_png_heatmaps
from vae_serve.client.manifold import PRINCIPAL, manifold_map
from vae_serve.client.names import INTERPOLATION_PATHS, SCORE_TYPES, score_name
from vae_serve.client.results import DecodeResult, EncodeResult, Piece
from vae_serve.core.defaults import DEFAULT_PORT
from vae_serve.core.manifold import MAX_GRID

PROG = "vae-client"
DEFAULT_TARGET = f"127.0.0.1:{DEFAULT_PORT}"
# Human output prints at most this many per-row lines for encode/decode; --out and --json carry all.
_MAX_PRINTED_ROWS = 20
_MAX_HEATMAP_ROWS = 16  # rows drawn by score --png
_SEED_HELP = "random seed (default: the server picks one and reports it)"


def _checked(convert: Callable[[str], float], accept: Callable[[float], bool], what: str) -> Callable[[str], float]:
    # An argparse type that rejects bad values at parse time, with the usage message and exit status 2.
    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


_positive_int = _checked(int, lambda value: value >= 1, "an integer >= 1")
_non_negative_int = _checked(int, lambda value: value >= 0, "an integer >= 0")
_seed = _checked(int, lambda value: 0 <= value < 2**64, "a seed in [0, 2^64)")
_positive_float = _checked(float, lambda value: math.isfinite(value) and value > 0, "a finite number > 0")
_finite_float = _checked(float, math.isfinite, "a finite number")
_open_fraction = _checked(float, lambda value: 0 < value < 1, "a number in (0, 1)")
_grid = _checked(int, lambda value: 1 <= value <= MAX_GRID, f"an integer in [1, {MAX_GRID}]")


def _dims(text: str) -> tuple[int, int]:
    """--dims I,J: two different latent dimensions (their range is the model's, checked once it is known)."""
    parts = text.split(",")
    if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not two latent dimensions I,J (integers >= 0, e.g. 0,1)")
    first, second = (int(part) for part in parts)
    if first == second:
        raise argparse.ArgumentTypeError(f"{text!r} names dimension {first} twice; a plane needs two different ones")
    return first, second


def _add_global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    # Added to the top parser and, with defaults suppressed, to every subcommand, so that both
    # `vae-client --json info` and `vae-client info --json` work without one overriding the other.
    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    target_default = os.environ.get("VAE_TARGET", DEFAULT_TARGET)
    parser.add_argument(
        "--target",
        metavar="HOST:PORT",
        default=default(target_default),
        help=f"server address (default: $VAE_TARGET or {DEFAULT_TARGET})",
    )
    parser.add_argument(
        "--timeout",
        dest="timeout_s",
        type=_positive_float,
        metavar="SECONDS",
        default=default(30.0),
        help="deadline of each request, its retries included, or of a whole stream (default: 30)",
    )
    parser.add_argument("--tls", action="store_true", default=default(False), help="use TLS with the system's CA roots")
    parser.add_argument("--tls-ca", metavar="CA.pem", default=default(None), help="use TLS, trusting these PEM CAs")
    parser.add_argument("--tls-cert", metavar="CERT.pem", default=default(None), help="client certificate (mutual TLS)")
    parser.add_argument("--tls-key", metavar="KEY.pem", default=default(None), help="key of --tls-cert")
    parser.add_argument(
        "--token",
        default=default(os.environ.get("VAE_TOKEN")),
        help="bearer token for servers with authentication (default: $VAE_TOKEN; prefer the variable)",
    )
    parser.add_argument("--json", action="store_true", default=default(False), help="print one JSON object")
    parser.add_argument(
        "--no-progress",
        action="store_true",
        default=default(False),
        help="no progress bar for inputs sent as several requests (shown only on a terminal)",
    )
    parser.add_argument("--model", default=default(None), help="model name (default: the server's default)")
    parser.add_argument(
        "--version",
        dest="model_version",
        metavar="VERSION",
        default=default(None),
        help="model version (default: the latest)",
    )


def _security(args: argparse.Namespace) -> dict:
    """VaeClient's TLS and token arguments from the flags (files read here, errors as InputError)."""

    def read(path: str | None) -> bytes | None:
        if path is None:
            return None
        try:
            with open(path, "rb") as file:
                return file.read()
        except OSError as err:
            raise InputError(f"cannot read {path}: {err.strerror or err}") from None

    if (args.tls_cert is None) != (args.tls_key is None):
        raise InputError("--tls-cert and --tls-key go together")
    return {
        "tls": args.tls,
        "tls_ca": read(args.tls_ca),
        "tls_cert": read(args.tls_cert),
        "tls_key": read(args.tls_key),
        "token": args.token,
    }


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for ``vae-client``; each subcommand sets ``handler``."""
    parser = argparse.ArgumentParser(prog=PROG, description="Query a vae-serve model server.")
    _add_global_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, suppress=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[..., int], help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    command("health", _cmd_health, "server health (exit status 0 only when SERVING)")
    command("info", _cmd_info, "what the model is, how good it is, the server's limits")
    encode = command("encode", _cmd_encode, "posterior q(z|x) of each row of INPUT.npy")
    decode = command("decode", _cmd_decode, "likelihood p(x|z) of each latent row of INPUT.npy")
    for sub, drawn in ((encode, "z"), (decode, "x")):
        sub.add_argument("input", metavar="INPUT.npy")
        sub.add_argument("--samples", type=_non_negative_int, default=0, help=f"also draw N {drawn} per row")
        sub.add_argument("--seed", type=_seed, help=_SEED_HELP)
        sub.add_argument("--out", metavar="OUT.npz", help="save every returned array (and the seed) to OUT.npz")

    sample = command("sample", _cmd_sample, "draw samples from the model (prior -> decoder)")
    sample.add_argument("--n", type=_positive_int, required=True, help="number of samples")
    sample.add_argument("--seed", type=_seed, help=_SEED_HELP)
    sample.add_argument("--temperature", type=_positive_float, help="prior std multiplier (default: 1)")
    sample.add_argument("--stream", action="store_true", help="use the streaming rpc (allows a larger --n)")
    sample.add_argument("--chunk-size", type=_non_negative_int, default=0, help="rows per streamed message")
    sample_out = sample.add_mutually_exclusive_group()
    sample_out.add_argument("--out", metavar="FILE.npy", help="save x_mean [n, D] to FILE.npy")
    sample_out.add_argument("--png", metavar="GRID.png", help="save x_mean as a grid of images (2-D inputs only)")

    elbo = command("elbo", _cmd_elbo, "ELBO, and with --k > 1 the IWAE bound, of each row of INPUT.npy")
    elbo.add_argument("input", metavar="INPUT.npy")
    elbo.add_argument("--k", type=_positive_int, default=1, help="importance samples per example (default: 1)")
    elbo.add_argument("--seed", type=_seed, help=_SEED_HELP)

    score = command("score", _cmd_score, "anomaly score of each row of INPUT.npy (higher: more anomalous)")
    score.add_argument("input", metavar="INPUT.npy")
    score.add_argument(
        "--score", choices=list(SCORE_TYPES), help="(default: the model's default score, shown by `info`)"
    )
    threshold = score.add_mutually_exclusive_group()
    threshold.add_argument("--fpr", type=_open_fraction, help="flag at this false-positive rate on calibration data")
    threshold.add_argument("--threshold", type=_finite_float, help="flag scores above this value")
    score.add_argument("--seed", type=_seed, help=_SEED_HELP)
    score.add_argument(
        "--png", metavar="HEAT.png", help="save each input beside its per-pixel reconstruction-error heat map (images)"
    )

    interpolate = command(
        "interpolate", _cmd_interpolate, "decode points on the path from each row of START.npy to that of END.npy"
    )
    interpolate.add_argument("start", metavar="START.npy")
    interpolate.add_argument("end", metavar="END.npy")
    interpolate.add_argument(
        "--steps", type=_positive_int, default=8, help="points per path, ends included (default 8)"
    )
    interpolate.add_argument("--path", choices=list(INTERPOLATION_PATHS), default="linear", help="(default: linear)")
    interpolate.add_argument("--latent", action="store_true", help="the rows are latent codes [n, L], not inputs")
    interpolate.add_argument("--samples", type=_non_negative_int, default=0, help="also draw N x per point")
    interpolate.add_argument("--seed", type=_seed, help=_SEED_HELP)
    interpolate_out = interpolate.add_mutually_exclusive_group()
    interpolate_out.add_argument("--out", metavar="OUT.npz", help="save t, z, x_mean (and draws, the seed) to OUT.npz")
    interpolate_out.add_argument("--png", metavar="ROW.png", help="save x_mean as one row of images per path")

    manifold = command(
        "manifold", _cmd_manifold, "decode E[x|z] on a grid over a 2-D latent plane at the prior's quantiles"
    )
    manifold.add_argument("--grid", type=_grid, default=15, help="tiles per side (default 15)")
    plane = manifold.add_mutually_exclusive_group()
    plane.add_argument("--dims", type=_dims, metavar="I,J", help="the plane of latent dimensions I and J (others 0)")
    plane.add_argument(
        "--plane",
        choices=[PRINCIPAL],
        help="the top two principal directions of the posterior means recorded at export "
        "(the default; dims 0,1 for a bundle without the record)",
    )
    manifold.add_argument("--temperature", type=_positive_float, default=1.0, help="multiplies the quantiles")
    manifold_out = manifold.add_mutually_exclusive_group()
    manifold_out.add_argument("--out", metavar="OUT.npz", help="save z, x_mean and x_raw of every tile to OUT.npz")
    manifold_out.add_argument("--png", metavar="MAP.png", help="save x_mean as a GRID x GRID mosaic (images only)")

    monitor = command(
        "monitor", _cmd_monitor, "score monitoring: drift of each model version's scores, flag rates against promises"
    )
    monitor.add_argument(
        "--watch", type=_positive_float, metavar="SECONDS", help="show it again every SECONDS until Ctrl-C"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``vae-client`` with ``argv`` (default: sys.argv[1:]); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "sample" and args.chunk_size and not args.stream:
        parser.error("--chunk-size needs --stream")
    try:
        client = VaeClient(args.target, timeout_s=args.timeout_s, progress=not args.no_progress, **_security(args))
        with client:
            return args.handler(client, args)
    except VaeClientError as err:
        _error(args, f"{err.code_name}: {err.details}", {"code": err.code_name, "message": err.details})
        return 1
    except InputError as err:
        _error(args, str(err), {"code": "INPUT", "message": str(err)})
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: stop quietly, and keep Python's exit-time flush quiet too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _error(args: argparse.Namespace, text: str, payload: dict) -> None:
    """Errors go to stderr: one line of text, or with --json one object {"error": {code, message}}."""
    print(json.dumps({"error": payload}) if args.json else f"{PROG}: {text}", file=sys.stderr)


def _emit(args: argparse.Namespace, payload: dict, lines: list[str]) -> None:
    print(json.dumps(payload) if args.json else "\n".join(lines))


def _model_json(name: str, version: str) -> dict:
    return {"name": name, "version": version}


def _pieces_json(pieces: tuple[Piece, ...]) -> list[dict]:
    """The requests a call was sent as: rows [start, stop) and the seed of each."""
    return [{"start": piece.start, "stop": piece.stop, "seed": piece.seed} for piece in pieces]


def _seed_text(result) -> str:
    """ "seed S", and how many requests a split call took (their seeds: --json, or --out)."""
    if len(result.pieces) <= 1:
        return f"seed {result.seed}"
    return f"seed {result.seed}, sent as {len(result.pieces)} requests"


def _pieces_array(pieces: tuple[Piece, ...]) -> np.ndarray:
    """[requests, 3] uint64: start, stop and seed of each request, for .npz outputs."""
    return np.array([[piece.start, piece.stop, piece.seed] for piece in pieces], dtype=np.uint64).reshape(-1, 3)


def _shapes(arrays: dict[str, np.ndarray | None]) -> dict[str, list[int] | None]:
    return {name: None if array is None else list(array.shape) for name, array in arrays.items()}


def _table(columns: dict[str, np.ndarray], formats: dict[str, str] | None = None) -> list[str]:
    """A header and one right-aligned line per row; floats as ``.4f`` unless ``formats`` says otherwise."""
    widths = {name: max(10, len(name)) for name in columns}
    formats = formats or {}
    lines = ["row  " + "  ".join(f"{name:>{widths[name]}}" for name in columns)]
    for row in range(len(next(iter(columns.values())))):
        cells = (f"{format(values[row], formats.get(name, '.4f')):>{widths[name]}}" for name, values in columns.items())
        lines.append(f"{row:>3}  " + "  ".join(cells))
    return lines


def _cmd_health(client: VaeClient, args: argparse.Namespace) -> int:
    status = client.health()
    _emit(args, {"status": status}, [status])
    return 0 if status == "SERVING" else 1


def _split_json(split: vae_pb2.SplitMetrics) -> dict:
    fields = ("num_examples", "elbo_nats", "iwae_nll_nats", "iwae_k", "bits_per_dim")
    return {field: getattr(split, field) for field in fields}


def _latent_map_json(info: vae_pb2.ModelInfo) -> dict | None:
    """The recorded principal plane of the posterior means (null: a bundle exported before it)."""
    if not info.HasField("latent_map"):
        return None
    plane = info.latent_map
    directions = [
        {"unit": list(d.unit), "sd": d.sd, "variance_fraction": d.variance_fraction} for d in plane.directions
    ]
    return {"rows": plane.rows, "num_rows": plane.num_rows, "mean": list(plane.mean), "directions": directions}


def _cmd_info(client: VaeClient, args: argparse.Namespace) -> int:
    # Built by hand rather than with json_format.MessageToDict, which writes 64-bit integers as strings.
    info = client.info(args.model, args.model_version)
    limit_names = ("max_rows", "max_k", "max_row_samples", "max_sample_n", "max_stream_sample_n")
    limits = {name: getattr(info, name) for name in limit_names}
    splits = {name: _split_json(getattr(info, name)) for name in ("validation", "test") if info.HasField(name)}
    calibration = [
        {
            "score": score_name(entry.score),
            "num_examples": entry.num_examples,
            "mean": entry.mean,
            "std": entry.std,
            "quantiles": {f"{quantile.level:g}": quantile.value for quantile in entry.quantiles},
            # Rows per equal-width bin, derived from the recorded quantile grid (vae.proto, ScoreCalibration).
            "histogram": {"edges": list(entry.histogram.edges), "counts": list(entry.histogram.counts)},
        }
        for entry in info.calibration
    ]
    # The server's score registry: what `score --score` accepts, and the model's default (the server's word, not ours).
    scores = [
        {"score": score_name(facts.score), "draws": facts.draws, "description": facts.description}
        for facts in info.scores
    ]
    payload = {
        "model": _model_json(info.model.name, info.model.version),
        "available_versions": list(info.available_versions),
        "created_at": info.created_at,
        "input_shape": list(info.input_shape),
        "num_features": info.num_features,
        "latent_dim": info.latent_dim,
        "likelihood": info.likelihood,
        "binarization": info.binarization,
        "preprocessing": {
            "loc": list(info.preprocessing.loc),
            "scale": list(info.preprocessing.scale),
            "description": info.preprocessing.description,
        },
        **splits,
        "test": splits.get("test"),  # null: no test rows
        "calibration": calibration,
        "scores": scores,
        "default_score": score_name(info.default_score),
        "latent_map": _latent_map_json(info),
        "providers": list(info.providers),
        "limits": limits,
    }
    lines = [
        f"model        {info.model.name}:{info.model.version}  (versions held: {', '.join(info.available_versions)})",
        f"created      {info.created_at}",
        f"input        shape {list(info.input_shape)}, D={info.num_features}; latent L={info.latent_dim}; "
        f"{info.likelihood} likelihood",
        f"binarization {info.binarization or 'none'}",
        f"inputs       raw values; the server applies {info.preprocessing.description or 'none'} "
        "(outputs over x are in the model's space)",
    ]
    for name, split in splits.items():
        lines.append(
            f"{name:<12} {split['num_examples']} examples: ELBO {split['elbo_nats']:.3f} nats, "
            f"IWAE NLL {split['iwae_nll_nats']:.3f} nats (k={split['iwae_k']}), {split['bits_per_dim']:.4f} bits/dim"
        )
    if "test" not in splits:  # the training run kept no test rows: every row went to training and validation
        lines.append(f"{'test':<12} no test rows")
    for entry in calibration:
        quantiles = ", ".join(f"q{level}={value:.3f}" for level, value in entry["quantiles"].items())
        lines.append(
            f"calibration  {entry['score']} (n={entry['num_examples']}): mean {entry['mean']:.3f}, "
            f"std {entry['std']:.3f}; {quantiles}"
        )
    for entry in scores:
        default = ", the default" if entry["score"] == payload["default_score"] else ""
        lines.append(f"score        {entry['score']} ({entry['draws']} draws per row{default}): {entry['description']}")
    if info.HasField("latent_map"):
        plane = info.latent_map
        spread = ", ".join(f"sd {d.sd:.3f} ({d.variance_fraction:.0%})" for d in plane.directions)
        lines.append(f"latent map   principal directions of {plane.num_rows} rows' posterior means: {spread}")
    lines.append(f"providers    {', '.join(info.providers)}")
    lines.append("limits       " + ", ".join(f"{name} {value}" for name, value in limits.items()))
    _emit(args, payload, lines)
    return 0


def _cmd_encode(client: VaeClient, args: argparse.Namespace) -> int:
    result = client.encode(load_rows(args.input), args.samples, args.seed, args.model, args.model_version)
    per_row = {"z_mean": result.z_mean, "z_logvar": result.z_logvar}
    return _report_coder(args, "encoded", result, per_row, {"z_samples": result.z_samples})


def _cmd_decode(client: VaeClient, args: argparse.Namespace) -> int:
    result = client.decode(load_rows(args.input), args.samples, args.seed, args.model, args.model_version)
    per_row = {"x_mean": result.x_mean}
    if result.x_scale is not None:
        per_row["x_scale"] = result.x_scale
    return _report_coder(args, f"decoded ({result.likelihood})", result, per_row, {"x_samples": result.x_samples})


def _report_coder(
    args: argparse.Namespace,
    verb: str,
    result: EncodeResult | DecodeResult,
    per_row: dict[str, np.ndarray],
    samples: dict[str, np.ndarray | None],
) -> int:
    """Print an encode/decode result (and save it with --out). JSON lists ``per_row``; samples only by shape."""
    saved = {name: array for name, array in {**per_row, **samples}.items() if array is not None}
    if args.out:
        pieces = _pieces_array(result.pieces)
        save(args.out, lambda file: np.savez(file, seed=np.uint64(result.seed), pieces=pieces, **saved))
    payload = {
        "model": _model_json(result.model_name, result.model_version),
        "seed": result.seed,
        "pieces": _pieces_json(result.pieces),
        **{name: array.tolist() for name, array in per_row.items()},
        "shapes": _shapes({**per_row, **samples}),
        "out": args.out,
    }
    count = len(next(iter(per_row.values())))
    shapes = ", ".join(f"{name} {list(array.shape)}" for name, array in saved.items())
    lines = [f"{verb} {count} rows with {result.model_name}:{result.model_version} ({_seed_text(result)}): {shapes}"]
    for row in range(min(count, _MAX_PRINTED_ROWS)):
        # numpy's summarisation keeps a row of 784 values to one readable line.
        cells = (f"{name}={np.array2string(array[row], precision=3, threshold=8)}" for name, array in per_row.items())
        lines.append(f"{row:>4}  " + "  ".join(cells))
    if count > _MAX_PRINTED_ROWS:
        lines.append(f"      ... {count - _MAX_PRINTED_ROWS} more rows (see --out or --json)")
    if args.out:
        lines.append(f"wrote {args.out}")
    _emit(args, payload, lines)
    return 0


def _image_model(client: VaeClient, args: argparse.Namespace) -> tuple[str | None, str | None, tuple[int, ...]]:
    """(model, version, image shape) for a --png command: the version whose shape was read is the
    one called afterwards, even if a newer one is loaded meanwhile. Without --png: no shape."""
    if not args.png:
        return args.model, args.model_version, ()
    info = client.info(args.model, args.model_version)
    return info.model.name, info.model.version, _image_shape(info)


def _image_shape(info: vae_pb2.ModelInfo) -> tuple[int, ...]:
    """[H, W] of a grey-image model, for --png; InputError for any other input shape (tables)."""
    image_shape = tuple(int(dim) for dim in info.input_shape)
    if len(image_shape) == 3 and image_shape[0] == 1:
        image_shape = image_shape[1:]  # one grey channel [1, H, W] draws as [H, W]
    if len(image_shape) != 2:
        raise InputError(
            f"--png needs grey images; this model's input shape is {list(image_shape)}: "
            "leave out --png (the values are printed as text, or as JSON with --json)"
        )
    return image_shape


def _png_images(x_mean: np.ndarray, image_shape: tuple[int, ...]) -> np.ndarray:
    """E[x|z] rows as grey images in [0, 1]: Gaussian means may leave [0, 1]; clip rather than
    rescale so grey levels stay comparable across images and commands."""
    return np.clip(x_mean, 0.0, 1.0).reshape(len(x_mean), *image_shape)


def _cmd_sample(client: VaeClient, args: argparse.Namespace) -> int:
    model, version, image_shape = _image_model(client, args)
    if args.stream:
        result = client.sample_stream(args.n, args.chunk_size, args.seed, args.temperature, model, version)
    else:
        result = client.sample(args.n, args.seed, args.temperature, model, version)
    if args.out:
        save(args.out, lambda file: np.save(file, result.x_mean))
    if args.png:
        write_png_grid(args.png, _png_images(result.x_mean, image_shape))
    arrays = {"z": result.z, "x_mean": result.x_mean, "x": result.x}
    temperature = 1.0 if args.temperature is None else args.temperature
    payload = {
        "model": _model_json(result.model_name, result.model_version),
        "seed": result.seed,
        "n": len(result.z),
        "temperature": temperature,
        "shapes": _shapes(arrays),
        "x_mean_average": float(result.x_mean.mean()),
        "out": args.out,
        "png": args.png,
    }
    lines = [
        f"{'streamed' if args.stream else 'sampled'} {len(result.z)} rows from {result.model_name}:"
        f"{result.model_version} (seed {result.seed}, temperature {temperature:g})",
        "  ".join(f"{name} {list(array.shape)}" for name, array in arrays.items()),
        f"x_mean: average {result.x_mean.mean():.4f}, min {result.x_mean.min():.4f}, max {result.x_mean.max():.4f}",
    ]
    lines += [f"wrote {path}" for path in (args.out, args.png) if path]
    _emit(args, payload, lines)
    return 0


def _cmd_elbo(client: VaeClient, args: argparse.Namespace) -> int:
    result = client.elbo(load_rows(args.input), args.k, args.seed, args.model, args.model_version)
    columns = {
        "elbo": result.elbo,
        "reconstruction": result.reconstruction,
        "kl": result.kl,
        "elbo_bits_per_dim": result.elbo_bits_per_dim,
    }
    iwae_columns = {
        "iwae": result.iwae,
        "iwae_standard_error": result.iwae_standard_error,
        "iwae_bits_per_dim": result.iwae_bits_per_dim,
    }
    payload = {
        "model": _model_json(result.model_name, result.model_version),
        "seed": result.seed,
        "pieces": _pieces_json(result.pieces),
        "k": result.k,
        # The iwae lists are null when k == 1 (the server computes no IWAE bound then).
        **{name: None if values is None else values.tolist() for name, values in {**columns, **iwae_columns}.items()},
    }
    if result.iwae is not None:
        columns |= iwae_columns
    lines = [f"model {result.model_name}:{result.model_version}  k={result.k}  {_seed_text(result)}  (nats)"]
    lines += _table(columns)
    lines.append("mean " + "  ".join(f"{values.mean():>{max(10, len(name))}.4f}" for name, values in columns.items()))
    _emit(args, payload, lines)
    return 0


def _cmd_score(client: VaeClient, args: argparse.Namespace) -> int:
    x = load_rows(args.input)
    model, version, image_shape = _image_model(client, args)
    result = client.score(
        x, args.score, args.fpr, args.threshold, args.seed, model, version, feature_errors=bool(args.png)
    )
    payload = {
        "model": _model_json(result.model_name, result.model_version),
        "seed": result.seed,
        "pieces": _pieces_json(result.pieces),
        "score": result.score,
        "scores": result.scores.tolist(),
        "percentile": result.percentile.tolist(),
        "p_value": result.p_value.tolist(),
        "is_anomaly": result.is_anomaly.tolist(),
        "threshold": result.threshold,
        "false_positive_rate": result.false_positive_rate,
    }
    table = _table(
        {"score": result.scores, "percentile": result.percentile, "p_value": result.p_value}, {"p_value": ".4g"}
    )
    flags = ["flagged", *np.where(result.is_anomaly, "ANOMALY", "-")]
    lines = [f"model {result.model_name}:{result.model_version}  score {result.score}  {_seed_text(result)}"]
    lines += [f"{line}  {flag:>8}" for line, flag in zip(table, flags, strict=True)]
    lines.append(
        f"threshold {result.threshold:.4f} (false-positive rate {result.false_positive_rate:.4g} on calibration data): "
        f"{int(result.is_anomaly.sum())} of {len(result.scores)} flagged"
    )
    if args.png:
        shown = min(len(x), _MAX_HEATMAP_ROWS)
        flags = np.where(result.is_anomaly, "  ANOMALY", "")
        captions = [f"row {row}: {result.scores[row]:.2f}{flags[row]}" for row in range(shown)]
        write_png_heatmaps(
            args.png,
            np.clip(x[:shown].reshape(shown, *image_shape), 0.0, 1.0),
            result.feature_errors[:shown].reshape(shown, *image_shape),
            captions,
        )
        payload["png"] = args.png
        lines.append(f"wrote {args.png}" + (f" (first {shown} rows)" if shown < len(x) else ""))
    _emit(args, payload, lines)
    return 0


def _cmd_interpolate(client: VaeClient, args: argparse.Namespace) -> int:
    start, end = load_rows(args.start), load_rows(args.end)
    model, version, image_shape = _image_model(client, args)
    result = client.interpolate(start, end, args.steps, args.path, args.latent, args.samples, args.seed, model, version)
    arrays = {"t": result.t, "z": result.z, "x_mean": result.x_mean, "x_samples": result.x_samples}
    if args.out:
        saved = {name: array for name, array in arrays.items() if array is not None}
        pieces = _pieces_array(result.pieces)
        save(args.out, lambda file: np.savez(file, seed=np.uint64(result.seed), pieces=pieces, **saved))
    if args.png:
        steps = result.x_mean.shape[1]
        write_png_grid(args.png, _png_images(result.x_mean.reshape(-1, result.x_mean.shape[-1]), image_shape), steps)
    payload = {
        "model": _model_json(result.model_name, result.model_version),
        "seed": result.seed,
        "pieces": _pieces_json(result.pieces),
        "path": args.path,
        "t": result.t.tolist(),
        "shapes": _shapes(arrays),
        "out": args.out,
        "png": args.png,
    }
    lines = [
        f"interpolated {len(result.z)} paths of {len(result.t)} points ({args.path}) with "
        f"{result.model_name}:{result.model_version} ({_seed_text(result)})",
        "  ".join(f"{name} {list(array.shape)}" for name, array in arrays.items() if array is not None),
    ]
    lines += [f"wrote {path}" for path in (args.out, args.png) if path]
    _emit(args, payload, lines)
    return 0


def _cmd_manifold(client: VaeClient, args: argparse.Namespace) -> int:
    info = client.info(args.model, args.model_version)  # the version described is the one decoded
    image_shape = _image_shape(info) if args.png else ()
    result = manifold_map(client, info, args.grid, args.dims, args.plane, args.temperature)
    if args.out:
        arrays = {"axes": result.axes, "z": result.z, "x_mean": result.x_mean, "x_raw": result.x_raw}
        save(args.out, lambda file: np.savez(file, **arrays))
    if args.png:
        write_png_grid(args.png, _png_images(result.x_mean, image_shape), columns=result.grid)
    payload = {
        "model": _model_json(result.model_name, result.model_version),
        "plane": result.plane,
        "note": result.note,
        "grid": result.grid,
        "temperature": result.temperature,
        "axes": result.axes.tolist(),
        "z": result.z.tolist(),
        "x_mean": result.x_mean.tolist(),
        "x_raw": result.x_raw.tolist(),
        "out": args.out,
        "png": args.png,
    }
    tiles = len(result.z)
    lines = [
        f"manifold map of {result.model_name}:{result.model_version}: {result.grid} x {result.grid} tiles on the "
        f"{result.plane} plane at the prior's quantiles (temperature {result.temperature:g}); "
        "tile k is row k // grid, column k % grid; the first axis grows rightwards, the second upwards",
    ]
    lines += [f"note: {result.note}"] if result.note else []
    if not args.png:  # tables (or images without --png): the decoded rows in raw values
        for tile in range(min(tiles, _MAX_PRINTED_ROWS)):
            z_text = np.array2string(result.z[tile], precision=3, threshold=8)
            lines.append(
                f"{tile:>4}  z={z_text}  x_raw={np.array2string(result.x_raw[tile], precision=3, threshold=8)}"
            )
        if tiles > _MAX_PRINTED_ROWS:
            lines.append(f"      ... {tiles - _MAX_PRINTED_ROWS} more tiles (see --out or --json)")
    lines += [f"wrote {path}" for path in (args.out, args.png) if path]
    _emit(args, payload, lines)
    return 0


def _cmd_monitor(client: VaeClient, args: argparse.Namespace) -> int:
    def show() -> None:
        reply = client.monitoring(args.model or "", args.model_version or "")
        lines = monitor_view.monitoring_lines(reply)
        if args.watch is not None:
            lines.append(f"at {time.strftime('%H:%M:%S')}, every {args.watch:g} s; Ctrl-C stops")
        _emit(args, monitor_view.monitoring_json(reply), lines)

    if args.watch is None:
        show()
        return 0

    def on_error(error: VaeClientError) -> None:
        _error(args, f"{error.code_name}: {error.details}", {"code": error.code_name, "message": error.details})

    clear = sys.stdout.isatty() and not args.json
    return monitor_view.watch(show, args.watch, on_error, clear, spaced=not args.json)


if __name__ == "__main__":
    sys.exit(main())
