"""BERT's pretraining heads and the task heads it is fine-tuned with, each a small module on BertModel.

Pretraining (Devlin et al. 2018, section 3.1): a masked-language-model head that predicts hidden
wordpieces from their final vectors, and a next-sentence head that reads the pooled [CLS] vector.
Fine-tuning (section 4): sentence(-pair) classification on the pooled vector, token tagging on every
token vector, and span question answering as a start and an end score per token.

Checkpoint names are Hugging Face's (`cls.predictions.*`, `classifier`, `qa_outputs`, ...); the map
between them and the names here is HEAD_MAP in minibert/formats/names.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from minibert.config import BertConfig
from minibert.formats.names import head_map
from minibert.model import ACTIVATIONS
from minibert.relatives import model_class

IGNORE_INDEX = -100  # labels with this value add nothing to the loss (unmasked tokens, padding)


@dataclass
class MaskedLMOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor  # (B, L, V) a score for every vocabulary entry at every position


@dataclass
class NextSentencePredictorOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor  # (B, 2): index 0 "B follows A", index 1 "B is a random sentence"


@dataclass
class PreTrainingOutput:
    loss: torch.Tensor | None  # masked-LM loss + next-sentence loss
    prediction_logits: torch.Tensor  # (B, L, V)
    seq_relationship_logits: torch.Tensor  # (B, 2)


@dataclass
class SequenceClassifierOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor  # (B, num_labels)


@dataclass
class TokenClassifierOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor  # (B, L, num_labels)


@dataclass
class QuestionAnsweringOutput:
    loss: torch.Tensor | None
    start_logits: torch.Tensor  # (B, L) how likely each token starts the answer span
    end_logits: torch.Tensor  # (B, L) how likely each token ends it


class MaskedLMHead(nn.Module):
    """dense + activation + LayerNorm, then a projection onto the vocabulary that reuses the word
    embedding matrix (tied weights: the same (V, H) table reads tokens in and writes them out)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACTIVATIONS[config.hidden_act]
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))  # the output projection's own bias

    def forward(self, x, word_embeddings):
        x = self.norm(self.act(self.transform(x)))  # (B, L, H)
        return F.linear(x, word_embeddings, self.bias)  # (B, L, H) @ (V, H)^T -> (B, L, V)


class _Head(nn.Module):
    """What every head shares: the encoder, BERT's init for fresh weights, and loading / saving."""

    add_pooler = True  # heads that read pooler_output; the others leave the pooler out, as HF does

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        # BERT's relatives sit under the same name; their classifiers read the first token, not a pooler
        self.bert = model_class(config)(config, add_pooler=self.add_pooler and config.model_type == "bert")
        self.newly_initialized: list[str] = []  # checkpoint keys from_pretrained did not find

    def init_weights(self):
        for name, module in self.named_children():
            if name != "bert":  # the encoder initialised itself
                module.apply(self.bert._init_weights)
        return self

    def init_kwargs(self) -> dict:
        """Constructor arguments beyond the config, as save_pretrained records them."""
        return {}

    @classmethod
    def from_pretrained(cls, name_or_path, *, device=None, dtype=None, revision=None, local_files_only=False, **kwargs):
        """The encoder and whatever head weights the checkpoint has; head weights it lacks are newly
        initialised and listed in a warning (and in `model.newly_initialized`)."""
        from minibert.formats.checkpoint import load_head_model

        return load_head_model(
            cls,
            name_or_path,
            device=device,
            dtype=dtype,
            revision=revision,
            local_files_only=local_files_only,
            **kwargs,
        )

    def save_pretrained(self, directory) -> None:
        """`config.json` + `model.safetensors` that the `transformers` class of the same name loads."""
        from minibert.formats.checkpoint import save_head_model

        save_head_model(self, directory)


class BertForMaskedLM(_Head):
    add_pooler = False

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.mlm = MaskedLMHead(config)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None):
        h = self.bert(input_ids, attention_mask, token_type_ids, position_ids).last_hidden_state
        logits = self.mlm(h, self.bert.embeddings.word_embeddings.weight)  # (B, L, V)
        loss = None
        if labels is not None:  # (B, L): the original id at masked positions, IGNORE_INDEX elsewhere
            loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
        return MaskedLMOutput(loss, logits)


class BertForNextSentencePrediction(_Head):
    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.nsp = nn.Linear(config.hidden_size, 2)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None):
        pooled = self.bert(input_ids, attention_mask, token_type_ids, position_ids).pooler_output
        logits = self.nsp(pooled)  # (B, 2)
        loss = F.cross_entropy(logits, labels.flatten()) if labels is not None else None
        return NextSentencePredictorOutput(loss, logits)


class BertForPreTraining(_Head):
    """Both pretraining objectives at once, as BERT was trained."""

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.mlm = MaskedLMHead(config)
        self.nsp = nn.Linear(config.hidden_size, 2)
        self.init_weights()

    def forward(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        labels=None,
        next_sentence_label=None,
    ):
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids)
        prediction_logits = self.mlm(out.last_hidden_state, self.bert.embeddings.word_embeddings.weight)
        seq_relationship_logits = self.nsp(out.pooler_output)  # (B, 2)
        loss = None
        if labels is not None and next_sentence_label is not None:
            mlm_loss = F.cross_entropy(prediction_logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
            loss = mlm_loss + F.cross_entropy(seq_relationship_logits, next_sentence_label.flatten())
        return PreTrainingOutput(loss, prediction_logits, seq_relationship_logits)


class _LabelHead(_Head):
    """dropout -> linear onto num_labels scores, on the pooled vector or on every token vector."""

    def __init__(self, config: BertConfig, num_labels: int = 2):
        super().__init__(config)
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"num_labels must be a positive integer, got {num_labels!r}")
        self.num_labels = num_labels
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        self.init_weights()

    def init_kwargs(self):
        return {"num_labels": self.num_labels}


class FirstTokenClassifier(nn.Module):
    """The classification head of BERT's relatives, on the first token's vector (<s> or [CLS]) in place of
    BERT's pooler: dropout, dense, an activation, dropout, out_proj. tanh for RoBERTa's family and MPNet,
    GELU for ELECTRA, ReLU for DistilBERT (whose first dropout is absent: in eval the same)."""

    ACTIVATIONS = {"electra": F.gelu, "distilbert": F.relu}

    def __init__(self, config: BertConfig, num_labels: int):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = self.ACTIVATIONS.get(config.model_type, torch.tanh)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.out_proj = nn.Linear(config.hidden_size, num_labels)

    def forward(self, x):  # (B, H) -> (B, num_labels)
        return self.out_proj(self.dropout(self.act(self.dense(self.dropout(x)))))


class BertForSequenceClassification(_LabelHead):
    """pooled [CLS] -> dropout -> linear (for BERT's relatives: the first token's vector -> their
    FirstTokenClassifier). num_labels == 1 is regression (mean squared error); integer labels are
    single-label classification (cross-entropy); float labels of shape (B, num_labels) are multi-label
    (a sigmoid per label)."""

    def __init__(self, config: BertConfig, num_labels: int = 2):
        super().__init__(config, num_labels)
        if config.model_type != "bert":
            self.classifier = FirstTokenClassifier(config, num_labels)
            self.init_weights()

    def features(self, output):
        """What the classifier reads: the pooled [CLS] vector after dropout, or a relative's first token."""
        if isinstance(self.classifier, FirstTokenClassifier):
            return output.last_hidden_state[:, 0]  # (B, H)
        return self.dropout(output.pooler_output)  # (B, H)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None):
        output = self.bert(input_ids, attention_mask, token_type_ids, position_ids)
        logits = self.classifier(self.features(output))  # (B, num_labels)
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1), labels.float().flatten())
            elif labels.dtype in (torch.int64, torch.int32):
                loss = F.cross_entropy(logits, labels.flatten())
            else:
                loss = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
        return SequenceClassifierOutput(loss, logits)


class BertForTokenClassification(_LabelHead):
    """every token vector -> dropout -> linear: a label per token (named entities, parts of speech)."""

    add_pooler = False

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None, labels=None):
        h = self.bert(input_ids, attention_mask, token_type_ids, position_ids).last_hidden_state
        logits = self.classifier(self.dropout(h))  # (B, L, num_labels)
        loss = None
        if labels is not None:  # (B, L), IGNORE_INDEX at padding and continuation wordpieces
            loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
        return TokenClassifierOutput(loss, logits)


class BertForQuestionAnswering(_Head):
    """A start score and an end score for every token; the answer is the best-scoring span."""

    add_pooler = False

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.init_weights()

    def forward(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        start_positions=None,
        end_positions=None,
    ):
        h = self.bert(input_ids, attention_mask, token_type_ids, position_ids).last_hidden_state
        start_logits, end_logits = self.qa_outputs(h).unbind(-1)  # (B, L, 2) -> 2 x (B, L)
        loss = None
        if start_positions is not None and end_positions is not None:
            # A position outside the sequence (an answer cut off by truncation) is clamped to L, an
            # index no token has, and ignored.
            L = start_logits.shape[1]
            start = start_positions.flatten().clamp(0, L)
            end = end_positions.flatten().clamp(0, L)
            loss = (
                F.cross_entropy(start_logits, start, ignore_index=L) + F.cross_entropy(end_logits, end, ignore_index=L)
            ) / 2
        return QuestionAnsweringOutput(loss, start_logits, end_logits)


def masked_lm(name_or_path, **kwargs) -> BertForMaskedLM:
    """BertForMaskedLM.from_pretrained, refusing a checkpoint without the masked-LM head (cls.predictions.*),
    whose predictions would come from random weights."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # newly initialised head weights are refused just below
        model = BertForMaskedLM.from_pretrained(name_or_path, **kwargs)
    names = head_map(model.config.model_type)
    if any(names.get(name, "").startswith("mlm.") for name in model.newly_initialized):
        raise ValueError(
            f"{name_or_path} has no masked-language-model head ({', '.join(model.newly_initialized[:2])} missing); "
            "use a ...ForPreTraining or ...ForMaskedLM checkpoint"
        )
    return model


def fill_mask(model: BertForMaskedLM | BertForPreTraining, tokenizer, text: str, top_k: int = 5):
    """The `top_k` most likely wordpieces for each [MASK] in `text`, with their probabilities.

    One mask gives a list of {"token", "id", "score"} dicts, best first; several give one such list per
    mask, in text order.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a string, got {type(text).__name__}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    batch = tokenizer([text])
    device = next(model.parameters()).device
    positions = (batch["input_ids"][0] == tokenizer.mask_token_id).nonzero().flatten().tolist()
    if tokenizer.mask_token_id is None or not positions:
        raise ValueError(f"no [MASK] token in {text!r}")
    with torch.inference_mode():
        out = model(**{k: v.to(device) for k, v in batch.items()})
    logits = out.logits if hasattr(out, "logits") else out.prediction_logits
    results = []
    for position in positions:
        probs = logits[0, position].float().softmax(-1)  # (V,)
        scores, ids = probs.topk(min(top_k, probs.numel()))
        results.append(
            [
                {"token": tokenizer.backend.id_to_token(i), "id": i, "score": s}
                for s, i in zip(scores.tolist(), ids.tolist())
            ]
        )
    return results[0] if len(results) == 1 else results
