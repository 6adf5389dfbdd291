"""Text encoders: prompt strings -> token embeddings T (B, T, d) at the decoder width.

- "builtin": works with no download. A word-level tokenizer that hashes words into a fixed
  vocabulary (CRC-32, stable across runs and machines, no vocabulary file), followed by a
  small transformer trained from scratch with the rest of the model.
- "labels": a closed vocabulary, for a fixed label set (most clinical projects): one learned
  token per label name. A prompt is a label ("nodule") or a canonical prompt
  ("nodule in chest CT"); anything else is a one-line error listing the labels. Training
  gives the model each item's target name (`targets=`), whatever its sentence says.
- any other name: a Hugging Face `transformers` encoder by hub name or local path (CLIP's
  text tower, BiomedBERT, ...). Its last hidden states are projected to the decoder width.
"""

from __future__ import annotations

import re
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")
PAD_ID = 0


@dataclass
class TextFeatures:
    """tokens (B, T, d) at the decoder width; padding (B, T) bool, True at padded slots."""

    tokens: Tensor
    padding: Tensor


def check_prompts(prompts: Sequence[str], *, what: str = "prompt") -> list[str]:
    """The one check of prompts, wherever they come from (model, Predictor, commands, web):
    a non-empty list or tuple of non-blank strings -> the list, each stripped. Errors name
    the prompt as `what` (e.g. "--prompt") and, of several, its number counted from 1."""
    if isinstance(prompts, str):
        raise TypeError(f"prompts must be a list of strings: write [{prompts!r}]")
    if not isinstance(prompts, list | tuple):
        raise TypeError(f"prompts must be a list of strings, got {type(prompts).__name__}")
    if not prompts:
        raise ValueError(f"no {what} given: give at least one, e.g. 'nodule in lung CT'")
    for i, p in enumerate(prompts):
        name = what if len(prompts) == 1 else f"{what} {i + 1} of {len(prompts)}"
        if not isinstance(p, str):
            raise TypeError(f"{name} is {type(p).__name__}, not a string")
        if not p.strip():
            raise ValueError(
                f"{name} is empty: describe the object to find, e.g. 'nodule in lung CT'")
    return [p.strip() for p in prompts]


def _warn_truncated(index: int, length: int, limit: int) -> None:
    warnings.warn(
        f"prompt {index} has {length} tokens; only the first {limit} are used", stacklevel=3
    )


class HashTokenizer:
    """Lower-cased words and punctuation, each hashed (CRC-32) to an id in [1, vocab_size)."""

    def __init__(self, vocab_size: int = 8192, max_tokens: int = 77) -> None:
        self.vocab_size = vocab_size
        self.max_tokens = max_tokens

    def tokenize(self, text: str) -> list[int]:
        words = _WORD.findall(text.lower())
        return [1 + zlib.crc32(w.encode()) % (self.vocab_size - 1) for w in words]

    def __call__(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """Return ids (B, T) and padding (B, T) bool, T the longest prompt (<= max_tokens)."""
        ids = []
        for i, p in enumerate(check_prompts(prompts)):
            toks = self.tokenize(p)
            if len(toks) > self.max_tokens:
                _warn_truncated(i, len(toks), self.max_tokens)
                toks = toks[: self.max_tokens]
            ids.append(toks)
        length = max(len(t) for t in ids)
        out = torch.full((len(ids), length), PAD_ID, dtype=torch.long)
        for i, t in enumerate(ids):
            out[i, : len(t)] = torch.tensor(t)
        return out, out == PAD_ID


class BuiltinTextEncoder(nn.Module):
    """HashTokenizer -> embedding + learned positions -> small pre-norm transformer."""

    def __init__(self, *, width: int, layers: int, vocab_size: int, max_tokens: int) -> None:
        super().__init__()
        self.tokenizer = HashTokenizer(vocab_size, max_tokens)
        self.embed = nn.Embedding(vocab_size, width, padding_idx=PAD_ID)
        self.pos = nn.Parameter(torch.randn(max_tokens, width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            width, max(1, width // 64), 4 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        # layers=0: the word embeddings (with positions) alone
        self.encoder = (nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
                        if layers > 0 else None)
        self.norm = nn.LayerNorm(width)
        self.width = width

    def forward(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """prompts (B strings) -> hidden (B, T, width), padding (B, T)."""
        ids, padding = self.tokenizer(prompts)
        ids, padding = ids.to(self.pos.device), padding.to(self.pos.device)
        x = self.embed(ids) + self.pos[: ids.shape[1]]
        if self.encoder is not None:
            x = self.encoder(x, src_key_padding_mask=padding)
        return self.norm(x), padding


def label_of_prompt(prompt: str, labels: tuple[str, ...] | list[str]) -> str | None:
    """The label a canonical prompt names: the label itself or `<label> in <site> <modality>`
    (the longest label that fits); None when none fits."""
    text = prompt.strip()
    fits = [t for t in labels if text == t or text.startswith(f"{t} in ")]
    return max(fits, key=len) if fits else None


class LabelTextEncoder(nn.Module):
    """One learned token per label of a closed vocabulary: (B,) labels -> (B, 1, width)."""

    def __init__(self, labels: tuple[str, ...] | list[str], *, width: int) -> None:
        super().__init__()
        if not labels:
            raise ValueError("text_encoder='labels' needs text_labels, the label names "
                             "(boltzformer train reads them from the training data)")
        self.labels = tuple(labels)
        self.index = {label: i for i, label in enumerate(self.labels)}
        self.embed = nn.Embedding(len(self.labels), width)
        self.norm = nn.LayerNorm(width)
        self.width = width

    def label_of(self, prompt: str) -> str:
        """The label a prompt names (see `label_of_prompt`); ValueError listing the labels
        otherwise."""
        label = label_of_prompt(prompt, self.labels)
        if label is None:
            raise ValueError(
                f"unknown label {prompt!r}: this model knows only the labels "
                f"{', '.join(self.labels)} (prompt with one of them, e.g. "
                f"'{self.labels[0]}')"
            )
        return label

    def forward(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        """prompts (B strings, labels or canonical prompts) -> (B, 1, width), padding (B, 1)."""
        ids = torch.tensor([self.index[self.label_of(p)] for p in check_prompts(prompts)],
                           device=self.embed.weight.device)
        hidden = self.norm(self.embed(ids))[:, None]
        return hidden, torch.zeros(hidden.shape[:2], dtype=torch.bool, device=hidden.device)


class HFTextEncoder(nn.Module):
    """A Hugging Face encoder by hub name or local path; returns its last hidden states."""

    def __init__(self, name_or_path: str, *, max_tokens: int) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer, CLIPTextModel

        try:
            cfg = AutoConfig.from_pretrained(name_or_path)
            self.tokenizer = AutoTokenizer.from_pretrained(name_or_path)
            model_cls = CLIPTextModel if cfg.model_type == "clip" else AutoModel
            self.model = model_cls.from_pretrained(name_or_path)
        except OSError as err:
            raise RuntimeError(
                f"could not load the text encoder {name_or_path!r} ({err}). Give a local "
                "folder holding a Hugging Face model and tokenizer, or a hub name on a machine "
                "with network access; text_encoder='builtin' needs neither."
            ) from err
        limit = getattr(self.tokenizer, "model_max_length", max_tokens) or max_tokens
        self.max_tokens = min(max_tokens, limit)
        self.width: int = self.model.config.hidden_size

    def forward(self, prompts: list[str]) -> tuple[Tensor, Tensor]:
        prompts = check_prompts(prompts)
        for i, ids in enumerate(self.tokenizer(prompts)["input_ids"]):
            if len(ids) > self.max_tokens:
                _warn_truncated(i, len(ids), self.max_tokens)
        batch = self.tokenizer(
            prompts, padding=True, truncation=True, max_length=self.max_tokens,
            return_tensors="pt",
        ).to(next(self.model.parameters()).device)
        hidden = self.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).last_hidden_state
        return hidden, batch["attention_mask"] == 0


#: The encoders `TextEncoder` wraps.
Encoder = BuiltinTextEncoder | LabelTextEncoder | HFTextEncoder


class TextEncoder(nn.Module):
    """An encoder plus a linear projection to the decoder width, optionally frozen."""

    @property
    def labels(self) -> tuple[str, ...] | None:
        """The closed vocabulary of a "labels" encoder; None for an open one."""
        return self.encoder.labels if isinstance(self.encoder, LabelTextEncoder) else None

    def __init__(self, encoder: Encoder, *, out_dim: int, trainable: bool = True) -> None:
        super().__init__()
        self.encoder = encoder
        self.proj = nn.Linear(encoder.width, out_dim)
        self.trainable = trainable
        if not trainable:
            self.encoder.requires_grad_(False)

    def train(self, mode: bool = True) -> TextEncoder:
        super().train(mode)
        if not self.trainable:
            self.encoder.eval()  # a frozen encoder stays in eval mode (no dropout)
        return self

    def forward(self, prompts: list[str]) -> TextFeatures:
        """prompts (B strings) -> TextFeatures(tokens (B, T, d), padding (B, T))."""
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            hidden, padding = self.encoder(prompts)
        return TextFeatures(tokens=self.proj(hidden), padding=padding)


def build_text_encoder(
    name: str, *, out_dim: int, trainable: bool, max_tokens: int, width: int, layers: int,
    vocab_size: int, labels: tuple[str, ...] = (),
) -> TextEncoder:
    """"builtin", "labels" (with `labels`) or a Hugging Face name/path -> TextEncoder
    projecting to `out_dim`."""
    if name == "labels":
        encoder: Encoder = LabelTextEncoder(labels, width=width)
    elif name == "builtin":
        encoder = BuiltinTextEncoder(
            width=width, layers=layers, vocab_size=vocab_size, max_tokens=max_tokens
        )
    else:
        encoder = HFTextEncoder(name, max_tokens=max_tokens)
    return TextEncoder(encoder, out_dim=out_dim, trainable=trainable)
