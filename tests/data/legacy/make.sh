#!/usr/bin/env bash
# How tests/data/legacy* were made: a trial and a sweep cut short by the code of an older commit,
# kept so that tests/test_legacy.py can prove they still resume, and report, with the code of
# today. tests/data/legacy: commit 5418119 (before the package was split into layers);
# tests/data/legacy-1099602: commit 1099602 (before the engine, runner and config were split into
# rooms, issue 23). A tiny BERT on a made-up TSV folder keeps every checkpoint under 1 MB. Run from
# the repository root with the commit checked out at $OLD (git worktree add $OLD 5418119) and
# OUT=tests/data/legacy (or legacy-1099602); the test rewrites the paths.
set -euo pipefail
OLD=${OLD:?a checkout of commit 5418119}
OUT=$(pwd)/${OUT:?tests/data/legacy or tests/data/legacy-<commit>}
ROOT=/tmp/worm-tune-legacy
rm -rf "$ROOT" && mkdir -p "$ROOT/text"
export PYTHONPATH=$OLD
python - "$ROOT/text" <<'PY'
import random, sys
words = [f"w{i}" for i in range(40)]
rng = random.Random(0)
for split, n in (("train", 160), ("test", 40)):
    lines = ["sentence\tlabel"]
    for _ in range(n):
        sentence = rng.choices(words, k=8)
        lines.append(f"{' '.join(sentence)}\t{int(sum(int(w[1:]) for w in sentence) % 2)}")
    open(f"{sys.argv[1]}/{split}.tsv", "w").write("\n".join(lines) + "\n")
PY
cat > "$ROOT/space.toml" <<TOML
description = "a tiny BERT on a TSV folder"
methods = ["earlybird"]
[base]
"model.arch" = "bert"
"data.dataset" = "text"
"data.data_dir" = "$ROOT/text"
"data.batch_size" = 32
"search.window" = 2
"search.threshold" = 1e-6
"search.max_epochs" = 6
"retrain.max_epochs" = 2
[axes]
seed = [0]
TOML
TRIAL=(--set model.arch=bert --set data.dataset=text --set data.data_dir="$ROOT/text" --set data.batch_size=32
       --set search.window=2 --set search.threshold=1e-6 --set search.max_epochs=6 --set retrain.max_epochs=2
       --set threads=1 --set device=cpu)
# A run that crashes after epoch 3: its checkpoint holds epoch 2.
python -m worm_tune.run "${TRIAL[@]}" --set crash_at_epoch=3 --quiet --out "$ROOT/run" || true
# A one-trial sweep interrupted (Ctrl-C) once its trial has reported two epochs.
cd "$ROOT"
python -m worm_tune.sweep "$ROOT/space.toml" --name legacy --storage "$ROOT/ray" \
    --tracking-uri "sqlite:///$ROOT/mlflow.db" --no-analysis &
SWEEP=$!
# The trial's folder: under earlybird/ at 5418119, under trials/ at 1099602.
until [ "$(cat "$ROOT"/ray/legacy/*/*/result.json 2>/dev/null | wc -l)" -ge 2 ]; do sleep 0.1; done
kill -INT $SWEEP
wait $SWEEP || true
cd - >/dev/null
mkdir -p "$OUT" && rm -rf "$OUT/root" && cp -r "$ROOT" "$OUT/root"
rm -rf "$OUT/root/mlartifacts" "$OUT/root/mlflow.db.lock" "$OUT/root/ray/legacy/driver.lock"
echo "$ROOT" > "$OUT/ROOT"
