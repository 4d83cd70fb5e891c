"""Text data and BERT: the word vocabulary and its exact encoding, every bad-input path, offline failures
that come at once, and a tiny BERT that is reproducible and learns. Nothing here touches the network."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from worm_tune.config import DataConfig
from worm_tune.data import DataBundle, DataError
from worm_tune.data.text import CLS, MAX_LENGTH, PAD, SEP, UNK, load_text
from worm_tune.models import ModelError
from worm_tune.models.bert import BertClassifier, build_bert

POSITIVE = ["good", "great", "fine", "happy", "excellent", "superb", "lovely", "bright"]
NEGATIVE = ["bad", "awful", "poor", "sad", "terrible", "dreadful", "dull", "grim"]
FILLER = ["the", "movie", "was", "plot", "and", "actors", "film", "really", "quite"]
QUICK_S = 5.0  # an offline failure must come this fast: no network round trips, no retries
#: A checkpoint's architecture, deliberately not TINY_BERT's.
CHECKPOINT_BERT = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """These models are tiny: a second thread gains nothing, and on a busy machine torch's threads spin-wait
    on each other, turning a millisecond matmul into tens."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _write(folder: Path, name: str, lines: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _sentiment(folder: Path, pairs: bool = False) -> Path:
    """60 train / 20 test sentences labelled by their one sentiment word (1: positive), with filler words
    around it; every word occurs in the training file. ``pairs``: a second sentence of filler only."""
    rng = random.Random(0)

    def sentence(i: int) -> str:
        words = [FILLER[i % len(FILLER)], *rng.choices(FILLER, k=rng.randint(1, 5))]
        words.insert(rng.randint(0, len(words)), (POSITIVE if i % 2 else NEGATIVE)[i // 2 % len(POSITIVE)])
        return " ".join(words)

    for name, size in (("train.tsv", 60), ("test.tsv", 20)):
        if pairs:
            rows = [f"{sentence(i)}\t{' '.join(rng.choices(FILLER, k=3))}\t{i % 2}" for i in range(size)]
        else:
            rows = [f"{sentence(i)}\t{i % 2}" for i in range(size)]
        _write(folder, name, ["sentence1\tsentence2\tlabel" if pairs else "sentence\tlabel", *rows])
    return folder


def _load(folder: Path, checkpoint: str = "") -> DataBundle:
    return load_text(DataConfig(dataset="text", data_dir=str(folder)), checkpoint)


def _tensors(bundle: DataBundle) -> tuple[torch.Tensor, torch.Tensor]:
    return bundle.train.images, bundle.train.targets


def _tiny(bundle: DataBundle, seed: int = 0) -> BertClassifier:
    torch.manual_seed(seed)
    return build_bert("", False, bundle.num_classes, bundle.vocab_size, bundle.input_shape[1])


def _one_line_error(error: type[Exception], call: Callable[..., object], *args: object) -> str:
    with pytest.raises(error) as info:
        call(*args)
    message = str(info.value)
    assert message and "\n" not in message
    return message


# -- the word vocabulary ------------------------------------------------------------------------


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """Train counts: the 3, cat 2, dog 2, a 1, sat 1 -> ids 4, 5, 6, 7, 8; 'zebra' is only in the test file.
    A blank line is skipped."""
    _write(tmp_path, "train.tsv", ["sentence\tlabel", "the cat sat\t0", "The dog, the CAT!\t1", "", "a dog\t1"])
    _write(tmp_path, "test.tsv", ["sentence\tlabel", "the zebra\t0"])
    return tmp_path


def test_word_encoding_is_exact(small: Path) -> None:
    bundle = _load(small)
    assert bundle.vocab_size == 9  # 4 special tokens + 5 training words
    assert bundle.num_classes == 2
    assert bundle.input_shape == (2, 6)  # the longest: [CLS] the dog the cat [SEP]
    assert bundle.input_dtype == torch.long and bundle.augment is None
    images, targets = _tensors(bundle)
    assert images.shape == (3, 2, 6) and images.dtype == torch.long
    assert images[0].tolist() == [[CLS, 4, 5, 8, SEP, PAD], [0, 0, 0, 0, 0, 0]]
    assert images[1, 0].tolist() == [CLS, 4, 6, 4, 5, SEP]
    assert images[2, 0].tolist() == [CLS, 7, 6, SEP, PAD, PAD]
    assert targets.tolist() == [0, 1, 1]
    x, y = bundle.test[0]
    assert x.tolist() == [[CLS, 4, UNK, SEP, PAD, PAD], [0] * 6]  # the vocabulary knows no test-only word
    assert y == 0


def test_sentence_pairs_get_token_types(tmp_path: Path) -> None:
    _write(tmp_path, "train.tsv", ["sentence1\tsentence2\tlabel", "the cat\ta dog\t1", "the\tthe\t0"])
    _write(tmp_path, "test.tsv", ["sentence1\tsentence2\tlabel", "cat\t\t0"])
    bundle = _load(tmp_path)
    assert bundle.input_shape == (2, 7)
    # Train counts: the 3, a 1, cat 1, dog 1 -> ids 4, 5, 6, 7.
    assert bundle.train[0][0].tolist() == [[CLS, 4, 6, SEP, 5, 7, SEP], [0, 0, 0, 0, 1, 1, 1]]
    assert bundle.test[0][0].tolist() == [[CLS, 6, SEP, SEP, PAD, PAD, PAD], [0, 0, 0, 1, 0, 0, 0]]


@pytest.mark.parametrize("pairs", [False, True])
def test_vocabulary_is_deterministic_and_from_train_only(tmp_path: Path, pairs: bool) -> None:
    folder = _sentiment(tmp_path / "a", pairs)
    first, again = _load(folder), _load(folder)
    assert torch.equal(first.train.images, again.train.images)
    assert torch.equal(first.test.images, again.test.images)
    assert first.num_classes == 2 and len(first.train) == 60 and len(first.test) == 20
    assert first.train.targets.tolist() == [i % 2 for i in range(60)]
    assert (first.train.images[:, 1] == 1).any() == pairs
    assert first.vocab_size == 4 + len(set(POSITIVE + NEGATIVE + FILLER))
    # A word only the test file holds changes neither the vocabulary nor the training encoding.
    other = _sentiment(tmp_path / "b", pairs)
    test_file = other / "test.tsv"
    test_file.write_text(test_file.read_text().replace("movie", "zebra"))
    changed = _load(other)
    assert changed.vocab_size == first.vocab_size
    assert torch.equal(changed.train.images, first.train.images)
    assert (changed.test.images[:, 0] == UNK).any() and not (first.test.images[:, 0] == UNK).any()


def test_long_examples_are_truncated_longest_first(tmp_path: Path) -> None:
    long_a, b = " ".join(["w"] * 200), " ".join(["v"] * 10)
    _write(tmp_path, "train.tsv", ["sentence1\tsentence2\tlabel", f"{long_a}\t{b}\t0", "w\tv\t1"])
    _write(tmp_path, "test.tsv", ["sentence1\tsentence2\tlabel", "w\tv\t0"])
    bundle = _load(tmp_path)
    assert bundle.input_shape == (2, MAX_LENGTH)
    ids, types = bundle.train[0][0]
    assert (ids != PAD).all() and ids[0] == CLS and ids[-1] == SEP
    assert (ids == SEP).sum() == 2
    assert types.sum() == 11  # the short segment and its [SEP] survive whole


# -- bad input ------------------------------------------------------------------------------------

HEADER = "sentence\tlabel"
GOOD = [HEADER, "a b\t0", "c\t1"]
BAD_FILES = {
    "missing train.tsv": ({"test.tsv": GOOD}, "train.tsv"),
    "missing test.tsv": ({"train.tsv": GOOD}, "test.tsv"),
    "bad header": ({"train.tsv": ["text\tlabel", "a\t0"], "test.tsv": GOOD}, "train.tsv"),
    "no header": ({"train.tsv": ["a\t0"], "test.tsv": GOOD}, "train.tsv"),
    "empty file": ({"train.tsv": [], "test.tsv": GOOD}, "train.tsv"),
    "header only": ({"train.tsv": [HEADER], "test.tsv": GOOD}, "train.tsv"),
    "non-integer label": ({"train.tsv": GOOD, "test.tsv": [HEADER, "a\tpositive"]}, "test.tsv line 2"),
    "negative label": ({"train.tsv": [HEADER, "a\t0", "b\t-1"], "test.tsv": GOOD}, "train.tsv line 3"),
    "too many fields": ({"train.tsv": [HEADER, "a\tb\t0"], "test.tsv": GOOD}, "train.tsv line 2"),
    "layouts differ": ({"train.tsv": GOOD, "test.tsv": ["sentence1\tsentence2\tlabel", "a\tb\t0"]}, "test.tsv"),
    "unseen test label": ({"train.tsv": GOOD, "test.tsv": [HEADER, "a\t0", "b\t2"]}, "test.tsv holds the label 2"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_files_give_one_line_errors(tmp_path: Path, case: str) -> None:
    files, named = BAD_FILES[case]
    for name, lines in files.items():
        _write(tmp_path, name, lines)
    assert named in _one_line_error(DataError, _load, tmp_path)


def test_missing_folder_and_unknown_dataset(tmp_path: Path) -> None:
    assert str(tmp_path / "absent") in _one_line_error(DataError, _load, tmp_path / "absent")
    assert "sst2" in _one_line_error(DataError, load_text, DataConfig(dataset="digits"), "")


def test_uncached_glue_fails_at_once_offline(tmp_path: Path) -> None:
    import datasets
    from huggingface_hub import constants

    flags = constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    start = time.perf_counter()
    message = _one_line_error(DataError, load_text, DataConfig(dataset="rte", data_dir=str(tmp_path)), "")
    assert time.perf_counter() - start < QUICK_S
    assert "rte" in message and str(tmp_path) in message and "data.download=true" in message
    assert flags == (constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE)  # offline only for that call


def test_glue_columns_splits_and_offline_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GLUE through a stand-in for ``datasets.load_dataset``: validation is the test split, the pair columns
    are read, and without ``download`` the call runs with the Hub refused."""
    import datasets
    from huggingface_hub import constants

    calls = []

    def fake(path: str, name: str, cache_dir: str) -> datasets.DatasetDict:
        calls.append((path, name, cache_dir, constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE))
        features = datasets.Features(
            {
                "sentence1": datasets.Value("string"),
                "sentence2": datasets.Value("string"),
                "label": datasets.ClassLabel(names=["no", "yes"]),
            }
        )
        rows = {
            "train": (["the cat", "a dog"], ["a dog", "the"], [1, 0]),
            "validation": (["the dog"], ["cat"], [1]),
            "test": (["hidden"], ["labels"], [-1]),
        }
        return datasets.DatasetDict(
            {
                split: datasets.Dataset.from_dict({"sentence1": a, "sentence2": b, "label": y}, features=features)
                for split, (a, b, y) in rows.items()
            }
        )

    monkeypatch.setattr(datasets, "load_dataset", fake)
    bundle = load_text(DataConfig(dataset="mrpc", data_dir=str(tmp_path)), "")
    assert calls == [("glue", "mrpc", str(tmp_path), True, True)]
    assert bundle.num_classes == 2 and len(bundle.train) == 2 and len(bundle.test) == 1
    # Train counts: a 2, dog 2, the 2, cat 1 -> ids 4, 5, 6, 7.
    x, y = bundle.test[0]
    assert x.tolist() == [[CLS, 6, 5, SEP, 7, SEP, PAD], [0, 0, 0, 0, 1, 1, 0]]
    assert y == 1
    load_text(DataConfig(dataset="mrpc", data_dir=str(tmp_path), download=True), "")
    assert calls[-1][3:] == (constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE) == (False, False)


def test_uncached_tokenizer_fails_at_once_offline(tmp_path: Path) -> None:
    start = time.perf_counter()
    message = _one_line_error(DataError, _load, _sentiment(tmp_path), "nobody/no-such-bert")
    assert time.perf_counter() - start < QUICK_S
    assert "nobody/no-such-bert" in message and "data.download=true" in message


# -- the model ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory: pytest.TempPathFactory) -> DataBundle:
    return _load(_sentiment(tmp_path_factory.mktemp("sentiment")))


def test_tiny_bert_forward_and_layout(sentiment: DataBundle) -> None:
    model = _tiny(sentiment).eval()
    x, _ = _tensors(sentiment)
    with torch.no_grad():
        logits = model(x[:5])
    assert logits.shape == (5, 2) and logits.dtype == torch.float32
    names = [name for name, _ in model.named_modules()]
    assert "bert.bert.encoder.layer.1.attention.self" in names
    assert model.bert.config.hidden_size == 64 and model.bert.config.num_hidden_layers == 2
    assert model.bert.config._attn_implementation == "eager"


def test_padding_is_masked(sentiment: DataBundle) -> None:
    """Extra padding must not change the logits: the model attends only to non-zero ids."""
    model = _tiny(sentiment).eval()
    x, _ = _tensors(sentiment)
    padded = torch.cat([x[:4], torch.zeros(4, 2, 5, dtype=torch.long)], dim=2)
    with torch.no_grad():
        torch.testing.assert_close(model(padded), model(x[:4]))


def test_same_seed_same_model_and_outputs(sentiment: DataBundle) -> None:
    x, _ = _tensors(sentiment)
    outputs = []
    for seed in (0, 0, 1):
        model = _tiny(sentiment, seed).train()  # train mode: dropout draws from the global RNG too
        torch.manual_seed(seed)
        outputs.append((model.state_dict(), model(x[:8])))
    (weights0, out0), (weights1, out1), (weights2, out2) = outputs
    assert all(torch.equal(weights0[k], weights1[k]) for k in weights0)
    assert torch.equal(out0, out1)
    assert not torch.equal(weights0["bert.classifier.weight"], weights2["bert.classifier.weight"])
    assert not torch.equal(out0, out2)


def test_training_reduces_the_loss(sentiment: DataBundle) -> None:
    model = _tiny(sentiment)
    x, y = _tensors(sentiment)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def loss() -> float:
        model.eval()
        with torch.no_grad():
            return F.cross_entropy(model(x), y).item()

    before = loss()
    torch.manual_seed(0)
    for step in range(20):
        model.train()
        batch = torch.arange(20) + 20 * (step % 3)
        optimizer.zero_grad()
        F.cross_entropy(model(x[batch]), y[batch]).backward()
        optimizer.step()
    after = loss()
    assert after < 0.5 * before, (before, after)


def test_pretrained_needs_a_checkpoint() -> None:
    _one_line_error(ModelError, build_bert, "", True, 2, 100, 16)


def test_unknown_checkpoint_fails_at_once_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``HF_HUB_OFFLINE=1`` does: huggingface_hub reads the variable once, at import, into this flag."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    message = _one_line_error(ModelError, build_bert, "nobody/no-such-bert", True, 2, 100, MAX_LENGTH)
    assert time.perf_counter() - start < QUICK_S
    assert "nobody/no-such-bert" in message and "internet" in message


def test_folder_checkpoint_round_trip(tmp_path: Path) -> None:
    """A checkpoint folder (what save_pretrained writes) serves both the tokenizer and the weights, offline."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    words = sorted(set(POSITIVE + NEGATIVE + FILLER))
    vocab = {token: i for i, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    checkpoint = tmp_path / "bert"
    BertTokenizer(vocab=vocab).save_pretrained(checkpoint)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), max_position_embeddings=MAX_LENGTH, num_labels=2, **CHECKPOINT_BERT)
    saved = BertForSequenceClassification(config)
    saved.save_pretrained(checkpoint)

    bundle = _load(_sentiment(tmp_path / "data"), str(checkpoint))
    assert bundle.input_shape == (2, MAX_LENGTH) and bundle.vocab_size == len(vocab)
    ids = bundle.train.images[0, 0]
    assert ids[0] == vocab["[CLS]"] and (ids == vocab["[SEP]"]).sum() == 1 and ids[-1] == PAD

    model = build_bert(str(checkpoint), True, 2, bundle.vocab_size, MAX_LENGTH)
    assert all(torch.equal(value, saved.state_dict()[key]) for key, value in model.bert.state_dict().items())
    assert model.bert.classifier.weight.dtype == torch.float32
    assert model(bundle.test.images[:3]).shape == (3, 2)
    random_init = build_bert(str(checkpoint), False, 3, bundle.vocab_size, MAX_LENGTH)
    assert random_init.bert.classifier.out_features == 3
    assert "token" in _one_line_error(ModelError, build_bert, str(checkpoint), True, 2, bundle.vocab_size + 1, 16)
