"""Text classification data: GLUE tasks or a local TSV folder, tokenised.

The engine feeds one input tensor per example, so a text example is a [2, L] long tensor:
row 0 the token ids, row 1 the token types, padded with id 0 (which the model masks out).
Nothing in the data depends on the trial seed.

``datasets`` and ``transformers`` are imported inside the functions that need them: importing
``transformers`` takes seconds, and image-only trials never need it.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch

from worm_tune.config import TEXT_DATASETS, DataConfig
from worm_tune.data.bundle import DataBundle, DataError, TensorImageDataset
from worm_tune.hub import from_hub, hub_offline
from worm_tune.usage import one_line

#: The text columns of each GLUE task; ``text`` takes its columns from its files' header (``_TSV_HEADERS``).
GLUE_COLUMNS: dict[str, tuple[str, ...]] = {
    "sst2": ("sentence",),
    "mrpc": ("sentence1", "sentence2"),
    "rte": ("sentence1", "sentence2"),
}


#: The sequence length GLUE fine-tuning uses; longer examples are truncated.
MAX_LENGTH = 128


#: The word vocabulary's special ids; BertClassifier treats id 0 as padding.
PAD, UNK, CLS, SEP = 0, 1, 2, 3
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


_TSV_HEADERS = (("sentence", "label"), ("sentence1", "sentence2", "label"))


_TSV_FORMAT = (
    "expected a tab-separated file with the header 'sentence<TAB>label' or "
    "'sentence1<TAB>sentence2<TAB>label' and integer labels 0..K-1"
)


_WORD = re.compile(r"[^\W_]+")  # runs of letters and digits: everything else separates words


class _Split(NamedTuple):
    segments: tuple[list[str], ...]  # one list of texts per column: one column, or two for sentence pairs
    labels: list[int]


def load_text(cfg: DataConfig, checkpoint: str) -> DataBundle:
    """Load text dataset ``cfg.dataset`` tokenized for BERT: by ``checkpoint``'s tokenizer, or when that is
    empty by a word vocabulary built from the training split (raising :class:`DataError` with a one-line fix)."""
    if cfg.dataset not in TEXT_DATASETS:
        raise DataError(f"data.dataset={cfg.dataset!r} is not a text dataset; use one of {', '.join(TEXT_DATASETS)}")
    if cfg.dataset == "text":
        train, test, num_classes = _load_tsv_folder(Path(cfg.data_dir).expanduser().resolve())
    else:
        train, test, num_classes = _load_glue(cfg)
    if checkpoint:
        (train_x, test_x), vocab_size = _tokenize_pretrained(checkpoint, cfg.download, (train, test))
    else:
        (train_x, test_x), vocab_size = _tokenize_words(train, test)
    return DataBundle(
        train=TensorImageDataset(train_x, torch.tensor(train.labels, dtype=torch.long), None),
        test=TensorImageDataset(test_x, torch.tensor(test.labels, dtype=torch.long), None),
        num_classes=num_classes,
        input_shape=tuple(train_x.shape[1:]),
        augment=None,
        input_dtype=torch.long,
        vocab_size=vocab_size,
    )


def _load_glue(cfg: DataConfig) -> tuple[_Split, _Split, int]:
    """A GLUE task from the Hub through ``datasets``, cached in ``data.data_dir``; its validation split is
    the held-out test split, since GLUE's test labels are hidden."""
    import datasets
    from datasets.exceptions import DatasetsError

    task, root = cfg.dataset, Path(cfg.data_dir).expanduser().resolve()
    try:
        with hub_offline(not cfg.download, datasets.config):
            glue = datasets.load_dataset("glue", task, cache_dir=str(root))
    except (OSError, ValueError, RuntimeError, DatasetsError) as exc:  # ConnectionError is an OSError
        if cfg.download:
            raise DataError(
                f"could not download GLUE {task} into {root} ({one_line(exc)}); "
                "check the network, or name a datasets cache that holds it with --set data.data_dir=DIR"
            ) from exc
        raise DataError(
            f"GLUE {task} is not in the datasets cache at {root} ({one_line(exc)}); "
            "cache it there with --set data.download=true on a machine with internet, "
            "or name a datasets cache that holds it with --set data.data_dir=DIR"
        ) from exc
    columns = GLUE_COLUMNS[task]
    splits = [
        _Split(tuple(list(glue[name][column]) for column in columns), [int(y) for y in glue[name]["label"]])
        for name in ("train", "validation")
    ]
    return splits[0], splits[1], glue["train"].features["label"].num_classes


def _load_tsv_folder(folder: Path) -> tuple[_Split, _Split, int]:
    """``train.tsv`` and ``test.tsv`` in ``folder``, in one of the two layouts of ``_TSV_HEADERS``."""
    if not folder.is_dir():
        raise DataError(
            f"text data folder {folder} does not exist; --set data.data_dir=DIR names the folder that holds "
            f"train.tsv and test.tsv ({_TSV_FORMAT})"
        )
    train, train_header = _read_tsv(folder / "train.tsv")
    test, test_header = _read_tsv(folder / "test.tsv")
    if test_header != train_header:
        raise DataError(
            f"{folder / 'test.tsv'} has the columns {'<TAB>'.join(test_header)} but train.tsv has "
            f"{'<TAB>'.join(train_header)}; both files need the same layout"
        )
    num_classes = max(train.labels) + 1
    if max(test.labels) >= num_classes:
        raise DataError(
            f"{folder / 'test.tsv'} holds the label {max(test.labels)}, above the largest label in train.tsv "
            f"({num_classes - 1}); both files need the same labels 0..K-1"
        )
    return train, test, num_classes


def _read_tsv(path: Path) -> tuple[_Split, tuple[str, ...]]:
    if not path.is_file():
        raise DataError(f"{path} does not exist; {_TSV_FORMAT}")
    try:
        with path.open(newline="", encoding="utf-8") as file:
            rows = list(csv.reader(file, delimiter="\t", quoting=csv.QUOTE_NONE))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} cannot be read as UTF-8 text ({one_line(exc)}); {_TSV_FORMAT}") from exc
    header = tuple(rows[0]) if rows else ()
    if header not in _TSV_HEADERS:
        raise DataError(f"{path} has the header {'<TAB>'.join(header)!r}; {_TSV_FORMAT}")
    segments: tuple[list[str], ...] = tuple([] for _ in header[:-1])
    labels = []
    for line, row in enumerate(rows[1:], start=2):
        if not row:  # a blank line
            continue
        if len(row) != len(header):
            raise DataError(f"{path} line {line}: {len(row)} fields where the header has {len(header)}; {_TSV_FORMAT}")
        try:
            label = int(row[-1])
        except ValueError:
            label = -1
        if label < 0:
            raise DataError(f"{path} line {line}: label {row[-1]!r} is not an integer >= 0; {_TSV_FORMAT}")
        for texts, text in zip(segments, row[:-1], strict=True):
            texts.append(text)
        labels.append(label)
    if not labels:
        raise DataError(f"{path} has a header but no examples; {_TSV_FORMAT}")
    return _Split(segments, labels), header


def _tokenize_words(train: _Split, test: _Split) -> tuple[tuple[torch.Tensor, torch.Tensor], int]:
    """Both splits as [N, 2, L] by a word vocabulary of the training split only (test-only words are [UNK]).

    Ids: the special tokens, then words by descending count, ties alphabetical, so the same training
    data always gives the same ids. L is the longest encoded example, at most MAX_LENGTH: a short
    dataset stays short, which keeps small CPU trials fast.
    """
    counts = Counter(word for texts in train.segments for text in texts for word in _words(text))
    words = sorted(counts, key=lambda word: (-counts[word], word))
    vocab = {word: i for i, word in enumerate(words, start=len(SPECIAL_TOKENS))}
    examples = [
        [
            [[vocab.get(word, UNK) for word in _words(text)] for text in example]
            for example in zip(*split.segments, strict=True)
        ]
        for split in (train, test)
    ]
    # Encoded: [CLS], the segments, one [SEP] after each.
    length = min(MAX_LENGTH, max(sum(map(len, example)) + len(example) + 1 for split in examples for example in split))
    train_x, test_x = (
        torch.stack([_encode(_truncate(example, length), length) for example in split]) for split in examples
    )
    return (train_x, test_x), len(SPECIAL_TOKENS) + len(words)


def _truncate(segments: list[list[int]], length: int) -> list[list[int]]:
    """Drop words from the end of the longest segment (the later one on ties) until the encoding fits
    ``length``: what Hugging Face tokenizers' ``longest_first`` truncation does."""
    segments = [list(segment) for segment in segments]
    budget = length - len(segments) - 1
    while sum(map(len, segments)) > budget:
        max(reversed(segments), key=len).pop()
    return segments


def _encode(segments: list[list[int]], length: int) -> torch.Tensor:
    """[2, length]: ``[CLS] a [SEP]`` or ``[CLS] a [SEP] b [SEP]`` padded with 0, over its token types
    (0 up to and including the first [SEP], 1 after it)."""
    ids, types = [CLS], [0]
    for segment_type, segment in enumerate(segments):
        ids += [*segment, SEP]
        types += [segment_type] * (len(segment) + 1)
    pad = [PAD] * (length - len(ids))
    return torch.tensor([ids + pad, types + pad], dtype=torch.long)


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _tokenize_pretrained(
    checkpoint: str, download: bool, splits: Sequence[_Split]
) -> tuple[tuple[torch.Tensor, ...], int]:
    """Every split as [N, 2, MAX_LENGTH] by ``checkpoint``'s tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = from_hub(AutoTokenizer, checkpoint, download, DataError)
    if tokenizer.pad_token_id != PAD:
        raise DataError(
            f"the tokenizer of {checkpoint!r} pads with id {tokenizer.pad_token_id}, but BertClassifier treats "
            f"id {PAD} as padding; use a BERT checkpoint"
        )
    tensors = []
    for split in splits:
        encoded = tokenizer(
            *split.segments,
            truncation=True,
            max_length=MAX_LENGTH,
            padding="max_length",
            return_token_type_ids=True,
            return_tensors="pt",
        )
        tensors.append(torch.stack([encoded["input_ids"], encoded["token_type_ids"]], dim=1).long())
    return tuple(tensors), len(tokenizer)
