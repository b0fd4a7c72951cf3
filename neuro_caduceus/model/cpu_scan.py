"""The CPU selective scan compiled with numba: one pass, no (b, L, E, N) tensors, D skip and z gate fused.

Each (batch row, block of channels) is one parallel job that walks the sequence (forwards or backwards)
with its (N, block) state in L1 cache. Blocks are as wide as the threads allow (`block_width`): a wider
block gives the out-of-order core more independent channels per state row, which hides the decay
polynomial's latency (236 channels in one block run the d118 shape's scan ~1.6x faster than blocks of 64).
The inner loops run over channels of 1-D row views with non-negative loop counters, so they vectorize
(16 lanes with AVX-512) with plain loads: indexing a 3-D array with a computed signed channel index instead
makes LLVM emit wrap-around arithmetic and gathers, ~3x slower (an unsigned index avoids it too). x and z
are read in place as channel slices of the in_proj output (no copies); the next position's rows are
prefetched while one position computes. Every state is updated in the same order as the per-step
reference (no reassociation); only mul-add pairs are contracted to fused multiply-adds (one rounding
fewer). The decay is 2^(delta * A * log2(e)) with a Cephes polynomial (max error ~1.7e-7) in plain float32
arithmetic so that it vectorizes too (libm's scalar expf would cost ~8x more), its power of two added to
the exponent bits; the polynomials' constants are runtime values held in registers (`_CONSTANTS`).
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic
from numba.np.unsafe.ndarray import to_fixed_tuple

_F = np.float32
_ONE, _ZERO = _F(1.0), _F(0.0)
_SHIFTER = _F(12582912.0)  # 1.5 * 2^23: x + _SHIFTER rounds x to an integer held in the low mantissa bits
# The kernels' float constants reach them as a runtime array (`_CONSTANTS`) unpacked once per job into
# scalars, so they sit in registers: constants known at compile time become broadcast memory operands of
# the vector instructions (a load per use per vector), which made the per-state loop load-bound (~10%).
_EXP_CONSTANTS = (  # exp: log2(e), ln2 in two parts, Cephes expf polynomial, clamp, shifter, 1
    1.44269504088896341, 0.693359375, -2.12194440e-4,
    1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1,
    -86.6, 88.3, float(_SHIFTER), 1.0)
_EXP2_CONSTANTS = (  # 2^v: Cephes exp2f polynomial, clamp, shifter, 1
    1.535336188319500e-4, 1.339887440266574e-3, 9.618437357674640e-3, 5.550332471162809e-2,
    2.402264791363012e-1, 6.931472028550421e-1, -125.0, 127.0, float(_SHIFTER), 1.0)
_SOFTPLUS_CONSTANTS = (20.0, 2.0, 1.0) + tuple(1.0 / k for k in (3, 5, 7, 9, 11, 13, 15))  # threshold, atanh
_N_EXP, _N_EXP2, _N_SOFTPLUS = len(_EXP_CONSTANTS), len(_EXP2_CONSTANTS), len(_SOFTPLUS_CONSTANTS)
_CONSTANTS = np.array(_EXP_CONSTANTS + _EXP2_CONSTANTS + _SOFTPLUS_CONSTANTS, dtype=np.float32)
_LOG2E = _F(_EXP_CONSTANTS[0])
_STATE_BYTES = 16 * 1024  # a job's fp32 (N, block) state stays within half of a 32 KiB L1 data cache
_LANES = 16  # fp32 lanes of an AVX-512 register: blocks are multiples of it


@numba.njit(inline="always")
def _unpacked(k):  # noqa: ANN001, ANN202
    """_CONSTANTS as (exp, exp2, softplus) tuples of scalars."""
    return (to_fixed_tuple(k[:_N_EXP], _N_EXP), to_fixed_tuple(k[_N_EXP:_N_EXP + _N_EXP2], _N_EXP2),
            to_fixed_tuple(k[_N_EXP + _N_EXP2:], _N_SOFTPLUS))


@intrinsic
def _prefetch(typingctx, array, index):  # noqa: ANN001, ANN202, ARG001 - numba's intrinsic signature
    """Hint the CPU to fetch array[index]'s cache line (index: a tuple, one int per axis; LLVM's prefetch:
    no load, no fault, no wait). Rows a strided walk will need soon: the hardware prefetcher stops at
    each page, so rows wider than a few cache lines apart would otherwise arrive late."""
    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        ty, index_ty = signature.args
        data = context.make_array(ty)(context, builder, args[0])
        index = [context.cast(builder, value, value_ty, types.intp)
                 for value, value_ty in zip(cgutils.unpack_tuple(builder, args[1]), index_ty, strict=True)]
        pointer = cgutils.get_item_pointer(context, builder, ty, data, index, wraparound=False)
        i32 = ir.IntType(32)
        fn_type = ir.FunctionType(ir.VoidType(), [pointer.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fn_type, "llvm.prefetch.p0")
        builder.call(fn, [pointer, i32(0), i32(3), i32(1)])  # read, keep in all cache levels, data
        return context.get_dummy_value()
    return types.void(array, index), codegen


@numba.njit(inline="always")
def _times_2_to(p, k):  # noqa: ANN001, ANN202 - numba-typed scalars
    """p * 2^n for the integer n held in the low bits of k = n + 1.5 * 2^23: n added to p's exponent
    field (two integer ops, instead of building 2^n and multiplying). Exact while p * 2^n is normal:
    n >= -125 for p in [0.5, 2)."""
    bits = np.float32(p).view(np.int32) + (np.float32(k).view(np.int32) << np.int32(23))
    return np.int32(bits).view(np.float32)


@numba.njit(inline="always")
def _exp32(v, c):  # noqa: ANN001, ANN202 - numba-typed scalar, _EXP_CONSTANTS
    """exp of a float32: 2^n * p(r), n = round(v / ln2) by the shifter, r = v - n*ln2 (two-part ln2),
    Cephes polynomial (max error ~1.2e-7); 0 below -86.6 (exp < 2.4e-38), 2^127-ish above 88.3."""
    log2e, ln2_hi, ln2_lo, p0, p1, p2, p3, p4, p5, lo, hi, shifter, one = c
    x = min(max(v, lo), hi)
    k = x * log2e + shifter
    n = k - shifter
    r = x - n * ln2_hi
    r = r - n * ln2_lo
    p = (((((p0 * r + p1) * r + p2) * r + p3) * r + p4) * r + p5) * (r * r) + r + one
    return _times_2_to(p, k) if v >= lo else _ZERO


@numba.njit(inline="always")
def _exp2_32_nonpos(v, c):  # noqa: ANN001, ANN202 - numba-typed scalar, _EXP2_CONSTANTS
    """2^v of a float32 v <= 127 (a decay, v <= 0: delta >= 0 after softplus, A <= 0, needs no upper
    clamp): below -125, 2^-125 ~ 2e-38 stands for 0; n = round(v) by the shifter, whose low bits then
    hold n for the exponent; p(f) on f = v - n in [-0.5, 0.5] (Cephes exp2f, max error ~1.7e-7).
    Straight-line float32 arithmetic: it vectorizes."""
    q0, q1, q2, q3, q4, q5, lo, _, shifter, one = c
    x = max(v, lo)
    k = x + shifter
    f = x - (k - shifter)
    p = (((((q0 * f + q1) * f + q2) * f + q3) * f + q4) * f + q5) * f + one
    return _times_2_to(p, k)


@numba.njit(inline="always")
def _exp2_32(v, c):  # noqa: ANN001, ANN202 - numba-typed scalar, _EXP2_CONSTANTS
    """2^v of any float32 v: clamped to [-125, 127] (the same bits as clamping after the lower bound)."""
    return _exp2_32_nonpos(min(v, c[7]), c)


@numba.njit(inline="always")
def _update_states(exp2, c, dl, dx, bt, ct, states, acc):  # noqa: ANN001, ANN202 - numba-typed
    """One position's state update s_n = 2^(delta * a_n) * s_n + delta * x * B_n, and acc += s_n * C_n in
    the order of n (the per-step reference's sum). exp2 is compiled in (a decay needs no upper clamp).
    states: (even-n states, odd-n states, their rates a * log2(e)), two states a pass."""
    s_even, s_odd, a_even, a_odd = states
    N = bt.shape[0]
    for h in range(N // 2):
        b0, b1, k0, k1 = bt[2 * h], bt[2 * h + 1], ct[2 * h], ct[2 * h + 1]
        s0, s1, q0, q1 = s_even[h], s_odd[h], a_even[h], a_odd[h]
        for e in range(dl.shape[0]):
            u0 = exp2(dl[e] * q0[e], c) * s0[e] + dx[e] * b0
            u1 = exp2(dl[e] * q1[e], c) * s1[e] + dx[e] * b1
            s0[e] = u0
            s1[e] = u1
            acc[e] = (acc[e] + u0 * k0) + u1 * k1
    if N % 2:
        bn, cn, sn, an = bt[N - 1], ct[N - 1], s_even[N // 2], a_even[N // 2]
        for e in range(dl.shape[0]):
            sn[e] = exp2(dl[e] * an[e], c) * sn[e] + dx[e] * bn
            acc[e] += sn[e] * cn


@numba.njit(inline="always")
def _softplus32(v, c, ce):  # noqa: ANN001, ANN202 - numba-typed scalar, _SOFTPLUS_CONSTANTS, _EXP_CONSTANTS
    """torch's softplus: v above 20, else max(v, 0) + log1p(exp(-|v|)), log1p(u) = 2 atanh(u / (2 + u)) by
    its series (u <= 1, so s <= 1/3: seven terms reach 1e-8); max error ~2.8e-7 relative (torch's: 1.2e-7)."""
    threshold, two, one, a3, a5, a7, a9, a11, a13, a15 = c
    u = _exp32(-abs(v), ce)
    s = u / (two + u)
    q = s * s
    t = ((((((a15 * q + a13) * q + a11) * q + a9) * q + a7) * q + a5) * q + a3) * q
    return max(v, _ZERO) + (s + s) * (t + one) if v <= threshold else v


_CONV_ROWS = 512  # positions per parallel job of the convolutions


@numba.njit(inline="always")
def _conv_job(job, n_blocks, L, E, consts):  # noqa: ANN001, ANN202 - numba-typed
    """A convolution job's sequence i, its positions [t0, t1), an accumulator row and the exp constants."""
    i, t0 = job // n_blocks, (job % n_blocks) * _CONV_ROWS
    ce, _, _ = _unpacked(consts)
    return i, t0, min(t0 + _CONV_ROWS, L), np.empty(E, dtype=np.float32), ce


@numba.njit(inline="always")
def _conv_row(x, i, t, c0, wT, bias, step, o, acc, ce):  # noqa: ANN001, ANN202 - numba-typed
    """One output row o = silu(bias + sum_k wT[k] * x[i, first + step*k]) (first = t - step*(K-1)) by the
    general path: any K, taps outside the sequence left out (the edge rows)."""
    L, E, K = x.shape[1], o.shape[0], wT.shape[0]
    first = t - step * (K - 1)
    for e in range(E):
        acc[e] = bias[e]
    for k in range(K):
        src = first + step * k
        if 0 <= src < L:
            row, w = x[i, src, c0:c0 + E], wT[k]
            for e in range(E):
                acc[e] += w[e] * row[e]
    for e in range(E):
        o[e] = acc[e] / (ce[-1] + _exp32(-acc[e], ce))


@numba.njit(parallel=True, cache=True, fastmath={"contract"})
def _conv_silu_kernel(x, c0, wT, bias, reverse, out, consts):  # noqa: ANN001, ANN202
    """out[t] = silu(bias + sum_k wT[k] * x[t - (K-1) + k]) (reverse: x[t + (K-1) - k]), zero outside;
    x's channels are x[..., c0:c0 + E] (a channel slice of C-contiguous rows: vectorized loads). Rows whose
    K = 4 taps all lie inside take one fused pass (the checkpoints' d_conv); the sum's order is the same."""
    b, L, E = out.shape
    K = wT.shape[0]
    n_blocks = (L + _CONV_ROWS - 1) // _CONV_ROWS
    step = -1 if reverse else 1
    for job in numba.prange(b * n_blocks):
        i, t0, t1, acc, ce = _conv_job(job, n_blocks, L, E, consts)
        one = ce[-1]
        for t in range(t0, t1):
            first = t - step * (K - 1)  # the oldest tap's position
            ahead = t + 8 * step  # rows a few positions on start on their way (~20% faster: the rows
            if 0 <= ahead < L:  # are strided, so the hardware prefetcher stops at each page)
                for e in range(0, E, _LANES):
                    _prefetch(x, (i, ahead, c0 + e))
                    _prefetch(out, (i, ahead, e))
            if K == 4 and 0 <= first < L:  # rows indexed in place: no per-row views (~7% faster)
                second, third = first + step, first + 2 * step
                for e in range(E):
                    c = np.uint64(c0 + e)  # unsigned: no negative-index wrap-around to vectorize around
                    a = bias[e]
                    a += wT[0, e] * x[i, first, c]
                    a += wT[1, e] * x[i, second, c]
                    a += wT[2, e] * x[i, third, c]
                    a += wT[3, e] * x[i, t, c]
                    out[i, t, e] = a / (one + _exp32(-a, ce))
                continue
            _conv_row(x, i, t, c0, wT, bias, step, out[i, t], acc, ce)


@numba.njit(parallel=True, cache=True, fastmath={"contract"})
def _conv_silu_both_kernel(x, c0, wf, bf, wr, br, out_f, out_r, consts):  # noqa: ANN001, ANN202
    """out_f and out_r = the K = 4 convolution forwards and in reverse (as _conv_silu_kernel with reverse
    False and True, the same sums in the same order) from one read of x's rows: rows whose seven taps all
    lie inside in one pass, the edge rows by the general path."""
    b, L, E = out_f.shape
    n_blocks = (L + _CONV_ROWS - 1) // _CONV_ROWS
    for job in numba.prange(b * n_blocks):
        i, t0, t1, acc, ce = _conv_job(job, n_blocks, L, E, consts)
        one = ce[-1]
        for t in range(t0, t1):
            if t + 11 < L:  # as the one-direction kernel: rows eight positions on start on their way
                for e in range(0, E, _LANES):
                    _prefetch(x, (i, t + 11, c0 + e))
                    _prefetch(out_f, (i, t + 8, e))
                    _prefetch(out_r, (i, t + 8, e))
            if 3 <= t < L - 3:
                for e in range(E):
                    c = np.uint64(c0 + e)
                    here = x[i, t, c]
                    a = bf[e]
                    a += wf[0, e] * x[i, t - 3, c]
                    a += wf[1, e] * x[i, t - 2, c]
                    a += wf[2, e] * x[i, t - 1, c]
                    a += wf[3, e] * here
                    out_f[i, t, e] = a / (one + _exp32(-a, ce))
                    r = br[e]
                    r += wr[0, e] * x[i, t + 3, c]
                    r += wr[1, e] * x[i, t + 2, c]
                    r += wr[2, e] * x[i, t + 1, c]
                    r += wr[3, e] * here
                    out_r[i, t, e] = r / (one + _exp32(-r, ce))
                continue
            _conv_row(x, i, t, c0, wf, bf, 1, out_f[i, t], acc, ce)
            _conv_row(x, i, t, c0, wr, br, -1, out_r[i, t], acc, ce)


@numba.njit(parallel=True, cache=True, fastmath={"contract"})
def _scan_kernel(x, xc, delta, dc, proj, dt_bias, softplus, At, B, bc, C, cc, D, z, zc, gate, reverse,  # noqa: ANN001, ANN202
                 block, accumulate, y, consts):  # noqa: ANN001
    """accumulate: y = gate(y + the output) (y holds the other direction's, ungated), else y = gate(the
    output). x, z, B, C: channel slices [xc:xc + E], [zc:zc + E], [bc:bc + N], [cc:cc + N] of C-contiguous
    rows. Inner loops index
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
        # the states in two arrays, of even and of odd n, so that one pass updates a pair (one load and
        # store of acc per two states): LLVM vectorizes a loop that stores to two state rows only when they
        # are separate allocations (two rows of one array lie an unknown distance apart)
        half = (N + 1) // 2
        s_even, s_odd = np.zeros((half, wp), dtype=np.float32), np.zeros((half, wp), dtype=np.float32)
        a_even, a_odd = np.zeros((half, wp), dtype=np.float32), np.zeros((half, wp), dtype=np.float32)
        dl = np.zeros(wp, dtype=np.float32)
        dx = np.empty(wp, dtype=np.float32)
        acc = np.empty(wp, dtype=np.float32)
        xl = np.zeros(wp, dtype=np.float32)
        pp = np.zeros((R, wp), dtype=np.float32)
        bias = np.zeros(wp, dtype=np.float32)
        for n in range(N):
            an = a_even[n // 2] if n % 2 == 0 else a_odd[n // 2]
            for e in range(w):
                an[e] = At[n, e0 + e] * _LOG2E  # exp(d * a) = 2^(d * a * log2(e))
        for r in range(R):
            for e in range(w):
                pp[r, e] = proj[r, e0 + e]
        for e in range(w):
            bias[e] = dt_bias[e0 + e]
        d_skip = D[e0:e0 + w]
        decays = softplus and np.all(At <= _ZERO)
        ce, c2, cs = _unpacked(consts)
        one = ce[-1]
        for step in range(L):
            t = L - 1 - step if reverse else step
            if step + 1 < L:  # the next position's rows start on their way to the cache
                tn = t - 1 if reverse else t + 1
                for e in range(0, w, _LANES):
                    _prefetch(x, (i, tn, xc + e0 + e))
                    _prefetch(z, (i, tn, zc + e0 + e))
                    _prefetch(y, (i, tn, e0 + e))
                _prefetch(delta, (i, tn, dc))
                _prefetch(B, (i, tn, bc))
                _prefetch(C, (i, tn, cc + N - 1))
            xr = x[i, t, xc + e0:xc + e0 + w]
            for e in range(w):
                xl[e] = xr[e]
            if R:
                for e in range(wp):
                    dl[e] = _ZERO
                lr = delta[i, t, dc:dc + R]
                r4 = R - R % 4
                for r in range(0, r4, 4):  # four rows a pass: one store of dl per four mul-adds
                    p0, p1, p2, p3 = pp[r], pp[r + 1], pp[r + 2], pp[r + 3]
                    l0, l1, l2, l3 = lr[r], lr[r + 1], lr[r + 2], lr[r + 3]
                    for e in range(wp):
                        dl[e] = (((dl[e] + l0 * p0[e]) + l1 * p1[e]) + l2 * p2[e]) + l3 * p3[e]
                for r in range(r4, R):
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
                dl[e] = _softplus32(d, cs, ce) if softplus else d
                dx[e] = dl[e] * xl[e]
                acc[e] = _ZERO
            bt, ct = B[i, t, bc:bc + N], C[i, t, cc:cc + N]
            states = (s_even, s_odd, a_even, a_odd)
            if decays:
                _update_states(_exp2_32_nonpos, c2, dl, dx, bt, ct, states, acc)
            else:
                _update_states(_exp2_32, c2, dl, dx, bt, ct, states, acc)
            yr, zr = y[i, t, e0:e0 + w], z[i, t, zc + e0:zc + e0 + w]
            for e in range(w):
                out = acc[e] + d_skip[e] * xl[e]
                if accumulate:
                    out = yr[e] + out
                if gate:
                    out = out * (zr[e] / (one + _exp32(-zr[e], ce)))
                yr[e] = out


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
    out: a contiguous fp32 (b, L, E) tensor to write into (returned); accumulate=True adds the scan (with
    its D skip) to what `out` holds before the gate: out := (out + scan) * silu(z), so the two directions of
    a bidirectional mixer share one gate (the first direction runs without z).
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
    threads = _threads()  # also when block is given: the kernel runs on torch's thread count
    block = block or block_width(x.shape[-1], x.shape[0], A.shape[-1], threads)
    _scan_kernel(xr, xc, dr, dc, proj.numpy(), bias.numpy(), delta_softplus, At.numpy(), Br, bc, Cr, cc,
                 Df.numpy(), zr, zc, z is not None, reverse, block, accumulate, y.numpy(), _CONSTANTS)
    return y


def _checked_out(out: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """An output tensor the kernels can write through numpy: contiguous fp32 CPU of the expected shape."""
    if out.shape != shape or out.dtype != torch.float32 or out.is_cuda or not out.is_contiguous():
        raise ValueError(f"out= must be a contiguous float32 CPU tensor of shape {tuple(shape)}, "
                         f"got {out.dtype} {tuple(out.shape)}")
    return out


def _conv_arrays(weight: torch.Tensor, bias: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray]:
    """A depthwise convolution's (E, 1, K) weight as the kernels' (K, E) taps, and its bias (zeros when
    None), fp32."""
    taps = weight.detach()[:, 0, :].float().t().contiguous().numpy()
    b = np.zeros(taps.shape[1], np.float32) if bias is None else bias.detach().float().contiguous().numpy()
    return taps, b


def causal_conv1d_silu_numba(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                             reverse: bool = False, out: torch.Tensor | None = None) -> torch.Tensor:
    """silu(depthwise causal conv) in one pass, as scan.causal_conv1d_silu (reverse: right to left), into
    `out` when given."""
    wT, b = _conv_arrays(weight, bias)
    rows, c0 = _rows(x)
    out = torch.empty(x.shape, dtype=torch.float32) if out is None else _checked_out(out, x.shape)
    _threads()
    _conv_silu_kernel(rows, c0, wT, b, reverse, out.numpy(), _CONSTANTS)
    return out


Conv = tuple[torch.Tensor, torch.Tensor | None]  # a depthwise convolution's (weight, bias)


def causal_conv1d_silu_both_numba(x: torch.Tensor, forward: Conv, backward: Conv,
                                  out: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """A bidirectional mixer's two convolutions of the same x, (weight, bias) each, written into `out`
    (forward's, backward's): the numbers of causal_conv1d_silu_numba with reverse False and True, from one
    read of x's rows (K = 4, the checkpoints' d_conv; other widths run the two calls)."""
    (wf, bf), (wr, br) = forward, backward
    if wf.shape[-1] != 4 or wr.shape[-1] != 4:
        return (causal_conv1d_silu_numba(x, wf, bf, out=out[0]),
                causal_conv1d_silu_numba(x, wr, br, reverse=True, out=out[1]))
    rows, c0 = _rows(x)
    outs = tuple(_checked_out(o, x.shape) for o in out)
    _threads()
    _conv_silu_both_kernel(rows, c0, *_conv_arrays(wf, bf), *_conv_arrays(wr, br), outs[0].numpy(),
                           outs[1].numpy(), _CONSTANTS)
    return outs


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
