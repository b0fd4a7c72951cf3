"""The CPU selective scan compiled with numba: one pass, no (b, L, E, N) tensors, D skip and z gate fused.

Each (batch row, block of channels) is one parallel job that walks the sequence (forwards or backwards)
with its (N, block) state in L1 cache. Blocks are as wide as the threads allow (`block_width`): a wider
block gives the out-of-order core more independent channels per state row, which hides the decay
polynomial's latency (236 channels in one block run the d118 shape's scan ~1.6x faster than blocks of 64).
The inner loops run over channels of 1-D row views with non-negative loop counters, so they vectorize
(16 lanes with AVX-512) with plain loads: indexing a 3-D array with a computed channel index instead makes
LLVM emit wrap-around arithmetic and gathers, ~3x slower. x and z are read in place as channel slices of
the in_proj output (no copies). Every state is updated in the same order as the per-step reference (no
reassociation); only mul-add pairs are contracted to fused multiply-adds (one rounding fewer). The decay is
2^(delta * A * log2(e)) with a Cephes polynomial (max error ~1.7e-7) in plain float32 arithmetic so that it
vectorizes too; libm's scalar expf would cost ~8x more here.
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
_Q0, _Q1, _Q2 = _F(1.535336188319500e-4), _F(1.339887440266574e-3), _F(9.618437357674640e-3)
_Q3, _Q4, _Q5 = _F(5.550332471162809e-2), _F(2.402264791363012e-1), _F(6.931472028550421e-1)
_E2_LO, _E2_HI, _SHIFTER = _F(-126.0), _F(127.0), _F(12582912.0)  # 1.5 * 2^23
_STATE_BYTES = 16 * 1024  # a job's fp32 (N, block) state stays within half of a 32 KiB L1 data cache
_LANES = 16  # fp32 lanes of an AVX-512 register: blocks are multiples of it


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
def _exp2_32_nonpos(v):  # noqa: ANN001, ANN202 - numba-typed scalar
    """2^v of a float32 v <= 127 (a decay, v <= 0: delta >= 0 after softplus, A <= 0, needs no upper
    clamp): below -126, 2^-126 ~ 1e-38 stands for 0; n = round(v) by the 1.5 * 2^23 shifter, whose low
    bits then hold n for the exponent; p(f) on f = v - n in [-0.5, 0.5] (Cephes exp2f, max error
    ~1.7e-7). Straight-line float32 arithmetic: it vectorizes."""
    c = max(v, _E2_LO)
    k = c + _SHIFTER
    f = c - (k - _SHIFTER)
    p = (((((_Q0 * f + _Q1) * f + _Q2) * f + _Q3) * f + _Q4) * f + _Q5) * f + _ONE
    scale = np.int32((np.float32(k).view(np.int32) + np.int32(127)) << np.int32(23)).view(np.float32)
    return p * scale


@numba.njit(inline="always")
def _exp2_32(v):  # noqa: ANN001, ANN202 - numba-typed scalar
    """2^v of any float32 v: clamped to [-126, 127] (the same bits as clamping after the lower bound)."""
    return _exp2_32_nonpos(min(v, _E2_HI))


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


@numba.njit(parallel=True, cache=True, fastmath={"contract"})
def _conv_silu_kernel(x, c0, wT, bias, reverse, out):  # noqa: ANN001, ANN202
    """out[t] = silu(bias + sum_k wT[k] * x[t - (K-1) + k]) (reverse: x[t + (K-1) - k]), zero outside;
    x's channels are x[..., c0:c0 + E] (a channel slice of C-contiguous rows: vectorized loads). Rows whose
    K = 4 taps all lie inside take one fused pass (the checkpoints' d_conv); the sum's order is the same."""
    b, L, E = out.shape
    K = wT.shape[0]
    rows = 512
    n_blocks = (L + rows - 1) // rows
    step = -1 if reverse else 1
    for job in numba.prange(b * n_blocks):
        i, t0 = job // n_blocks, (job % n_blocks) * rows
        acc = np.empty(E, dtype=np.float32)
        for t in range(t0, min(t0 + rows, L)):
            o = out[i, t]
            first = t - step * (K - 1)  # the oldest tap's position
            if K == 4 and 0 <= first < L:
                r0, r1 = x[i, first, c0:c0 + E], x[i, first + step, c0:c0 + E]
                r2, r3 = x[i, first + 2 * step, c0:c0 + E], x[i, t, c0:c0 + E]
                w0, w1, w2, w3 = wT[0], wT[1], wT[2], wT[3]
                for e in range(E):
                    a = bias[e]
                    a += w0[e] * r0[e]
                    a += w1[e] * r1[e]
                    a += w2[e] * r2[e]
                    a += w3[e] * r3[e]
                    o[e] = a / (_ONE + _exp32(-a))
                continue
            for e in range(E):
                acc[e] = bias[e]
            for k in range(K):
                src = first + step * k
                if 0 <= src < L:
                    row, w = x[i, src, c0:c0 + E], wT[k]
                    for e in range(E):
                        acc[e] += w[e] * row[e]
            for e in range(E):
                o[e] = acc[e] / (_ONE + _exp32(-acc[e]))


@numba.njit(parallel=True, cache=True, fastmath={"contract"})
def _scan_kernel(x, xc, delta, dc, proj, dt_bias, softplus, At, B, bc, C, cc, D, z, zc, gate, reverse,  # noqa: ANN001, ANN202
                 block, accumulate, y):  # noqa: ANN001
    """accumulate: y += the output (y holds the other direction's), else y = it. x, z, B, C: channel
    slices [xc:xc + E], [zc:zc + E], [bc:bc + N], [cc:cc + N] of C-contiguous rows. Inner loops index
    1-D row views with non-negative loop counters, so they vectorize (no wrap-around index arithmetic, no
    gathers), over the block's channels padded to whole vectors in job-local arrays (pad lanes hold zero
    input and a zero state): no scalar remainder loop in the per-state loop.
    delta: channels [dc:dc + R] of its rows; with R > 0, delta_t = delta_t[dc:dc + R] @ proj (proj (R, E)),
    else (R = 0) delta's rows are the (b, L, E) delta itself."""
    b, L, E = y.shape
    N, R = At.shape[0], proj.shape[0]
    n_blocks = (E + block - 1) // block
    for job in numba.prange(b * n_blocks):
        i, e0 = job // n_blocks, (job % n_blocks) * block
        w = min(block, E - e0)
        wp = (w + _LANES - 1) // _LANES * _LANES  # padded lanes: every loop runs whole vectors
        s = np.zeros((N, wp), dtype=np.float32)
        dl = np.zeros(wp, dtype=np.float32)
        dx = np.empty(wp, dtype=np.float32)
        acc = np.empty(wp, dtype=np.float32)
        xl = np.zeros(wp, dtype=np.float32)
        a2 = np.zeros((N, wp), dtype=np.float32)
        pp = np.zeros((R, wp), dtype=np.float32)
        bias = np.zeros(wp, dtype=np.float32)
        for n in range(N):
            for e in range(w):
                a2[n, e] = At[n, e0 + e] * _LOG2E  # exp(d * a) = 2^(d * a * log2(e))
        for r in range(R):
            for e in range(w):
                pp[r, e] = proj[r, e0 + e]
        for e in range(w):
            bias[e] = dt_bias[e0 + e]
        d_skip = D[e0:e0 + w]
        decays = softplus and np.all(At <= _ZERO)
        for step in range(L):
            t = L - 1 - step if reverse else step
            xr = x[i, t, xc + e0:xc + e0 + w]
            for e in range(w):
                xl[e] = xr[e]
            if R:
                for e in range(wp):
                    dl[e] = _ZERO
                lr = delta[i, t, dc:dc + R]
                for r in range(R):
                    pr, lv = pp[r], lr[r]
                    for e in range(wp):
                        dl[e] += lv * pr[e]
            else:
                dr = delta[i, t, dc + e0:dc + e0 + w]
                for e in range(w):
                    dl[e] = dr[e]
                for e in range(w, wp):
                    dl[e] = _ZERO
            for e in range(wp):
                d = dl[e] + bias[e]
                dl[e] = _softplus32(d) if softplus else d
                dx[e] = dl[e] * xl[e]
                acc[e] = _ZERO
            bt, ct = B[i, t, bc:bc + N], C[i, t, cc:cc + N]
            if decays:
                for n in range(N):
                    bn, cn, sn, an = bt[n], ct[n], s[n], a2[n]
                    for e in range(wp):
                        sn[e] = _exp2_32_nonpos(dl[e] * an[e]) * sn[e] + dx[e] * bn
                        acc[e] += sn[e] * cn
            else:
                for n in range(N):
                    bn, cn, sn, an = bt[n], ct[n], s[n], a2[n]
                    for e in range(wp):
                        sn[e] = _exp2_32(dl[e] * an[e]) * sn[e] + dx[e] * bn
                        acc[e] += sn[e] * cn
            yr, zr = y[i, t, e0:e0 + w], z[i, t, zc + e0:zc + e0 + w]
            for e in range(w):
                out = acc[e] + d_skip[e] * xl[e]
                if gate:
                    out = out * (zr[e] / (_ONE + _exp32(-zr[e])))
                yr[e] = yr[e] + out if accumulate else out


def block_width(channels: int, rows: int, states: int, threads: int) -> int:
    """Channels per scan job: as few blocks per row as keep every thread busy (rows * blocks >= threads)
    and each job's state within _STATE_BYTES, in multiples of _LANES."""
    most = max(_LANES, _STATE_BYTES // (4 * max(1, states)) // _LANES * _LANES)
    blocks = max(-(-channels // most), -(-threads // max(1, rows)), 1)
    per_block = -(-channels // blocks)
    return min(most, -(-per_block // _LANES) * _LANES)


def _threads() -> int:
    """The kernels run on as many threads as torch does (one knob, `torch.set_num_threads`, e.g. an actor's
    CPUs; numba's own default would be every core of the machine); set per call, as numba's is per thread."""
    n = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    return n


def _rows(t: torch.Tensor) -> tuple[np.ndarray, int]:
    """A (b, L, E) fp32 tensor as C-contiguous (b, L, S) rows and the first of its E channels in them: a
    channel slice (x or z of the in_proj output) is read in place, anything else is copied once."""
    t = t.detach().float()
    b, L, E = t.shape
    s0, s1, s2 = t.stride()
    off = t.storage_offset()
    c0 = off % s1 if s1 else 0
    if (not t.is_contiguous() and s2 == 1 and s0 == L * s1 and c0 + E <= s1
            and (off - c0 + b * s0) * 4 <= t.untyped_storage().nbytes()):
        return torch.as_strided(t, (b, L, s1), (s0, s1, 1), off - c0).numpy(), c0
    return t.contiguous().numpy(), 0


def selective_scan_numba(x: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                         C: torch.Tensor, D: torch.Tensor, z: torch.Tensor | None = None,
                         reverse: bool = False, delta_bias: torch.Tensor | None = None,
                         delta_softplus: bool = False, delta_proj: torch.Tensor | None = None,
                         block: int | None = None, out: torch.Tensor | None = None,
                         accumulate: bool = False) -> torch.Tensor:
    """fp32 (b, L, E) scan output + D*x, times silu(z) when z is given; reverse walks from position L-1.

    Arguments as `selective_scan_reference` (CPU tensors, no autograd), with mamba-ssm's delta
    pre-processing: delta := softplus(delta + delta_bias) when delta_softplus; with delta_proj (E, R),
    delta is the low-rank (b, L, R) input and delta := delta @ delta_proj.T first, inside the kernel (no
    (b, L, E) delta tensor). reverse=True equals flip(scan(flip(inputs))) along L, without the copies.
    block: channels per parallel job (default `block_width`); the numbers do not depend on it.
    out: a contiguous fp32 (b, L, E) tensor to write into (returned); accumulate=True adds the result to
    what `out` holds (out + scan, the same sum as adding the two tensors).
    """
    xr, xc = _rows(x)
    zr, zc = (xr, xc) if z is None else _rows(z)
    dr, dc = _rows(delta)
    proj = (torch.zeros(0, x.shape[-1]) if delta_proj is None
            else delta_proj.detach().float().t().contiguous())
    At = A.detach().float().t().contiguous()
    bias = x.new_zeros(x.shape[-1]) if delta_bias is None else delta_bias.detach().float().contiguous()
    if accumulate and out is None:
        raise ValueError("accumulate=True needs out= (the tensor to add to)")
    y = torch.empty(x.shape, dtype=torch.float32) if out is None else _checked_out(out, x.shape)
    (Br, bc), (Cr, cc) = _rows(B), _rows(C)  # in place: B and C are channel slices of x_proj's output
    Df = D.detach().float().contiguous()
    block = block or block_width(x.shape[-1], x.shape[0], A.shape[-1], _threads())
    _scan_kernel(xr, xc, dr, dc, proj.numpy(), bias.numpy(), delta_softplus, At.numpy(), Br, bc, Cr, cc,
                 Df.numpy(), zr, zc, z is not None, reverse, block, accumulate, y.numpy())
    return y


def _checked_out(out: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """An output tensor the kernels can write through numpy: contiguous fp32 CPU of the expected shape."""
    if out.shape != shape or out.dtype != torch.float32 or out.is_cuda or not out.is_contiguous():
        raise ValueError(f"out= must be a contiguous float32 CPU tensor of shape {tuple(shape)}, "
                         f"got {out.dtype} {tuple(out.shape)}")
    return out


def causal_conv1d_silu_numba(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                             reverse: bool = False, out: torch.Tensor | None = None) -> torch.Tensor:
    """silu(depthwise causal conv) in one pass, as scan.causal_conv1d_silu (reverse: right to left), into
    `out` when given."""
    E = x.shape[-1]
    wT = weight.detach()[:, 0, :].float().t().contiguous()  # (K, E)
    b = x.new_zeros(E) if bias is None else bias.detach().float().contiguous()
    rows, c0 = _rows(x)
    out = torch.empty(x.shape, dtype=torch.float32) if out is None else _checked_out(out, x.shape)
    _threads()
    _conv_silu_kernel(rows, c0, wT.numpy(), b.numpy(), reverse, out.numpy())
    return out


@numba.njit(parallel=True, cache=True, fastmath={"contract"})
def _swap_add_norm_kernel(hidden, hc, residual, rc, has_residual, w, eps, res_out, normed):  # noqa: ANN001, ANN202
    """Strand-folded (2, b, L, d) tensors: res_out = S(hidden + residual), normed = rmsnorm(res_out) * w,
    where S takes row (h, j, t, c) from (1 - h, j, L-1-t, d-1-c) (the PS block's half swap). hidden and
    residual: channel slices [hc:hc + d], [rc:rc + d] of their rows."""
    _, b, L, _ = res_out.shape
    d = w.shape[0]
    for job in numba.prange(2 * b * L):
        h, rest = job // (b * L), job % (b * L)
        j, t = rest // L, rest % L
        src_h = hidden[1 - h, j, L - 1 - t, hc:hc + d]
        src_r = residual[1 - h, j, L - 1 - t, rc:rc + d]
        ro, no = res_out[h, j, t], normed[h, j, t]
        ss = _ZERO
        for c in range(d):
            v = src_h[d - 1 - c] + src_r[d - 1 - c] if has_residual else src_h[d - 1 - c]
            ro[c] = v
            ss += v * v
        r = _ONE / np.sqrt(ss / _F(d) + eps)
        for c in range(d):
            no[c] = ro[c] * r * w[c]


@numba.njit(parallel=True, cache=True, fastmath={"contract"})
def _final_norm_kernel(hidden, hc, residual, rc, w, eps, out):  # noqa: ANN001, ANN202
    """Strand-folded (2, b, L, d) hidden + residual (channel slices [hc:hc + d], [rc:rc + d] of their
    rows), normed with w, unfolded into out (b, L, 2d): out[j, t, :d] = half 0 at t, out[j, t, d:] = half 1
    at L-1-t with its channels reversed."""
    b, L = out.shape[0], out.shape[1]
    d = w.shape[0]
    for job in numba.prange(2 * b * L):
        h, rest = job // (b * L), job % (b * L)
        j, t = rest // L, rest % L
        hr, rr = hidden[h, j, t, hc:hc + d], residual[h, j, t, rc:rc + d]
        ss = _ZERO
        for c in range(d):
            v = hr[c] + rr[c]
            ss += v * v
        r = _ONE / np.sqrt(ss / _F(d) + eps)
        if h == 0:
            o = out[j, t, 0:d]
            for c in range(d):
                o[c] = (hr[c] + rr[c]) * r * w[c]
        else:
            o = out[j, L - 1 - t, d:2 * d]
            for c in range(d):
                o[d - 1 - c] = (hr[c] + rr[c]) * r * w[c]


def _halves(t: torch.Tensor) -> tuple[np.ndarray, int]:
    """A strand-folded (2b, L, d) fp32 tensor as (2, b, L, S) rows and its first channel in them (a channel
    slice of wider rows, e.g. a padded projection output, is read in place)."""
    rows, c0 = _rows(t)
    return rows.reshape(2, rows.shape[0] // 2, *rows.shape[1:]), c0


def swap_add_norm_numba(hidden: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor,
                        eps: float, res_out: torch.Tensor | None = None,
                        normed: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(residual, normed) of a strand-folded PS block's entry, as modules.swap_add_norm, in one pass;
    written into `res_out` and `normed` when given (neither may be `hidden` or `residual`)."""
    shape = tuple(hidden.shape)
    (hid, hc), (res, rc) = _halves(hidden), _halves(hidden if residual is None else residual)
    res_out = torch.empty(shape, dtype=torch.float32) if res_out is None else _checked_out(res_out, shape)
    normed = torch.empty(shape, dtype=torch.float32) if normed is None else _checked_out(normed, shape)
    view = (2, shape[0] // 2) + shape[1:]
    _threads()
    w = weight.detach().float().contiguous().numpy()
    _swap_add_norm_kernel(hid, hc, res, rc, residual is not None, w, _F(eps), res_out.view(view).numpy(),
                          normed.view(view).numpy())
    return res_out, normed


def final_norm_numba(hidden: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                     eps: float) -> torch.Tensor:
    """rmsnorm(hidden + residual) of strand-folded halves, unfolded to (b, L, 2d), as modules.final_norm."""
    (hid, hc), (res, rc) = _halves(hidden), _halves(residual)
    half, L, d = hidden.shape[0] // 2, hidden.shape[1], hidden.shape[2]
    out = torch.empty(half, L, 2 * d, dtype=torch.float32)
    _threads()
    _final_norm_kernel(hid, hc, res, rc, weight.detach().float().contiguous().numpy(), _F(eps), out.numpy())
    return out
