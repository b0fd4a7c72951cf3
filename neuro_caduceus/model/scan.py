"""Mamba-1 selective scan: an exact chunked pure-PyTorch version, a per-step reference, and the dispatch
to the compiled kernels (mamba-ssm or Triton on CUDA, numba on CPU).

Recurrence (per batch b, channel e, state n), all in fp32:
    s_t = exp(delta_t * A) * s_{t-1} + delta_t * B_t * x_t ;   y_t = <C_t, s_t> + D * x_t
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Callable, Collection, Iterator

import torch
import torch.nn.functional as F

ScanFn = Callable[..., torch.Tensor]

# Half of the largest within-chunk log-decay range for which P and 1/P (see selective_scan_chunked) stay
# far inside fp32 (e^60 ~ 1e26); a chunk beyond it uses the doubling scan instead.
_SAFE_LOG_RANGE = 60.0


def selective_scan_reference(x: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                             C: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """Straightforward per-position loop (the oracle). x, delta: (b, L, E); A: (E, N); B, C: (b, L, N)."""
    x, delta, B, C = (t.float().contiguous() for t in (x, delta, B, C))
    b, L, E = x.shape
    s = x.new_zeros(b, E, A.shape[1])
    ys = []
    for t in range(L):
        s = torch.exp(delta[:, t, :, None] * A) * s + (delta[:, t] * x[:, t])[:, :, None] * B[:, t, None, :]
        ys.append((s * C[:, t, None, :]).sum(-1))
    return torch.stack(ys, dim=1) + D.float() * x


def _doubling_chunk(a: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Hillis-Steele scan of s -> a*s + u along dim 1, s_{-1} = 0 (only products <= 1: always safe)."""
    T = a.shape[1]
    k = 1
    while k < T:
        u = torch.cat([u[:, :k], u[:, k:] + a[:, k:] * u[:, :-k]], dim=1)
        a = torch.cat([a[:, :k], a[:, k:] * a[:, :-k]], dim=1)
        k *= 2
    return u


def selective_scan_chunked(x: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                           C: torch.Tensor, D: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    """Exact chunked scan: O(chunk*E*N) working memory, a Python loop per chunk only (not per position).

    Within a chunk the cumulative log decay is cumsum(delta)*A (A is constant over time, so the cumsum is
    over (b, T, E) only, done for all chunks at once); with P_t = exp(rel_t) relative to the middle of the
    chunk's decay range, s_t = P_t * cumsum_s(u_s / P_s) where the carried state enters through u_0. A chunk
    whose decay range exceeds e^120 (P or 1/P could leave fp32's range) falls back to an overflow-free
    doubling scan. Each chunk costs about ten tensor ops, all in place on one (b, T, E, N) buffer.
    """
    x, delta, B, C = (t.float().contiguous() for t in (x, delta, B, C))
    A = A.float()
    b, L, E = x.shape
    n_chunks = -(-L // chunk)
    pad = n_chunks * chunk - L  # zero delta and input past the end: the padded positions change nothing

    def padded(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, 0, 0, pad)) if pad else t

    delta, w, B, C = padded(delta), padded(delta * x), padded(B), padded(C)
    cum = delta.view(b, n_chunks, chunk, E).cumsum(2)
    # log decay relative to the middle of each chunk's range: exponents lie in [-R/2, R/2]
    rel = (cum - (cum[:, :, :1] + cum[:, :, -1:]) * 0.5).view(b, -1, E)
    a_max = float((-A).max()) if A.numel() else 0.0
    wide = ((cum[:, :, -1] - cum[:, :, 0]).amax(dim=(0, 2)) * a_max > 2 * _SAFE_LOG_RANGE).tolist()
    y = x.new_empty(n_chunks, b, chunk, E, 1)  # chunk-major: each chunk's output is written in place
    # three (b, T, E, N) buffers reused by every chunk (fresh ones would cost a page-faulting allocation each)
    u, P, states = (x.new_empty(b, chunk, E, A.shape[1]) for _ in range(3))
    for c in range(n_chunks):
        t0, t1 = c * chunk, (c + 1) * chunk
        torch.mul(w[:, t0:t1, :, None], B[:, t0:t1, None, :], out=u)
        if c:  # the state carried in from the previous chunk (the last row of `states`)
            u[:, 0].addcmul_(torch.exp(delta[:, t0, :, None] * A), states[:, -1])
        if wide[c]:
            a = torch.exp(delta[:, t0:t1, :, None] * A)
            a[:, 0] = 0.0
            states.copy_(_doubling_chunk(a, u))
        else:
            torch.mul(rel[:, t0:t1, :, None], A, out=P).exp_()
            torch.cumsum(u.div_(P), dim=1, out=states).mul_(P)
        torch.matmul(states, C[:, t0:t1, :, None], out=y[c])
    return y.squeeze(-1).transpose(0, 1).reshape(b, -1, E)[:, :L] + D.float() * x


_KERNELS = {  # name -> (module, function); each is optional
    "mamba-ssm": ("mamba_ssm.ops.selective_scan_interface", "selective_scan_fn"),
    "triton": ("neuro_caduceus.model.triton_scan", "selective_scan_triton"),
    "numba": ("neuro_caduceus.model.cpu_scan", "selective_scan_numba"),
    "causal-conv1d": ("causal_conv1d", "causal_conv1d_fn"),  # the convolution's CUDA kernel
    "numba-conv": ("neuro_caduceus.model.cpu_scan", "causal_conv1d_silu_numba"),  # convolution + SiLU
    "numba-conv-both": ("neuro_caduceus.model.cpu_scan", "causal_conv1d_silu_both_numba"),  # both directions
    "numba-swap-norm": ("neuro_caduceus.model.cpu_scan", "swap_add_norm_numba"),  # PS block entry
    "numba-final-norm": ("neuro_caduceus.model.cpu_scan", "final_norm_numba"),  # PS final norm + unfold
}


@functools.cache
def _kernel(name: str) -> ScanFn | None:
    """The compiled kernel `name` of _KERNELS when it imports, else None.

    Any import failure (a missing wheel, an ABI mismatch, no triton or numba on a CPU-only install) means
    the caller falls back to the torch path, so it is not an error.
    """
    module, function = _KERNELS[name]
    try:
        return getattr(importlib.import_module(module), function)
    except Exception:  # noqa: BLE001 - see above
        return None


def pick_backend(device_type: str, available: Collection[str], needs_grad: bool = False) -> str:
    """Which scan runs, given the device type and the importable kernels ("mamba-ssm", "triton", "numba").

    CUDA: mamba-ssm first, then the Triton kernel, else the chunked torch scan. CPU: the numba scan, else
    the chunked torch scan. Inputs that need gradients never go to the forward-only Triton and numba
    kernels (which would detach them).
    """
    if device_type == "cuda":
        if "mamba-ssm" in available:
            return "mamba-ssm"
        return "triton" if "triton" in available and not needs_grad else "torch"
    return "numba" if "numba" in available and not needs_grad else "torch"


def available_backends(device_type: str) -> frozenset[str]:
    """The compiled scans importable for this device type (imports only what that device could use)."""
    kernels = ("mamba-ssm", "triton") if device_type == "cuda" else ("numba",)
    return frozenset(name for name in kernels if _kernel(name) is not None)


_forced: list[str] = []


@contextlib.contextmanager
def using_backend(name: str) -> Iterator[None]:
    """Force one backend ("mamba-ssm", "triton", "numba", "torch") inside the block (checks, benchmarks)."""
    if name not in ("mamba-ssm", "triton", "numba", "torch"):
        raise ValueError(f"unknown scan backend {name!r}: use mamba-ssm, triton, numba or torch")
    _forced.append(name)
    try:
        yield
    finally:
        _forced.pop()


def needs_grad(*tensors: torch.Tensor) -> bool:
    """Whether autograd records a computation on these tensors (the compiled kernels are forward-only)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def scan_backend(*tensors: torch.Tensor) -> str:
    """The backend `selective_scan` uses for these inputs (an override from using_scan aside)."""
    if _forced:
        return _forced[-1]
    device_type = tensors[0].device.type
    return pick_backend(device_type, available_backends(device_type), needs_grad(*tensors))


def causal_conv1d_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                       reverse: bool = False) -> torch.Tensor:
    """silu(depthwise causal conv) of x (b, L, E) with weight (E, 1, K): left padding K-1, no look-ahead.

    reverse=True convolves right to left (= flip(conv(flip(x))) along L, without the copies; CPU only).
    On CPU the K taps are K multiply-adds over shifted views in x's own (b, L, E) layout: no transposes,
    and a contiguous result for the projections and the scan that follow.
    """
    L, K = x.shape[1], weight.shape[-1]
    if not x.is_cuda and walks_backwards(x):
        return _kernel("numba-conv")(x, weight, bias, reverse=reverse)
    if x.is_cuda and reverse:
        return causal_conv1d_silu(x.flip(1), weight, bias).flip(1)
    if x.is_cuda and (fn := _kernel("causal-conv1d")) is not None:
        out = fn(x.transpose(1, 2).contiguous(), weight.squeeze(1), bias, activation="silu")
        return out.transpose(1, 2)
    if x.is_cuda:
        out = F.conv1d(x.transpose(1, 2), weight, bias, padding=K - 1, groups=weight.shape[0])[..., :L]
        return F.silu(out).transpose(1, 2)
    w = weight[:, 0, :].to(x.dtype)  # (E, K); tap K-1 multiplies the current position
    xp = F.pad(x, (0, 0, 0, K - 1) if reverse else (0, 0, K - 1, 0))
    shift = (lambda k: K - 1 - k) if reverse else (lambda k: k)  # where tap k's window starts in xp
    out = torch.mul(xp[:, shift(K - 1):shift(K - 1) + L], w[:, K - 1])
    if bias is not None:
        out += bias.to(x.dtype)
    for k in range(K - 1):
        out.addcmul_(xp[:, shift(k):shift(k) + L], w[:, k])
    return F.silu(out, inplace=True)


_override: list[ScanFn] = []


@contextlib.contextmanager
def using_scan(fn: ScanFn) -> Iterator[None]:
    """Run every model scan with `fn` inside the block (the benchmark compares against the reference)."""
    _override.append(fn)
    try:
        yield
    finally:
        _override.pop()


def kernel(name: str) -> ScanFn | None:
    """A compiled helper kernel of _KERNELS by name, or None where it does not import (callers fall back)."""
    return _kernel(name)


def walks_backwards(x: torch.Tensor) -> bool:
    """Whether selective_scan(..., reverse=True) and causal_conv1d_silu(..., reverse=True) run without
    flipping copies for inputs like x (the compiled CPU scan); otherwise callers flip once themselves."""
    return not _override and scan_backend(x) == "numba"


def selective_scan(x: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: torch.Tensor, z: torch.Tensor | None = None, reverse: bool = False,
                   delta_bias: torch.Tensor | None = None, delta_softplus: bool = False,
                   chunk: int = 32, delta_proj: torch.Tensor | None = None) -> torch.Tensor:
    """fp32 scan + D*x, times silu(z) when z is given; reverse=True scans right to left.

    delta_bias / delta_softplus as in mamba-ssm: delta := softplus(delta + delta_bias), in fp32. With
    delta_proj (E, R), delta is the low-rank (b, L, R) input and delta := delta @ delta_proj.T first (the
    numba kernel does this per position, the other backends as one matmul).

    Dispatch: an override (using_scan), else `scan_backend`: mamba-ssm's CUDA kernel, the Triton kernel,
    the numba CPU kernel, or the chunked torch scan.
    """
    backend = "override" if _override else scan_backend(x, delta, A, B, C, D)
    if backend == "numba":
        return _kernel("numba")(x, delta, A, B, C, D, z=z, reverse=reverse, delta_bias=delta_bias,
                                    delta_softplus=delta_softplus, delta_proj=delta_proj)
    if delta_proj is not None:
        delta = delta @ delta_proj.t()
    if delta_bias is not None:
        delta = delta.float() + delta_bias.float()
    if delta_softplus:
        delta = F.softplus(delta.float())
    if reverse:
        x, delta, B, C = (t.flip(1) for t in (x, delta, B, C))
        z = None if z is None else z.flip(1)
    if backend == "triton":
        y = _kernel("triton")(x, delta, A, B, C, D, z=z)
        return y.flip(1) if reverse else y
    if backend == "override":
        y = _override[-1](x, delta, A, B, C, D)
    elif backend == "mamba-ssm":
        xt, dt, Bt, Ct = (t.transpose(1, 2).float().contiguous() for t in (x, delta, B, C))
        y = _kernel("mamba-ssm")(xt, dt, A.float(), Bt, Ct, D.float()).transpose(1, 2).float()
    elif needs_grad(x, delta, A, B, C, D):
        y = selective_scan_reference(x, delta, A, B, C, D)  # differentiable (the chunked scan works in place)
    else:
        y = selective_scan_chunked(x, delta, A, B, C, D, chunk=chunk)
    if z is not None:
        y = y * F.silu(z.float())
    return y.flip(1) if reverse else y
