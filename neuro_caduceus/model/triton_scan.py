"""The selective scan as a Triton kernel: the CUDA path that needs no compile step (Triton ships with torch).

One program owns a block of channels of one batch row and walks the sequence in chunks of BLOCK_T
positions. Inside a chunk the recurrence s_t = a_t * s_{t-1} + u_t is an associative scan over
(a, u) pairs, (a1, u1) then (a2, u2) = (a1*a2, a2*u1 + u2), whose products are decays <= 1: no overflow
whatever the decay range. The carried state enters as s_t = h_t + (prod a) * s_in. Inputs may be fp32,
bf16 or fp16; they are read once and everything runs in fp32. D skip and the silu(z) gate are fused.
Importing this module needs triton; running the kernel needs a CUDA device, or TRITON_INTERPRET=1 set
before triton is first imported (how the tests run it on CPU).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_T, BLOCK_E = 32, 8


@triton.jit
def _combine(a1, u1, a2, u2):  # noqa: ANN001, ANN202 - triton-typed
    return a1 * a2, a2 * u1 + u2


@triton.jit
def _scan_kernel(x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, y_ptr, L, E, N,  # noqa: ANN001, ANN202
                 sx_b, sx_l, sd_b, sd_l, sB_b, sB_l, sC_b, sC_l, sz_b, sz_l, sy_b, sy_l,
                 HAS_Z: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_N: tl.constexpr):
    b = tl.program_id(0)
    e = tl.program_id(1) * BLOCK_E + tl.arange(0, BLOCK_E)
    n = tl.arange(0, BLOCK_N)
    r = tl.arange(0, BLOCK_T)
    e_ok, n_ok = e < E, n < N
    A = tl.load(A_ptr + e[:, None] * N + n[None, :], mask=e_ok[:, None] & n_ok[None, :], other=0.0)
    D = tl.load(D_ptr + e, mask=e_ok, other=0.0)
    s = tl.zeros((BLOCK_E, BLOCK_N), dtype=tl.float32)
    # time is the last (fastest) axis of every tile: the scan runs along axis 2 of (E, N, T)
    for t0 in range(0, L, BLOCK_T):
        t = t0 + r
        et = e_ok[:, None] & (t < L)[None, :]
        nt = n_ok[:, None] & (t < L)[None, :]
        x = tl.load(x_ptr + b * sx_b + e[:, None] + t[None, :] * sx_l, mask=et, other=0.0).to(tl.float32)
        # zero delta past the end: decay 1, input 0, so the carried state passes through unchanged
        dt = tl.load(dt_ptr + b * sd_b + e[:, None] + t[None, :] * sd_l, mask=et, other=0.0).to(tl.float32)
        Bt = tl.load(B_ptr + b * sB_b + n[:, None] + t[None, :] * sB_l, mask=nt, other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + b * sC_b + n[:, None] + t[None, :] * sC_l, mask=nt, other=0.0).to(tl.float32)
        a = tl.exp(dt[:, None, :] * A[:, :, None])
        u = (dt * x)[:, None, :] * Bt[None, :, :]
        a_cum, h = tl.associative_scan((a, u), 2, _combine)
        h = h + a_cum * s[:, :, None]
        y = tl.sum(h * Ct[None, :, :], axis=1) + D[:, None] * x
        if HAS_Z:
            z = tl.load(z_ptr + b * sz_b + e[:, None] + t[None, :] * sz_l, mask=et, other=0.0).to(tl.float32)
            y = y * (z / (1.0 + tl.exp(-z)))
        tl.store(y_ptr + b * sy_b + e[:, None] + t[None, :] * sy_l, y, mask=et)
        s = tl.sum(tl.where((r == BLOCK_T - 1)[None, None, :], h, 0.0), axis=2)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """A (b, L, k) view whose last axis is contiguous (views such as xz.chunk() halves pass as they are)."""
    return t if t.stride(-1) == 1 else t.contiguous()


def selective_scan_triton(x: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                          C: torch.Tensor, D: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
    """fp32 (b, L, E) scan output + D*x, times silu(z) when given (arguments: selective_scan_reference)."""
    x, delta, B, C = (_rows(t) for t in (x, delta, B, C))
    b, L, E = x.shape
    N = A.shape[1]
    A, D = A.float().contiguous(), D.float().contiguous()
    zz = x if z is None else _rows(z)
    y = torch.empty(b, L, E, device=x.device, dtype=torch.float32)
    grid = (b, triton.cdiv(E, BLOCK_E))
    _scan_kernel[grid](x, delta, A, B, C, D, zz, y, L, E, N,
                       x.stride(0), x.stride(1), delta.stride(0), delta.stride(1), B.stride(0), B.stride(1),
                       C.stride(0), C.stride(1), zz.stride(0), zz.stride(1), y.stride(0), y.stride(1),
                       HAS_Z=z is not None, BLOCK_T=BLOCK_T, BLOCK_E=BLOCK_E,
                       BLOCK_N=triton.next_power_of_2(N), num_warps=4)
    return y
