"""Transformers through the whole trial: a ViT on digits and a tiny random BERT on a text set the
tests write, run by the engine and by ``python -m worm_tune.run`` (offline), both mask kinds.

The unit tests of the attention masks, truncation and head removal are in ``test_attention.py``;
here the question is whether search, WORM, pruning, retraining, saving and reloading fit together.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from worm_tune.cli.run import main
from worm_tune.config import ConfigError, TrialConfig
from worm_tune.engine import TrialEngine, load_model
from worm_tune.legacy import ALWAYS_HASHED
from worm_tune.ticket.attention import attention_layers, count_heads, heads_per_layer

VIT = {
    "model.arch": "vit",
    "data.dataset": "digits",
    "data.train_subset": "256",
    "data.batch_size": "32",
    "optim.optimizer": "adamw",
    "optim.lr": "0.001",
    "search.window": "2",
    "search.max_epochs": "3",
    "search.threshold": "1e-6",  # run the whole search budget (element masks never repeat exactly)
    "worm.delta": "0.999",  # trigger WORM as soon as the window is full (s + delta > 1 >= d_avg)
    "retrain.max_epochs": "1",
    "device": "cpu",
}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread: these models are small enough that a second thread only adds contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def vit(**overrides: str) -> TrialConfig:
    return TrialConfig().replace({**VIT, **{k.replace("__", "."): v for k, v in overrides.items()}}).validate()


def trial(cfg: TrialConfig) -> TrialEngine:
    engine = TrialEngine(cfg)
    engine.run()
    return engine


@pytest.mark.parametrize("kind", ["unstructured", "structured"])
def test_a_vit_trial_searches_truncates_prunes_and_reloads(kind: str, tmp_path: Path) -> None:
    # gradclip truncates from the first step, so every search epoch shows the truncated units.
    engine = trial(vit(method="gradclip", prune__kind=kind, search__max_epochs="2"))
    summary = engine.summary()
    search = [m for m in engine.history if m["phase"] == "search"]
    assert search[0]["d_max"] is None and search[1]["d_max"] is not None
    # The mask is over query/key weights (element-wise) or heads; half of it was truncated.
    units = engine.sites.num_units
    assert units == (4 * 2 * 128 * 128 if kind == "unstructured" else 16)
    assert [m["truncated_units"] for m in search] == [units // 2] * len(search)
    assert summary["params_pruned"] < summary["params_dense"] and summary["flops_pruned"] < summary["flops_dense"]
    if kind == "unstructured":
        assert summary["sparsity"] == pytest.approx(0.5, abs=1e-3)
    else:
        heads = heads_per_layer(attention_layers(engine.model))
        # Half of the 16 heads go, except that a layer keeps its best head if the mask took all of its heads.
        assert sum(heads) == int(engine.pruning.keep.sum()) and 8 <= sum(heads) < 16 and min(heads) >= 1
    engine.save_model(tmp_path / "model.pt")
    reloaded = load_model(tmp_path / "model.pt").eval()
    engine.model.eval()
    x = torch.stack([engine.data.test[i][0] for i in range(8)])
    with torch.no_grad():
        assert torch.equal(reloaded(x), engine.model(x))
    assert count_heads(reloaded) == count_heads(engine.model)


@pytest.mark.slow
def test_earlybird_and_worm_on_a_vit_share_their_start_and_differ_once_truncating() -> None:
    eb, worm = trial(vit(method="earlybird")), trial(vit(method="worm"))
    assert eb.summary()["init_weights"] == worm.summary()["init_weights"]
    assert [m["train_loss"] for m in eb.history[:2]] == [m["train_loss"] for m in worm.history[:2]]
    assert eb.history[2]["train_loss"] != worm.history[2]["train_loss"]  # truncation from epoch 3 on


def _text_set(folder: Path) -> Path:
    """A tiny sentiment set: the label is whether the sentence holds a positive word."""
    rng = random.Random(0)
    filler = ["the", "film", "was", "a", "plot", "and", "actors", "story", "very", "it"]
    words = {1: ["good", "great", "fine", "superb"], 0: ["bad", "awful", "poor", "dull"]}
    folder.mkdir()
    for name, size in (("train.tsv", 64), ("test.tsv", 24)):
        rows = ["sentence\tlabel"]
        for i in range(size):
            sentence = rng.choices(filler, k=rng.randint(2, 6))
            sentence.insert(rng.randint(0, len(sentence)), rng.choice(words[i % 2]))
            rows.append(f"{' '.join(sentence)}\t{i % 2}")
        (folder / name).write_text("\n".join(rows) + "\n")
    return folder


BERT_ARGS = [
    "--model",
    "bert",
    "--dataset",
    "text",
    "--set",
    "data.batch_size=16",
    "--set",
    "optim.optimizer=adamw",
    "--set",
    "optim.lr=0.001",
    "--set",
    "search.window=2",
    "--set",
    "search.max_epochs=3",
    "--set",
    "search.threshold=0.01",
    "--set",
    "worm.delta=0.95",
    "--set",
    "retrain.max_epochs=2",
    "--quiet",
]


@pytest.mark.parametrize("kind", ["unstructured", "structured"])
def test_a_tiny_bert_runs_a_full_trial_offline(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = _text_set(tmp_path / "text")
    out = tmp_path / "run"
    method = "worm" if kind == "unstructured" else "gradclip"
    argv = [*BERT_ARGS, "--data-dir", str(data), "--method", method, "--set", f"prune.kind={kind}", "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["done"] and summary["retrain_epochs"] == 2
    assert summary["params_pruned"] < summary["params_dense"]
    epochs = json.loads((out / "metrics.json").read_text())["epochs"]
    if method == "worm":
        assert summary["trigger_epoch"] == 2  # s + delta > 1: as soon as the window of 2 is full
    else:
        assert epochs[0]["truncated_units"] == 4  # half of 2 layers x 4 heads, from the first step
    model = load_model(out / "model.pt")
    if kind == "structured":
        keep = torch.load(out / "model.pt", weights_only=True)["prune_keep"]
        assert count_heads(model) == int(keep.sum()) and 4 <= count_heads(model) < 8  # p = 0.5 of 2 x 4 heads
    else:
        assert summary["sparsity"] == pytest.approx(0.5, abs=1e-3)
    # The same command again resumes the finished run: the same numbers, nothing retrained.
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["final_acc"] == summary["final_acc"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model.arch": "bert"}, "data.dataset='digits' does not fit model.arch='bert'"),
        ({"data.dataset": "sst2"}, "data.dataset='sst2' does not fit model.arch='vit'"),
        ({"model.pretrained": "true"}, "a 32x32 ViT trains from scratch"),
        ({"model.checkpoint": "bert-base-uncased"}, "applies to model.arch='bert' only"),
        ({"worm.scope": "channel"}, "worm.scope='channel' is for CNNs"),
        ({"search.l1": "0.001"}, "search.l1=0.001 is for CNNs"),
        ({"retrain.init": "reinit"}, "retrain.init='reinit' is for CNNs"),
    ],
)
def test_combinations_that_cannot_run_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrialConfig().replace({**VIT, **overrides}).validate()


def test_text_only_settings_are_refused_before_loading(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for extra, message in (
        (["--set", "data.augment=true"], "augmentation is for images"),
        (["--set", "speed.channels_last=on"], "it is for image batches"),
        (["--set", "model.pretrained=true"], "needs model.checkpoint"),
    ):
        assert main([*BERT_ARGS, "--data-dir", str(tmp_path), *extra, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def test_the_checkpoint_field_keeps_existing_config_names() -> None:
    """``model.checkpoint`` (like ``worm.apply`` and ``search.rules``) came later: at its default it stays
    out of the hash, so a config hashes as it did before the field existed."""
    cfg = TrialConfig()
    assert not {"model.checkpoint", "worm.apply", "search.rules"} & ALWAYS_HASHED
    flat = {k: v for k, v in cfg.to_flat().items() if k in ALWAYS_HASHED}
    before = hashlib.sha256(json.dumps(dict(sorted(flat.items())), separators=(",", ":")).encode()).hexdigest()[:12]
    assert cfg.hash() == before
    assert cfg.replace({"worm.apply": "update"}).hash() != before
    assert cfg.replace({"search.rules": "reference"}).hash() != before
    bert = TrialConfig().replace({"model.arch": "bert", "data.dataset": "text"})
    assert bert.replace({"model.checkpoint": "bert-base-uncased"}).hash() != bert.hash()
