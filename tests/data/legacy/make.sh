#!/usr/bin/env bash
# How tests/data/legacy was made: a trial and a sweep cut short by the code of commit 5418119
# (before the package was split into layers), kept so that tests/test_legacy.py can prove they
# still resume, and report, with the code of today. Run from the repository root with that
# commit checked out at $OLD (git worktree add $OLD 5418119); the test rewrites the paths.
set -euo pipefail
OLD=${OLD:?a checkout of commit 5418119}
OUT=$(pwd)/tests/data/legacy
ROOT=/tmp/worm-tune-legacy
rm -rf "$ROOT" && mkdir -p "$ROOT"
export PYTHONPATH=$OLD
TRIAL=(--set model.arch=vit --set data.dataset=digits --set data.train_subset=128 --set data.batch_size=64
       --set search.window=2 --set search.max_epochs=3 --set retrain.max_epochs=2 --set threads=1 --set device=cpu)
# A run that crashes after epoch 3: its checkpoint holds epoch 2.
python -m worm_tune.run "${TRIAL[@]}" --set crash_at_epoch=3 --quiet --out "$ROOT/run" || true
# A one-trial sweep interrupted (Ctrl-C) once its trial has reported two epochs.
cd "$ROOT"
python -m worm_tune.sweep vit --quick --set seed=0 --set method=earlybird --set prune.kind=unstructured \
    --set data.train_subset=128 --set search.max_epochs=3 --set search.window=2 --set retrain.max_epochs=2 \
    --name legacy --storage "$ROOT/ray" --tracking-uri "sqlite:///$ROOT/mlflow.db" --no-analysis &
SWEEP=$!
until [ "$(cat "$ROOT"/ray/legacy/earlybird/*/result.json 2>/dev/null | wc -l)" -ge 2 ]; do sleep 0.2; done
kill -INT $SWEEP
wait $SWEEP || true
cd - >/dev/null
rm -rf "$OUT/root" && cp -r "$ROOT" "$OUT/root"
rm -rf "$OUT/root/mlartifacts" "$OUT/root/mlflow.db.lock" "$OUT/root/ray/legacy/driver.lock"
echo "$ROOT" > "$OUT/ROOT"
