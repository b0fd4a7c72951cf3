"""Caduceus modules (PS = RC-equivariant RCPS, PH = plain); state_dict keys equal the official ones.

Semantics follow the official CaduceusForMaskedLM with its fused add-norm path: see docs/model.md.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from neuro_caduceus.model.buffers import Buffers, forward_buffers
from neuro_caduceus.model.config import CaduceusConfig
from neuro_caduceus.model.saving import save_pretrained
from neuro_caduceus.model.scan import causal_conv1d_silu, kernel, needs_grad, selective_scan, walks_backwards


def flip_lc(t: torch.Tensor) -> torch.Tensor:
    """Reverse length and channel axes (the reverse-complement action on an RC-equivariant half)."""
    return t.flip(dims=(-2, -1))


# Strand-folded layout of a PS tensor h (b, L, 2d): F = cat([h[..., :d], flip_lc(h[..., d:])], dim=0), i.e.
# (2b, L, d) with the reverse strand's half already in its own orientation. The mixer runs on F as is, the
# RC-equivariant norm is a plain norm of F's rows, and the block's half swap is S(F) = F viewed (2, b, L, d)
# and flipped on its half, length and channel axes: no per-layer cat or flip around the mixer.


def unfold(f: torch.Tensor) -> torch.Tensor:
    a, b = f.chunk(2, dim=0)
    return torch.cat([a, flip_lc(b)], dim=-1)


def swap_add_norm(norm: RMSNorm, hidden: torch.Tensor, residual: torch.Tensor | None,
                  out: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A folded PS block's entry: residual = S(hidden + residual) (S: the half swap), and its norm; the
    compiled kernel writes into `out` (residual, normed) when given."""
    fn = kernel("numba-swap-norm") if hidden.dtype == torch.float32 and not hidden.is_cuda else None
    if fn is not None:
        return fn(hidden, residual, norm.weight, norm.eps, *(out or ()))
    total = hidden if residual is None else hidden + residual
    res = total.unflatten(0, (2, -1)).flip(dims=(0, 2, 3)).flatten(0, 1)
    return res, norm(res)


def final_norm(norm: RMSNorm, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """The backbone's last norm of folded hidden + residual, unfolded to (b, L, 2d)."""
    fn = kernel("numba-final-norm") if hidden.dtype == torch.float32 and not hidden.is_cuda else None
    if fn is not None:
        return fn(hidden, residual, norm.weight, norm.eps)
    return unfold(norm(hidden + residual))


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * w, computed in fp32, returned in the input dtype."""

    def __init__(self, d: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()
        return out.to(x.dtype)


class Mamba(nn.Module):
    """Mamba-1 mixer, one direction; `mix` takes the in_proj output so a tied reverse pass can share it."""

    def __init__(self, cfg: CaduceusConfig, in_proj: nn.Linear | None = None,
                 out_proj: nn.Linear | None = None) -> None:
        super().__init__()
        d, e, r, n = cfg.d_model, cfg.d_inner, cfg.dt_rank_value, cfg.d_state
        self.in_proj = in_proj if in_proj is not None else nn.Linear(d, 2 * e, bias=cfg.bias)
        self.conv1d = nn.Conv1d(e, e, cfg.d_conv, groups=e, bias=cfg.conv_bias)  # weights only: see mix()
        self.x_proj = nn.Linear(e, r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(r, e, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, n + 1, dtype=torch.float32)).repeat(e, 1))
        self.D = nn.Parameter(torch.ones(e))
        self.out_proj = out_proj if out_proj is not None else nn.Linear(e, d, bias=cfg.bias)
        self.dt_rank, self.d_state = r, n

    def mix(self, xz: torch.Tensor, reverse: bool = False) -> torch.Tensor:
        """(b, L, 2E) in_proj output -> (b, L, E) gated scan output (before out_proj).

        reverse=True runs the mixer right to left (= flip(mix(flip(xz))) along L), without copies where the
        scan backend walks backwards natively.
        """
        if reverse and not walks_backwards(xz):
            return self.mix(xz.flip(1)).flip(1)
        x, z = xz.chunk(2, dim=-1)
        x = causal_conv1d_silu(x, self.conv1d.weight, self.conv1d.bias, reverse=reverse)
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        A = -torch.exp(self.A_log.float())
        y = selective_scan(x, dt, A, B, C, self.D, z=z, reverse=reverse, delta_bias=self.dt_proj.bias,
                           delta_softplus=True, delta_proj=self.dt_proj.weight)
        return y.to(xz.dtype)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.mix(self.in_proj(h)))


class BiMamba(nn.Module):
    """out = fwd(h) + flip_L(rev(flip_L(h))), in_proj/out_proj tied, so both are computed once."""

    def __init__(self, cfg: CaduceusConfig) -> None:
        super().__init__()
        self.mamba_fwd = Mamba(cfg)
        self.mamba_rev = Mamba(cfg, in_proj=self.mamba_fwd.in_proj, out_proj=self.mamba_fwd.out_proj)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        xz = self.mamba_fwd.in_proj(h)  # in_proj(flip(h)) == flip(in_proj(h)): linear per position
        y = self.mamba_fwd.mix(xz) + self.mamba_rev.mix(xz, reverse=True)
        out = self.mamba_fwd.out_proj(y)
        bias = self.mamba_fwd.out_proj.bias
        return out if bias is None else out + bias  # each direction adds the (shared) bias once

    def forward_compiled(self, h: torch.Tensor, buffers: Buffers) -> torch.Tensor:
        """forward() on the compiled CPU kernels (fp32, contiguous h), every activation written into
        `buffers`, nothing allocated per layer: both directions' convolutions in one pass over x; the
        backward direction's scan adds its output to the forward's before the gate, so both share one
        silu(z) ((u_f + u_r) * g, where forward() rounds u_f * g + u_r * g: within an ulp); out_proj runs
        padded to whole vectors (the same dot products; MKL may round differently at tiny batches).
        Returns a view of buffers' "hidden"."""
        rows, L, d = h.shape
        fwd, rev = self.mamba_fwd, self.mamba_rev
        e = fwd.D.shape[0]
        xz = _linear(h, fwd.in_proj, buffers.get("xz", rows, L, 2 * e))
        x, z = xz.chunk(2, dim=-1)
        y = buffers.get("y", rows, L, e)
        both = (buffers.get("conv", rows, L, e), buffers.get("conv_rev", rows, L, e))
        convs = kernel("numba-conv-both")(x, (fwd.conv1d.weight, fwd.conv1d.bias),
                                          (rev.conv1d.weight, rev.conv1d.bias), out=both)
        for mamba, reverse, conv in ((fwd, False, convs[0]), (rev, True, convs[1])):
            # x_proj's weight held as (in, out) rows: MKL runs this narrow (40-wide) product ~10% faster
            weight_t = buffers.get("x_proj_weight_t", e, mamba.x_proj.out_features)
            weight_t.copy_(mamba.x_proj.weight.t())  # rewritten each call: the weights may have changed
            dbc = _matmul(conv, weight_t.t(), None, buffers.get("dbc", rows, L, mamba.x_proj.out_features))
            dt, B, C = torch.split(dbc, [mamba.dt_rank, mamba.d_state, mamba.d_state], dim=-1)
            A = -torch.exp(mamba.A_log.float())
            kernel("numba")(conv, dt, A, B, C, mamba.D, z=z if reverse else None, reverse=reverse,
                            delta_bias=mamba.dt_proj.bias, delta_softplus=True,
                            delta_proj=mamba.dt_proj.weight, out=y, accumulate=reverse)
        # out_proj's d outputs padded to whole vectors: MKL runs d = 118 ~30% slower than 128 (the pad
        # columns are zero rows of the weight; the result is the view of the first d channels)
        padded = -(-d // 16) * 16
        weight = fwd.out_proj.weight
        bias = fwd.out_proj.bias
        if padded != d:
            weight = _padded_rows(weight, buffers.get("out_proj_weight", padded, e))
            bias = None if bias is None else _padded_rows(bias, buffers.get("out_proj_bias", padded))
        out = _matmul(y, weight, bias, buffers.get("hidden", rows, L, padded))[..., :d]
        return out if bias is None else out.add_(fwd.out_proj.bias)


def _padded_rows(t: torch.Tensor, into: torch.Tensor) -> torch.Tensor:
    """t's rows followed by zero rows, in `into` (rewritten each call: the weights may have changed)."""
    into[: t.shape[0]].copy_(t)
    into[t.shape[0]:].zero_()
    return into


def _linear(x: torch.Tensor, layer: nn.Linear, out: torch.Tensor) -> torch.Tensor:
    """layer(x) for (b, L, k) x into out (b, L, n): the one matmul F.linear runs on the flattened rows."""
    return _matmul(x, layer.weight, layer.bias, out)


def _matmul(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
            out: torch.Tensor) -> torch.Tensor:
    flat, target = x.reshape(-1, x.shape[-1]), out.view(-1, out.shape[-1])
    if bias is None:
        torch.mm(flat, weight.t(), out=target)
    else:
        torch.addmm(bias, flat, weight.t(), out=target)
    return out


class RCPSMixer(nn.Module):
    """cat(M(a), flipLC(M(flipLC(b)))) with one set of weights; both halves run as one batch."""

    def __init__(self, cfg: CaduceusConfig) -> None:
        super().__init__()
        self.submodule = BiMamba(cfg)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        d = h.shape[-1] // 2
        both = self.submodule(torch.cat([h[..., :d], flip_lc(h[..., d:])], dim=0))
        a, b = both.chunk(2, dim=0)
        return torch.cat([a, flip_lc(b)], dim=-1)


def rc_norm(norm: RMSNorm, h: torch.Tensor) -> torch.Tensor:
    """RC-equivariant norm of a 2d-wide tensor: the second half is normed channel-flipped."""
    d = h.shape[-1] // 2
    return torch.cat([norm(h[..., :d]), norm(h[..., d:].flip(-1)).flip(-1)], dim=-1)


class Block(nn.Module):
    """Prenorm block: residual = hidden + residual; hidden = mixer(norm(residual)).

    PS with fused add-norm (the checkpoints' path) first swaps the two halves of hidden and residual.
    """

    def __init__(self, cfg: CaduceusConfig) -> None:
        super().__init__()
        self.rcps, self.swap = cfg.rcps, cfg.rcps and cfg.fused_add_norm
        self.residual_in_fp32 = cfg.residual_in_fp32
        if cfg.rcps:  # registration order = official state_dict key order
            self.mixer: nn.Module = RCPSMixer(cfg)
            self.norm = RMSNorm(cfg.d_model, cfg.norm_epsilon)
        else:
            self.norm = RMSNorm(cfg.d_model, cfg.norm_epsilon)
            self.mixer = BiMamba(cfg)

    def forward(self, hidden: torch.Tensor,
                residual: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.swap:
            hidden = hidden.roll(hidden.shape[-1] // 2, dims=-1)
            residual = None if residual is None else residual.roll(residual.shape[-1] // 2, dims=-1)
        residual = hidden if residual is None else hidden + residual
        if self.residual_in_fp32:
            residual = residual.float()
        normed = rc_norm(self.norm, residual) if self.rcps else self.norm(residual)
        return self.mixer(normed.to(hidden.dtype)), residual


class RCPSEmbedding(nn.Module):
    """cat(E[x], flipLC(E[rc(x)])) = cat(E[x], flip_C(E[comp(x)]))."""

    def __init__(self, cfg: CaduceusConfig) -> None:
        super().__init__()
        self.register_buffer("complement_map", torch.tensor(cfg.complement_list(), dtype=torch.long))
        self.embedding = nn.Embedding(cfg.n_vocab_rows, cfg.d_model)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.embedding(ids), self.embedding(self.complement_map[ids]).flip(-1)], dim=-1)


class Embeddings(nn.Module):
    def __init__(self, cfg: CaduceusConfig) -> None:
        super().__init__()
        self.word_embeddings: nn.Module = (RCPSEmbedding(cfg) if cfg.rcps
                                           else nn.Embedding(cfg.n_vocab_rows, cfg.d_model))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.word_embeddings(ids)


class Backbone(nn.Module):
    def __init__(self, cfg: CaduceusConfig) -> None:
        super().__init__()
        self.rcps = cfg.rcps
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm_f = RMSNorm(cfg.d_model, cfg.norm_epsilon)

    def forward(self, ids: torch.Tensor, collect: list[torch.Tensor] | None = None) -> torch.Tensor:
        if self.folds(ids):
            return self.forward_folded(ids, collect)
        hidden, residual = self.embeddings(ids), None
        if collect is not None:
            collect.append(hidden)
        for layer in self.layers:
            hidden, residual = layer(hidden, residual)
            if collect is not None:
                collect.append(hidden)
        total = hidden + residual if residual is not None else hidden
        out = rc_norm(self.norm_f, total) if self.rcps else self.norm_f(total)
        return out.to(hidden.dtype)

    def folds(self, ids: torch.Tensor) -> bool:
        """Whether the forward runs strand-folded: a PS model with fused add-norm, fp32 weights, on CPU
        (in fp32, residual_in_fp32 changes nothing), without autograd (its kernels are forward-only)."""
        if not (self.rcps and not ids.is_cuda and len(self.layers) > 0 and self.layers[0].swap):
            return False
        weight = self.embeddings.word_embeddings.embedding.weight
        return (weight.dtype == torch.float32 and self.norm_f.weight.dtype == torch.float32
                and not needs_grad(weight))

    def forward_folded(self, ids: torch.Tensor, collect: list[torch.Tensor] | None = None) -> torch.Tensor:
        """The same forward strand-folded (layout above `unfold`): one pass per block entry, no cat/flip.
        On the compiled CPU kernels every layer writes into the thread's reused buffers (model.buffers)."""
        emb = self.embeddings.word_embeddings
        hidden = torch.cat([emb.embedding(ids), emb.embedding(emb.complement_map[ids.flip(-1)])], dim=0)
        if not walks_backwards(hidden) or kernel("numba-swap-norm") is None:
            return self.folded_layers(hidden, collect, None)
        with forward_buffers() as buffers:
            return self.folded_layers(hidden, collect, buffers)

    def folded_layers(self, hidden: torch.Tensor, collect: list[torch.Tensor] | None = None,
                      buffers: Buffers | None = None) -> torch.Tensor:
        """The blocks and final norm on strand-folded embeddings; with `buffers`, the compiled mixer writes
        into them (else each module's own forward, fresh tensors)."""
        residual = None
        if collect is not None:
            collect.append(unfold(hidden))
        for i, layer in enumerate(self.layers):
            out = None if buffers is None else (buffers.get(f"residual{i % 2}", *hidden.shape),
                                                buffers.get("normed", *hidden.shape))
            residual, normed = swap_add_norm(layer.norm, hidden, residual, out)
            mixer = layer.mixer.submodule
            hidden = mixer(normed) if buffers is None else mixer.forward_compiled(normed, buffers)
            if collect is not None:
                collect.append(unfold(hidden))
        if residual is None:
            return unfold(self.norm_f(hidden))
        return final_norm(self.norm_f, hidden, residual)


class Caduceus(nn.Module):
    def __init__(self, cfg: CaduceusConfig) -> None:
        super().__init__()
        self.backbone = Backbone(cfg)


class RCPSLMHead(nn.Module):
    """logits = a @ W^T + flip_C(b) @ W[complement]^T, W tied to the input embedding."""

    def __init__(self, cfg: CaduceusConfig, weight: nn.Parameter) -> None:
        super().__init__()
        self.register_buffer("complement_map", torch.tensor(cfg.complement_list(), dtype=torch.long))
        self.lm_head = nn.Linear(cfg.d_model, cfg.n_vocab_rows, bias=False)
        self.lm_head.weight = weight

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        d = h.shape[-1] // 2
        w = self.lm_head.weight
        return F.linear(h[..., :d], w) + F.linear(h[..., d:].flip(-1), w[self.complement_map])


class CaduceusForMaskedLM(nn.Module):
    """The official masked-LM model: `hidden_states(ids)` = last_hidden_state, `forward(ids)` = logits."""

    checkpoint_sha256: str | None = None

    def __init__(self, cfg: CaduceusConfig) -> None:
        super().__init__()
        self.config = cfg
        self.caduceus = Caduceus(cfg)
        emb = self.caduceus.backbone.embeddings.word_embeddings
        if cfg.rcps:
            self.lm_head: nn.Module = RCPSLMHead(cfg, emb.embedding.weight)
        else:
            self.lm_head = nn.Linear(cfg.d_model, cfg.n_vocab_rows, bias=False)
            if cfg.tie_word_embeddings:
                self.lm_head.weight = emb.weight

    def tied_keys(self) -> dict[str, str]:
        """state_dict keys that alias another key (absent from hub files) -> the key they alias."""
        out: dict[str, str] = {}
        for i in range(self.config.n_layer):
            pre = f"caduceus.backbone.layers.{i}.mixer." + ("submodule." if self.config.rcps else "")
            for p in ("in_proj.weight", "out_proj.weight"):
                out[pre + "mamba_rev." + p] = pre + "mamba_fwd." + p
            if self.config.bias:
                for p in ("in_proj.bias", "out_proj.bias"):
                    out[pre + "mamba_rev." + p] = pre + "mamba_fwd." + p
        if self.config.rcps:
            out["lm_head.lm_head.weight"] = "caduceus.backbone.embeddings.word_embeddings.embedding.weight"
        elif self.config.tie_word_embeddings:
            out["lm_head.weight"] = "caduceus.backbone.embeddings.word_embeddings.weight"
        return out

    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      collect: list[torch.Tensor] | None = None) -> torch.Tensor:
        """(b, L) int64 token ids -> last_hidden_state (b, L, 2*d_model for PS, d_model for PH).

        Caduceus has no attention mask: a mask is accepted only when it marks every position real.
        """
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            raise ValueError("Caduceus has no attention mask: batch only equal-length windows, unpadded")
        return self.caduceus.backbone(input_ids, collect)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.hidden_states(input_ids))

    def save_pretrained(self, out_dir: str | os.PathLike[str]) -> Path:
        """Write config.json + model.safetensors in the hub layout (see saving.save_pretrained)."""
        return save_pretrained(self, out_dir)
