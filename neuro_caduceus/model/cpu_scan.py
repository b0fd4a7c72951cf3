"""The CPU selective scan compiled with numba: one pass, no (b, L, E, N) tensors, D skip and z gate fused.

Each (batch row, block of 64 channels) is one parallel job that walks the sequence (forwards or backwards)
with its (N, 64) state in L1 cache. The inner loop runs over channels, so it vectorizes without any
reassociation (fastmath stays off): every state is updated in the same order as the per-step reference.
exp is a Cephes-style polynomial (max error ~1.4 ulp, measured against float64) written in plain float32
arithmetic so that it vectorizes too; libm's scalar expf would cost ~8x more here.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

_F = np.float32
_LOG2E, _LN2_HI, _LN2_LO = _F(1.44269504088896341), _F(0.693359375), _F(-2.12194440e-4)
_P0, _P1, _P2 = _F(1.9875691500e-4), _F(1.3981999507e-3), _F(8.3334519073e-3)
_P3, _P4, _P5 = _F(4.1665795894e-2), _F(1.6666665459e-1), _F(5.0000001201e-1)
_LO, _HI, _HALF, _ONE, _ZERO = _F(-87.33654), _F(88.37626), _F(0.5), _F(1.0), _F(0.0)
_L0, _L1, _L2 = _F(7.0376836292e-2), _F(-1.1514610310e-1), _F(1.1676998740e-1)
_L3, _L4, _L5 = _F(-1.2420140846e-1), _F(1.4249322787e-1), _F(-1.6668057665e-1)
_L6, _L7, _L8 = _F(2.0000714765e-1), _F(-2.4999993993e-1), _F(3.3333331174e-1)
_SQRT2, _SOFTPLUS_THRESHOLD = _F(1.41421356), _F(20.0)
_BLOCK = 64  # channels per job: the (N, 64) fp32 state is 4 KiB for N = 16


@numba.njit(inline="always")
def _exp32(v):  # noqa: ANN001, ANN202 - numba-typed scalar
    """exp of a float32: 2^n * p(r) with r = v - n*ln2 (two-part ln2); 0 below exp's normal range."""
    c = min(max(v, _LO), _HI)
    n = np.floor(c * _LOG2E + _HALF)
    r = c - n * _LN2_HI
    r = r - n * _LN2_LO
    p = (((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5) * (r * r) + r + _ONE
    scale = np.int32((np.int32(n) + np.int32(127)) << np.int32(23)).view(np.float32)
    return p * scale if v >= _LO else _ZERO


@numba.njit(inline="always")
def _log32(w):  # noqa: ANN001, ANN202
    """log of a normal positive float32: exponent from the bits, Cephes polynomial on the mantissa."""
    bits = np.float32(w).view(np.int32)
    e = _F(((bits >> np.int32(23)) & np.int32(0xFF)) - np.int32(127))
    m = np.int32((bits & np.int32(0x7FFFFF)) | np.int32(0x3F800000)).view(np.float32)  # in [1, 2)
    if m > _SQRT2:
        m, e = m * _HALF, e + _ONE
    x = m - _ONE
    z = x * x
    y = ((((((((_L0 * x + _L1) * x + _L2) * x + _L3) * x + _L4) * x + _L5) * x + _L6) * x + _L7) * x + _L8)
    y = y * x * z + e * _LN2_LO - _HALF * z
    return x + y + e * _LN2_HI


@numba.njit(inline="always")
def _softplus32(v):  # noqa: ANN001, ANN202
    """torch's softplus: v above 20, else log1p(exp(v)) (log1p as log(w) * u / (w - 1), w = 1 + u)."""
    u = _exp32(min(v, _SOFTPLUS_THRESHOLD))
    w = _ONE + u
    lp = u if w == _ONE else _log32(w) * (u / (w - _ONE))
    return v if v > _SOFTPLUS_THRESHOLD else lp


@numba.njit(parallel=True, cache=True)
def _conv_silu_kernel(x, wT, bias, reverse, out):  # noqa: ANN001, ANN202
    """out[t] = silu(bias + sum_k wT[k] * x[t - (K-1) + k]) (reverse: x[t + (K-1) - k]), zero outside."""
    b, L, E = x.shape
    K = wT.shape[0]
    rows = 256
    n_blocks = (L + rows - 1) // rows
    for job in numba.prange(b * n_blocks):
        i, t0 = job // n_blocks, (job % n_blocks) * rows
        acc = np.empty(E, dtype=np.float32)
        for t in range(t0, min(t0 + rows, L)):
            for e in range(E):
                acc[e] = bias[e]
            for k in range(K):
                src = t + (K - 1) - k if reverse else t - (K - 1) + k
                if 0 <= src < L:
                    for e in range(E):
                        acc[e] += wT[k, e] * x[i, src, e]
            for e in range(E):
                out[i, t, e] = acc[e] / (_ONE + _exp32(-acc[e]))


@numba.njit(parallel=True, cache=True)
def _scan_kernel(x, delta, dt_bias, softplus, At, B, C, D, z, gate, reverse, y):  # noqa: ANN001, ANN202
    b, L, E = x.shape
    N = At.shape[0]
    n_blocks = (E + _BLOCK - 1) // _BLOCK
    for job in numba.prange(b * n_blocks):
        i, e0 = job // n_blocks, (job % n_blocks) * _BLOCK
        w = min(_BLOCK, E - e0)
        s = np.zeros((N, _BLOCK), dtype=np.float32)
        dl = np.empty(_BLOCK, dtype=np.float32)
        dx = np.empty(_BLOCK, dtype=np.float32)
        acc = np.empty(_BLOCK, dtype=np.float32)
        a_t = np.ascontiguousarray(At[:, e0:e0 + w])
        for step in range(L):
            t = L - 1 - step if reverse else step
            for e in range(w):
                d = delta[i, t, e0 + e] + dt_bias[e0 + e]
                dl[e] = _softplus32(d) if softplus else d
                dx[e] = dl[e] * x[i, t, e0 + e]
                acc[e] = _ZERO
            for n in range(N):
                bn, cn = B[i, t, n], C[i, t, n]
                for e in range(w):
                    s[n, e] = _exp32(dl[e] * a_t[n, e]) * s[n, e] + dx[e] * bn
                    acc[e] += s[n, e] * cn
            for e in range(w):
                out = acc[e] + D[e0 + e] * x[i, t, e0 + e]
                if gate:
                    zz = z[i, t, e0 + e]
                    out = out * (zz / (_ONE + _exp32(-zz)))
                y[i, t, e0 + e] = out


def selective_scan_numba(x: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                         C: torch.Tensor, D: torch.Tensor, z: torch.Tensor | None = None,
                         reverse: bool = False, delta_bias: torch.Tensor | None = None,
                         delta_softplus: bool = False) -> torch.Tensor:
    """fp32 (b, L, E) scan output + D*x, times silu(z) when z is given; reverse walks from position L-1.

    Arguments as `selective_scan_reference` (CPU tensors, no autograd), with mamba-ssm's delta
    pre-processing: delta := softplus(delta + delta_bias) when delta_softplus. reverse=True equals
    flip(scan(flip(inputs))) along L, without the copies.
    """
    x, delta = x.detach().float().contiguous(), delta.detach().float().contiguous()
    At = A.detach().float().t().contiguous()
    bias = x.new_zeros(x.shape[-1]) if delta_bias is None else delta_bias.detach().float().contiguous()
    zf = x if z is None else z.detach().float()
    y = torch.empty_like(x)
    Bf, Cf, Df = B.detach().float(), C.detach().float(), D.detach().float().contiguous()
    _scan_kernel(x.numpy(), delta.numpy(), bias.numpy(), delta_softplus, At.numpy(), Bf.numpy(), Cf.numpy(),
                 Df.numpy(), zf.numpy(), z is not None, reverse, y.numpy())
    return y


def causal_conv1d_silu_numba(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                             reverse: bool = False) -> torch.Tensor:
    """silu(depthwise causal conv) in one pass, as scan.causal_conv1d_silu (reverse: right to left)."""
    E = x.shape[-1]
    wT = weight.detach()[:, 0, :].float().t().contiguous()  # (K, E)
    b = x.new_zeros(E) if bias is None else bias.detach().float().contiguous()
    xf = x.detach().float()
    out = torch.empty(xf.shape, dtype=torch.float32)
    _conv_silu_kernel(xf.numpy(), wT.numpy(), b.numpy(), reverse, out.numpy())
    return out
