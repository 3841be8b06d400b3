"""BERT's close relatives, each a small named delta on model.py's BertModel: the same embeddings, layers and
pooler, with their own rule for positions, embeddings of their own, and, for MPNet, a bias on the attention
scores. Which class a config builds is `model_class(config)`; the checkpoint names of each family are
minibert/formats/names.py's.

  RoBERTa, XLM-RoBERTa, CamemBERT (Liu et al. 2019, https://arxiv.org/abs/1907.11692): positions count
      from padding_idx + 1 over the real tokens, and padding sits at padding_idx (the pad id), so a text's
      positions do not depend on the padding around it, on either side. One token type. LayerNorm eps 1e-5 (config).
  MPNet (Song et al. 2020, https://arxiv.org/abs/2004.09297): RoBERTa's positions, no token types, and a
      T5-style relative-position bias (Raffel et al. 2019, section 2.1): the key's offset from the query
      falls into one of 32 buckets, exact for small offsets and logarithmic up to 128, and each head
      learns one bias per bucket, added to the scores of every layer.
  DistilBERT: BERT's positions, no token types, no pooler; its own weight names.
  ELECTRA (discriminator): BERT, no pooler, and embeddings embedding_size wide projected up to the layers.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn as nn

from minibert.config import PADDED_POSITIONS, BertConfig
from minibert.model import BertModel, Embeddings


class PaddedPositionsModel(BertModel):
    """RoBERTa's family: a real token's position is padding_idx + its index among the real tokens."""

    def positions(self, input_ids):
        pad, limit = self.config.pad_token_id, self.config.max_input_length
        if input_ids.shape[1] > limit:
            raise ValueError(
                f"sequence length {input_ids.shape[1]} exceeds this model's longest input {limit} "
                f"(max_position_embeddings {self.config.max_position_embeddings}, positions from pad id {pad} + 1)"
            )
        real = input_ids.ne(pad).int()  # (B, L)
        return (torch.cumsum(real, dim=1).type_as(real) * real).long() + pad  # (B, L): pad, or pad + 1, pad + 2, ...


class PositionsOnlyEmbeddings(Embeddings):
    """MPNet's and DistilBERT's embeddings: word + position, then LayerNorm; no token types."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        del self.token_type_embeddings

    def forward(self, input_ids, token_type_ids, position_ids):
        x = self.word_embeddings(input_ids) + self.position_embeddings(position_ids)  # (B, L, H)
        return self.dropout(self.norm(x))


def relative_position_bucket(relative: torch.Tensor, num_buckets: int = 32, max_distance: int = 128):
    """T5's buckets of (key position - query position), both directions: half the buckets for keys before
    the query, half after; in each half, offsets below a quarter of the buckets get a bucket each, larger
    ones share buckets spaced logarithmically up to `max_distance`, and farther ones the last bucket.
    The same float operations as transformers' MPNet, so every offset lands in the same bucket."""
    n = -relative
    half = num_buckets // 2
    bucket = (n < 0).to(torch.long) * half
    n = torch.abs(n)
    exact = half // 2
    large = exact + (torch.log(n.float() / exact) / math.log(max_distance / exact) * (half - exact)).to(torch.long)
    large = torch.min(large, torch.full_like(large, half - 1))
    return bucket + torch.where(n < exact, n, large)


class MPNetModel(PaddedPositionsModel):
    """BERT with MPNet's embeddings and a relative-position bias added to every layer's attention scores."""

    def __init__(self, config: BertConfig, add_pooler: bool = True, attention: str = "sdpa"):
        super().__init__(config, add_pooler, attention)
        self.embeddings = PositionsOnlyEmbeddings(config)
        # HF: encoder.relative_attention_bias: (buckets, N)
        self.relative_attention_bias = nn.Embedding(config.relative_attention_num_buckets, config.num_attention_heads)
        for module in (self.embeddings, self.relative_attention_bias):
            module.apply(self._init_weights)

    def scores_bias(self, attention_mask, x):
        L = x.shape[1]
        positions = torch.arange(L, device=x.device)
        relative = positions[None, :] - positions[:, None]  # (L, L): key position - query position
        buckets = relative_position_bucket(relative, self.config.relative_attention_num_buckets)
        bias = self.relative_attention_bias(buckets).permute(2, 0, 1).unsqueeze(0).to(x.dtype)  # (1, N, L, L)
        mask = super().scores_bias(attention_mask, x)  # (B, 1, 1, L) or None
        # where a key is not masked, the mask adds exactly 0: the scores get the bias alone, as transformers'
        return bias if mask is None else bias + mask  # (B, N, L, L)


class DistilBertModel(BertModel):
    """DistilBERT (Sanh et al. 2019, https://arxiv.org/abs/1910.01108): BERT's layers, half as many, with
    word + position embeddings only and no pooler."""

    def __init__(self, config: BertConfig, add_pooler: bool = False, attention: str = "sdpa"):
        super().__init__(config, add_pooler=False, attention=attention)
        self.embeddings = PositionsOnlyEmbeddings(config)
        self.embeddings.apply(self._init_weights)


class ProjectedEmbeddings(Embeddings):
    """ELECTRA's embeddings: BERT's, embedding_size wide, then a linear layer up to hidden_size."""

    def __init__(self, config: BertConfig):
        super().__init__(dataclasses.replace(config, hidden_size=config.embedding_size, num_attention_heads=1))
        # HF: embeddings_project
        self.project = nn.Linear(config.embedding_size, config.hidden_size)

    def forward(self, input_ids, token_type_ids, position_ids):
        return self.project(super().forward(input_ids, token_type_ids, position_ids))  # (B, L, E) -> (B, L, H)


class ElectraModel(BertModel):
    """ELECTRA's discriminator (Clark et al. 2020, https://arxiv.org/abs/2003.10555): BERT, with embeddings
    narrower than its layers where embedding_size says so, and no pooler."""

    def __init__(self, config: BertConfig, add_pooler: bool = False, attention: str = "sdpa"):
        super().__init__(config, add_pooler=False, attention=attention)
        if config.embedding_size is not None and config.embedding_size != config.hidden_size:
            self.embeddings = ProjectedEmbeddings(config)
            self.embeddings.apply(self._init_weights)


MODEL_CLASSES = {
    "bert": BertModel,
    **{family: PaddedPositionsModel for family in PADDED_POSITIONS},
    "mpnet": MPNetModel,
    "distilbert": DistilBertModel,
    "electra": ElectraModel,
}


def model_class(config: BertConfig) -> type[BertModel]:
    """The class that computes `config`'s family."""
    return MODEL_CLASSES[config.model_type]
