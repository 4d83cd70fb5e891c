"""A BERT sequence classifier (Hugging Face ``transformers``, the ``[nlp]`` extra).

The caller seeds the global RNG before :func:`build_bert`, and the same seed gives the same weights.
"""

from __future__ import annotations

import torch
from torch import nn

from worm_tune.data.text import PAD, SPECIAL_TOKENS
from worm_tune.hub import from_hub
from worm_tune.models.base import ModelError

#: A BERT small enough to train on a CPU in a test (BERT-base: 768 hidden, 12 layers, 12 heads, 3072).
TINY_BERT: dict[str, int] = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
}


class BertClassifier(nn.Module):
    """A Hugging Face BERT classifier taking the engine's single input tensor and returning bare logits."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert  # this name is how other code finds the BERT self-attention modules

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [N, 2, L] long (token ids, token types) -> logits [N, classes]; id 0 is padding."""
        ids = x[:, 0]
        return self.bert(input_ids=ids, token_type_ids=x[:, 1], attention_mask=(ids != PAD).long()).logits


def build_bert(checkpoint: str, pretrained: bool, num_classes: int, vocab_size: int, max_length: int) -> BertClassifier:
    """A BERT sequence classifier: ``checkpoint``'s weights (``pretrained``), its architecture with random
    weights, or with no checkpoint :data:`TINY_BERT` sized to the word vocabulary.

    A checkpoint is a folder or a Hub name, read from the Hugging Face cache when it is there and only
    otherwise downloaded (``HF_HUB_OFFLINE=1`` forbids that). Eager attention: the plain matmul-softmax
    path, visible to module hooks and deterministic on GPUs too, where SDPA's fused backward kernels may
    not be. Float32 explicitly, since transformers 5 otherwise loads a checkpoint in its saved dtype.
    """
    from transformers import BertConfig, BertForSequenceClassification

    if pretrained and not checkpoint:
        raise ModelError("a pretrained BERT needs a checkpoint (a Hugging Face model name or folder); none was given")
    if not checkpoint:
        if vocab_size < len(SPECIAL_TOKENS):
            raise ModelError(f"vocab_size={vocab_size} cannot hold the {len(SPECIAL_TOKENS)} special tokens")
        config = BertConfig(
            vocab_size=vocab_size,
            max_position_embeddings=max(max_length, 32),
            num_labels=num_classes,
            attn_implementation="eager",
            **TINY_BERT,
        )
        return BertClassifier(BertForSequenceClassification(config))
    config = from_hub(BertConfig, checkpoint, True, ModelError, num_labels=num_classes, attn_implementation="eager")
    if config.vocab_size != vocab_size:
        raise ModelError(
            f"BERT checkpoint {checkpoint!r} has {config.vocab_size} token embeddings but the data was tokenized "
            f"with {vocab_size} token ids; tokenize with the same checkpoint (data and model must share it)"
        )
    if config.max_position_embeddings < max_length:
        raise ModelError(
            f"BERT checkpoint {checkpoint!r} holds {config.max_position_embeddings} positions, "
            f"fewer than the data's length {max_length}"
        )
    if not pretrained:
        return BertClassifier(BertForSequenceClassification(config))
    # A checkpoint with its own classifier head of another size gets a fresh head instead of an error.
    bert = from_hub(
        BertForSequenceClassification,
        checkpoint,
        True,
        ModelError,
        config=config,
        dtype=torch.float32,
        ignore_mismatched_sizes=True,
    )
    return BertClassifier(bert)
