"""DNABERT-2 (a MosaicBERT) in pure PyTorch: ALiBi self-attention, gated-GELU MLP, post-layer norm.

Padded batches carry an attention mask: padding only ever sits in the key positions a real token ignores,
so a token's output does not depend on what else shares its batch. Attention runs through
`scaled_dot_product_attention` with the ALiBi + mask bias (CPU and GPU, no flash-attn or Triton needed).
Module and parameter names follow the official `BertForMaskedLM` so its state dict loads key for key.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neuro_caduceus.model.alibi import AlibiTable
from neuro_caduceus.model.dnabert2_config import DnaBert2Config

MASKED_BIAS = -10000.0  # the official additive bias of a padded key (exp underflows to 0 in fp32 and bf16)


class Embeddings(nn.Module):
    """Token + token-type (always type 0) embeddings, layer-normed; no position embeddings (ALiBi)."""

    def __init__(self, cfg: DnaBert2Config) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.word_embeddings(ids) + self.token_type_embeddings.weight[0])


class SelfAttention(nn.Module):
    """Packed q/k/v projection ((3, heads, head_dim) order), attention with an additive bias."""

    def __init__(self, cfg: DnaBert2Config) -> None:
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.Wqkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.Wqkv(x).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return out.transpose(1, 2).reshape(b, n, -1)


class SelfOutput(nn.Module):
    """Output projection, then post-layer norm of the residual sum."""

    def __init__(self, cfg: DnaBert2Config) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class Attention(nn.Module):
    def __init__(self, cfg: DnaBert2Config) -> None:
        super().__init__()
        self.self = SelfAttention(cfg)
        self.output = SelfOutput(cfg)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, bias), x)


class GatedMLP(nn.Module):
    """GELU(first half) * second half of one projection, down-projected, post-layer norm of the residual."""

    def __init__(self, cfg: DnaBert2Config) -> None:
        super().__init__()
        self.intermediate = cfg.intermediate_size
        self.gated_layers = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.wo = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.gated_layers(x).split(self.intermediate, dim=-1)
        return self.layernorm(self.wo(F.gelu(gate) * value) + x)


class Layer(nn.Module):
    def __init__(self, cfg: DnaBert2Config) -> None:
        super().__init__()
        self.attention = Attention(cfg)
        self.mlp = GatedMLP(cfg)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.attention(x, bias))


class Encoder(nn.Module):
    """The layer stack; builds the ALiBi + padding bias once per batch."""

    def __init__(self, cfg: DnaBert2Config) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_hidden_layers))
        self.alibi = AlibiTable(cfg.num_attention_heads, cfg.alibi_starting_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        key_bias = (1.0 - mask[:, None, None, :].float()) * MASKED_BIAS
        bias = self.alibi.bias(x.shape[1], x.device) + key_bias
        for layer in self.layer:
            x = layer(x, bias)
        return x * mask[..., None].to(x.dtype)  # padded positions are zeros, as in the official output


class BertModel(nn.Module):
    def __init__(self, cfg: DnaBert2Config) -> None:
        super().__init__()
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.embeddings(ids), mask)


class PredictionTransform(nn.Module):
    def __init__(self, cfg: DnaBert2Config) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(x)))


class LMPredictionHead(nn.Module):
    """Transform, then the decoder whose weight is the word embedding matrix (tied)."""

    def __init__(self, cfg: DnaBert2Config, embedding: nn.Parameter) -> None:
        super().__init__()
        self.transform = PredictionTransform(cfg)
        self.decoder = nn.Linear(cfg.hidden_size, cfg.vocab_size)
        self.decoder.weight = embedding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(x))


class MLMHead(nn.Module):
    def __init__(self, cfg: DnaBert2Config, embedding: nn.Parameter) -> None:
        super().__init__()
        self.predictions = LMPredictionHead(cfg, embedding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictions(x)


class DnaBert2ForMaskedLM(nn.Module):
    """The official masked-LM model: `hidden_states(ids, mask)` = last_hidden_state, `forward` = logits."""

    family = "dnabert2"
    checkpoint_sha256: str | None = None

    def __init__(self, cfg: DnaBert2Config) -> None:
        super().__init__()
        self.config = cfg
        self.bert = BertModel(cfg)
        self.cls = MLMHead(cfg, self.bert.embeddings.word_embeddings.weight)

    def tied_keys(self) -> dict[str, str]:
        """State-dict keys that alias another key's tensor (the decoder weight is the word embedding)."""
        return {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight"}

    def hidden_states(self, input_ids: torch.Tensor,
                      attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(b, L) token ids [+ (b, L) 1 = real, 0 = padding] -> (b, L, hidden); padded rows are zeros."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self.bert(input_ids, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.cls(self.hidden_states(input_ids, attention_mask))
