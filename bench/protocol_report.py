"""The tables of bench/protocol.py: from the cache under WORK/DATA to markdown and bench/results/protocol-DATA.json.

A column is one candidate: a vae-serve recipe x served score, a recipe x offline combination of the
served p-values, or a PyOD model. Its figures: test AUROC per (seed, class), the mean over classes
per seed, and bootstrap intervals (protocol_stats) of the per-class mean over seeds and of the mean
over classes and seeds; for vae-serve columns also the selection-split AUROC (seed 0).
"""

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from protocol_data import TABLES
from protocol_stats import (
    OFFLINE,
    OFFLINE_COMPONENTS,
    auroc_percent,
    bootstrap_counts,
    weighted_auroc,
)

RESULTS = Path(__file__).resolve().parent / "results"
PYOD_NAMES = {"vae": "PyOD VAE", "autoencoder": "PyOD AutoEncoder", "iforest": "PyOD IForest"}
SELECTION_SEED = 0


def _recipe_label(recipe: str) -> str:
    return f"`{recipe}`" if recipe else "(defaults)"


def load_columns(folder: Path, tag: str) -> tuple[dict, dict, dict]:
    """(columns, labels, models): columns[(recipe, score)][(seed, class)] = {"test": s, "selection": s}."""
    models = json.loads((folder / "models.json").read_text())
    labels = {int(p.stem[1:]): dict(np.load(p)) for p in (folder / "labels").glob("c*.npz")}
    columns: dict = {}
    for name, entry in models.items():
        if entry.get("tag") != tag or "sha" not in entry or entry["class"] not in labels:
            continue
        cache = folder / "scores" / name / entry["sha"]
        p_values: dict = {}
        for path in sorted(cache.glob("*.npz")):
            split, score = path.stem.split("-", 1)
            arrays = np.load(path)
            cell = columns.setdefault((entry["recipe"], score), {}).setdefault((entry["seed"], entry["class"]), {})
            cell[split] = arrays["scores"]
            p_values.setdefault(split, {})[score] = arrays["p_value"]
        for split, by_score in p_values.items():
            if not all(component in by_score for component in OFFLINE_COMPONENTS):
                continue
            for offline, combine in OFFLINE.items():
                cell = columns.setdefault((entry["recipe"], offline), {}).setdefault(
                    (entry["seed"], entry["class"]), {}
                )
                cell[split] = combine([by_score[component] for component in OFFLINE_COMPONENTS])
    for c in labels:
        current = folder / "pyod" / f"c{c}-current.json"
        if not current.exists():
            continue
        peers = json.loads(current.read_text())
        rows_key = peers.get("key") or peers["scores"].split("-")[1]  # older runs named the file only
        for path in sorted((folder / "pyod").glob(f"c{c}-{rows_key}-seeds*-scores.npz")):
            arrays = np.load(path)
            for key in arrays.files:
                model, seed = key.rsplit("-", 1)
                columns.setdefault(("PyOD", PYOD_NAMES.get(model, model)), {})[(int(seed), c)] = {"test": arrays[key]}
    return columns, labels, models


def summarize_column(cells: dict, labels: dict, counts: list[np.ndarray]) -> dict:
    """The figures of one column; ``counts`` are the shared bootstrap resamples of the test rows."""
    seeds = sorted({seed for seed, _ in cells})
    classes = sorted(labels)
    complete = [s for s in seeds if all((s, c) in cells and "test" in cells[(s, c)] for c in classes)]
    point = {
        key: auroc_percent(cell["test"], labels[key[1]]["test_y"]) for key, cell in cells.items() if "test" in cell
    }
    resampled = {
        key: np.concatenate([weighted_auroc(cells[key]["test"], labels[key[1]]["test_y"], chunk) for chunk in counts])
        * 100
        for key in point
        if key[0] in complete
    }
    out: dict = {"seeds": complete, "per_seed_mean": {}, "per_class": {}}
    for seed in complete:
        out["per_seed_mean"][seed] = round(float(np.mean([point[(seed, c)] for c in classes])), 2)
    if complete:
        for c in classes:
            stacked = np.mean([resampled[(s, c)] for s in complete], axis=0)
            out["per_class"][c] = _interval(np.mean([point[(s, c)] for s in complete]), stacked)
            out["per_class"][c]["per_seed"] = [round(point[(s, c)], 2) for s in complete]
        stacked = np.mean([resampled[(s, c)] for s in complete for c in classes], axis=0)
        out["mean"] = _interval(np.mean(list(out["per_seed_mean"].values())), stacked)
    selection = [
        auroc_percent(cells[(SELECTION_SEED, c)]["selection"], labels[c]["selection_y"])
        for c in classes
        if "selection" in cells.get((SELECTION_SEED, c), {})
    ]
    if len(selection) == len(classes):
        out["selection_mean"] = round(float(np.mean(selection)), 2)
        out["selection_per_class"] = [round(v, 2) for v in selection]
    return out


def _interval(point: float, resampled: np.ndarray) -> dict:
    finite = resampled[np.isfinite(resampled)]
    low, high = np.percentile(finite, [2.5, 97.5])
    return {"auroc": round(float(point), 2), "low": round(float(low), 2), "high": round(float(high), 2)}


def summarize(work: Path, data: str, tag: str) -> dict:
    """Every column's figures for WORK/DATA, the selection pick and the defaults' column."""
    from protocol import classes_of

    folder = work / data
    columns, labels, models = load_columns(folder, tag)
    if not labels:
        raise SystemExit(f"{folder}: nothing scored yet (run bench/protocol.py --data {data} first)")
    counts = list(bootstrap_counts(len(next(iter(labels.values()))["test_y"])))
    names = classes_of(data)
    summary = {
        "data": data,
        "work": str(work),
        "tag": tag,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "classes": {c: names[c] for c in sorted(labels)},
        "test_rows": len(next(iter(labels.values()))["test_y"]),
        "selection_rows": {
            c: [int((v["selection_y"] == 0).sum()), int(v["selection_y"].sum())] for c, v in labels.items()
        },
        "columns": [],
    }
    for (recipe, score), cells in sorted(columns.items(), key=lambda item: (item[0][0] == "PyOD", item[0])):
        figures = summarize_column(cells, labels, counts)
        kind = "pyod" if recipe == "PyOD" else ("offline" if score in OFFLINE else "served")
        summary["columns"].append({"recipe": recipe, "score": score, "kind": kind, **figures})
    candidates = [c for c in summary["columns"] if c["kind"] != "pyod" and "selection_mean" in c]
    summary["pick"] = max(candidates, key=lambda c: c["selection_mean"], default=None)
    defaults = [e for e in models.values() if e.get("tag") == tag and e["recipe"] == "" and "default_score" in e]
    summary["defaults_score"] = defaults[0]["default_score"] if defaults else None
    summary["training"] = _training(models, tag)
    summary["pyod_train_rows"] = _pyod_rows(folder, labels)
    return summary


def _training(models: dict, tag: str) -> dict:
    """Per recipe: the rows vae-train fitted / validated on, and the training seconds (mean, total)."""
    out: dict = {}
    for entry in models.values():
        if entry.get("tag") != tag or "train_s" not in entry:
            continue
        item = out.setdefault(entry["recipe"], {"train_s": [], "examples": {}, "commands": []})
        item["train_s"].append(entry["train_s"])
        item["examples"][entry["class"]] = entry["examples"]
        if entry["seed"] == 0 and len(item["commands"]) < 1:
            item["commands"].append(entry["command"])
    for item in out.values():
        seconds = item.pop("train_s")
        item["train_s_mean"], item["train_s_total"] = round(float(np.mean(seconds)), 1), round(float(sum(seconds)), 1)
    return out


def _pyod_rows(folder: Path, labels: dict) -> dict:
    rows = {}
    for c in labels:
        current = folder / "pyod" / f"c{c}-current.json"
        if current.exists():
            rows[c] = json.loads(current.read_text())["train_rows"]
    return rows


def _cell(figure: dict | None) -> str:
    if not figure:
        return "-"
    return f"{figure['auroc']:.2f} [{figure['low']:.2f}, {figure['high']:.2f}]"


def markdown(summary: dict) -> str:
    """The per-data-set tables."""
    seeds = sorted({s for c in summary["columns"] for s in c["seeds"]})
    pick = summary["pick"]
    lines = [
        f"### {summary['data']}: test AUROC % (seeds {', '.join(map(str, seeds))}; tag {summary['tag']}; "
        f"{summary['date']})",
        "",
        f"{summary['test_rows']} test rows; mean over classes; [bootstrap 95 % interval of the mean over classes and "
        "seeds, 1,000 joint resamples of the test rows]; selection = selection-split AUROC, seed 0, mean over classes "
        "(the protocol picks the highest, marked **bold**).",
        "",
        "| recipe | score | " + " | ".join(f"seed {s}" for s in seeds) + " | mean [95 % CI] | selection |",
        "|---|---|" + "---|" * (len(seeds) + 2),
    ]
    for column in summary["columns"]:
        per_seed = [f"{column['per_seed_mean'][s]:.2f}" if s in column["per_seed_mean"] else "-" for s in seeds]
        selection = f"{column['selection_mean']:.2f}" if "selection_mean" in column else "-"
        label = "PyOD (defaults)" if column["kind"] == "pyod" else _recipe_label(column["recipe"])
        score = column["score"] + (" (offline)" if column["kind"] == "offline" else "")
        if pick and column["recipe"] == pick["recipe"] and column["score"] == pick["score"]:
            score, selection = f"**{score}**", f"**{selection}**"
        lines.append(
            f"| {label} | {score} | " + " | ".join(per_seed) + f" | {_cell(column.get('mean'))} | {selection} |"
        )
    lines += ["", *per_class_table(summary), "", *training_lines(summary)]
    return "\n".join(lines)


def per_class_table(summary: dict) -> list[str]:
    """Per class, mean over seeds [95 % CI]: the pick, the defaults' default score, the PyOD models."""
    wanted = []
    if summary["pick"]:
        wanted.append((f"pick: {_recipe_label(summary['pick']['recipe'])} {summary['pick']['score']}", summary["pick"]))
    defaults = next(
        (c for c in summary["columns"] if c["recipe"] == "" and c["score"] == summary["defaults_score"]), None
    )
    if defaults and defaults is not summary["pick"]:
        wanted.append((f"defaults ({summary['defaults_score']})", defaults))
    wanted += [(c["score"], c) for c in summary["columns"] if c["kind"] == "pyod"]
    lines = [
        "Per class, AUROC % mean over seeds [bootstrap 95 % interval]:",
        "",
        "| class | " + " | ".join(name for name, _ in wanted) + " |",
        "|---|" + "---|" * len(wanted),
    ]
    for c, name in summary["classes"].items():
        lines.append(f"| {name} | " + " | ".join(_cell(col["per_class"].get(c)) for _, col in wanted) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{_cell(col.get('mean'))}**" for _, col in wanted) + " |")
    return lines


def training_lines(summary: dict) -> list[str]:
    lines = ["| recipe | rows fitted / validation (first class) | train s (mean, total) | command (seed 0) |"]
    lines.append("|---|---|---|---|")
    for recipe, item in summary["training"].items():
        first = item["examples"][min(item["examples"])]
        lines.append(
            f"| {_recipe_label(recipe)} | {first['train']} / {first['validation']} | "
            f"{item['train_s_mean']}, {item['train_s_total']} | `{item['commands'][0] if item['commands'] else ''}` |"
        )
    lines += ["", f"PyOD training rows per class: {summary['pyod_train_rows']}"]
    return lines


def tables_pick(work: Path, tag: str, summaries: dict) -> list[str]:
    """The pick for tables: the highest mean over the tables in WORK of the selection mean (seed 0).

    Args:
        work: the --work folder; every table scored there goes in.
        tag: only bundles of this tag.
        summaries: summaries already computed, by data set (the others are computed here).
    """
    found = {}
    for data in TABLES:
        if (work / data / "labels").is_dir():
            found[data] = summaries.get(data) or summarize(work, data, tag)
    per: dict = {}
    for data, summary in found.items():
        for column in summary["columns"]:
            if "selection_mean" in column:
                per.setdefault((column["recipe"], column["score"]), {})[data] = column["selection_mean"]
    rows = sorted(((np.mean(list(v.values())), key) for key, v in per.items() if len(v) == len(found)), reverse=True)
    lines = [f"### Tables ({', '.join(found)}): selection-split AUROC, mean over the tables (seed 0)", ""]
    lines += ["| recipe | score | " + " | ".join(found) + " | mean |", "|---|---|" + "---|" * (len(found) + 1)]
    for mean, (recipe, score) in rows:
        cells = " | ".join(f"{per[(recipe, score)][d]:.2f}" for d in found)
        bold = "**" if (mean, (recipe, score)) == rows[0] else ""
        lines.append(f"| {_recipe_label(recipe)} | {bold}{score}{bold} | {cells} | {bold}{mean:.2f}{bold} |")
    return lines


def report(work: Path, data: str, tag: str) -> str:
    """Summarizes WORK/DATA, writes bench/results/protocol-DATA.json and .md, returns the markdown."""
    summary = summarize(work, data, tag)
    text = markdown(summary)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"protocol-{data}.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    if data in TABLES:
        text += "\n\n" + "\n".join(tables_pick(work, tag, {data: summary}))
    (RESULTS / f"protocol-{data}.md").write_text(text + "\n")
    return text
