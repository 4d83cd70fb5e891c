"""Datasets for the trial engine: images (CIFAR-10/100, digits) and text (GLUE, a TSV folder).

:func:`load_data` is the one entry point; every loader returns a :class:`DataBundle`, and every
split and subset is fixed, independent of the trial seed.
"""

from __future__ import annotations

import dataclasses

from worm_tune.config import TEXT_DATASETS, DataConfig
from worm_tune.data.bundle import (
    DataBundle,
    DataError,
    TensorImageDataset,
    fingerprint,
    make_loaders,
    split_tensors,
    stratified_subset,
)
from worm_tune.data.images import load_cifar, load_digits
from worm_tune.data.text import load_text

__all__ = [
    "DataBundle",
    "DataError",
    "TensorImageDataset",
    "fingerprint",
    "load_data",
    "make_loaders",
    "split_tensors",
]


def load_data(cfg: DataConfig, tokenizer: str = "") -> DataBundle:
    """Load ``cfg.dataset`` (raising :class:`DataError` with a one-line fix when it cannot). Text
    is tokenised with the Hugging Face ``tokenizer`` named (a BERT checkpoint's), or, without one,
    a word vocabulary of the training split (:mod:`worm_tune.data.text`)."""
    if cfg.dataset in TEXT_DATASETS:
        bundle = load_text(cfg, tokenizer)
    elif cfg.dataset == "digits":
        bundle = load_digits(cfg)
    else:
        bundle = load_cifar(cfg)
    if cfg.train_subset:
        bundle = dataclasses.replace(
            bundle, train=stratified_subset(bundle.train, cfg.train_subset, bundle.num_classes)
        )
    return bundle
