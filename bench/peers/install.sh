#!/usr/bin/env bash
# Creates the peer-server venvs bench/.venvs/triton (PyTriton) and bench/.venvs/mlserver (idempotent),
# and on request bench/.venvs/perf (perf_analyzer) and bench/.venvs/pyod (PyOD anomaly detectors).
# Usage: bash bench/peers/install.sh [triton|mlserver|perf|pyod ...]   (default: triton and mlserver)
# PYTHON selects the interpreter (default python3; it must be CPython 3.11 with a shared libpython
# for PyTriton, e.g. pyenv's). These venvs are never part of the project's pyproject.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VENVS="$(cd "$HERE/.." && pwd)/.venvs"
PYTHON="${PYTHON:-python3}"
NAMES=("$@"); [ ${#NAMES[@]} -gt 0 ] || NAMES=(triton mlserver)
mkdir -p "$VENVS"
for name in "${NAMES[@]}"; do
    req="$HERE/requirements-$name.txt"
    lock="$HERE/constraints-$name.txt"
    [ -f "$req" ] || { echo "unknown peer: $name" >&2; exit 2; }
    venv="$VENVS/$name"
    stamp="$venv/.installed"
    inputs=("$req"); [ -f "$lock" ] && inputs+=("$lock")
    want="$("$PYTHON" -V 2>&1; cat "${inputs[@]}" | sha256sum | cut -d' ' -f1)"
    want="${want//$'\n'/ }"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        echo "$name: up to date ($venv)"
        continue
    fi
    [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
    constraint=()
    [ -f "$lock" ] && constraint=(-c "$lock")
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" "${constraint[@]}"
    "$venv/bin/python" -m pip check
    echo "$want" > "$stamp"
    echo "$name: installed ($venv)"
done
