"""Summarise a py-spy profile (``py-spy record --format raw``: one collapsed stack and its sample
count per line) as markdown: where the samples fall by thread, by layer, and the functions with
the most samples of their own.

    python bench/profile_summary.py runs/profile/elbo_b256-c1.txt --top 15
"""

import argparse
import re
from collections import Counter
from pathlib import Path

# A frame's layer, by the file it is in: first match wins.
LAYERS = [
    ("vae-serve: service (handlers, codec, batcher, metrics)", r"/service/"),
    ("vae-serve: core (bounds, work, runtime, scores)", r"/core/"),
    ("generated protobuf / grpc stubs", r"/api/"),
    ("grpc.aio (Cython)", r"grpc/_cython|grpc/aio|grpc/_"),
    ("asyncio", r"asyncio/"),
    ("onnxruntime (Python side of Session.run)", r"onnxruntime"),
    ("numpy", r"numpy/"),
    ("prometheus_client", r"prometheus_client"),
    ("concurrent.futures / threading", r"concurrent/|threading\.py"),
]
FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^:()]*)(?::\d+)?\)$")


def parse(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def layer_of(frames: list[str]) -> str:
    """The layer of the innermost frame that belongs to a known layer (the code doing the work)."""
    for frame in reversed(frames):
        match = FRAME.match(frame)
        file = match["file"] if match else frame
        for name, pattern in LAYERS:
            if re.search(pattern, file):
                return name
    return "other"


def short(frame: str) -> str:
    match = FRAME.match(frame)
    if not match:
        return frame
    file = "/".join(Path(match["file"]).parts[-2:])
    return f"{match['function']} ({file})"


def summarise(path: Path, top: int) -> str:
    stacks = parse(path)
    total = sum(count for _, count in stacks)
    threads, layers, own, inclusive = Counter(), Counter(), Counter(), Counter()
    for frames, count in stacks:
        thread, body = (frames[0], frames[1:]) if frames[0].startswith(("thread", "process")) else ("all", frames)
        threads[thread.split(" ")[0] + " " + " ".join(thread.split(" ")[1:2])] += count
        layers[layer_of(body)] += count
        if body:
            own[short(body[-1])] += count
        for frame in {short(frame) for frame in body}:
            inclusive[frame] += count
    lines = [f"{total} samples in {path.name}", "", "| thread | share |", "|---|---|"]
    lines += [f"| {name} | {count / total:.1%} |" for name, count in threads.most_common()]
    lines += ["", "| layer (innermost known frame) | share |", "|---|---|"]
    lines += [f"| {name} | {count / total:.1%} |" for name, count in layers.most_common()]
    lines += ["", "| function, own samples | share |", "|---|---|"]
    lines += [f"| `{name}` | {count / total:.1%} |" for name, count in own.most_common(top)]
    lines += ["", "| function, inclusive | share |", "|---|---|"]
    lines += [f"| `{name}` | {count / total:.1%} |" for name, count in inclusive.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    print(summarise(args.profile, args.top))


if __name__ == "__main__":
    main()
