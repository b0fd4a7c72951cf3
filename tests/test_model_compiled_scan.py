"""The numba CPU scan and convolution against the per-step reference, and which scan backend runs where."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scan_inputs import scan_inputs

from neuro_caduceus.model import from_pretrained, scan
from neuro_caduceus.model.cpu_scan import (
    block_width,
    causal_conv1d_silu_both_numba,
    causal_conv1d_silu_numba,
    selective_scan_numba,
)
from neuro_caduceus.model.scan import pick_backend, selective_scan_chunked, selective_scan_reference

GOLDEN = Path(__file__).parent / "data" / "golden"


def _flip(args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return tuple(t.flip(1) if t.dim() == 3 else t for t in args)


@pytest.mark.parametrize(("L", "E", "N"), [(1, 24, 16), (37, 24, 16), (200, 70, 16), (64, 130, 5)])
def test_numba_equals_reference(L: int, E: int, N: int) -> None:
    """E below, at and across the 64-channel job blocks; N not a power of two."""
    args = scan_inputs(L, E=E, N=N, seed=L + E)
    want = selective_scan_reference(*args)
    torch.testing.assert_close(selective_scan_numba(*args), want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("reverse", [False, True])
def test_numba_scan_numbers_do_not_depend_on_the_channel_blocks(reverse: bool) -> None:
    """Blocks narrower than E, a ragged last block, and one block for all channels: the same bits."""
    x, dt_raw, A, B, C, D = scan_inputs(120, E=70, seed=9)
    kw = {"z": torch.randn_like(x), "reverse": reverse, "delta_bias": torch.randn(70), "delta_softplus": True}
    outs = [selective_scan_numba(x, dt_raw, A, B, C, D, block=block, **kw) for block in (16, 48, 64, 80)]
    for out in outs[1:]:
        assert torch.equal(out, outs[0])


def test_block_width_keeps_threads_busy_and_state_in_l1() -> None:
    assert block_width(236, rows=2, states=16, threads=2) == 240  # one block per strand half
    assert block_width(236, rows=2, states=16, threads=16) == 32  # 8 blocks per row: 16 jobs
    assert block_width(236, rows=1, states=16, threads=2) == 128
    assert block_width(512, rows=2, states=16, threads=2) == 256  # (16, 256) fp32 state = 16 KiB
    assert block_width(236, rows=2, states=64, threads=2) == 64
    assert block_width(5, rows=1, states=16, threads=8) == 16


def test_kernels_follow_torch_thread_count() -> None:
    """One knob: an actor's torch.set_num_threads also bounds the compiled kernels' threads."""
    import numba

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        selective_scan_numba(*scan_inputs(20, E=24, seed=1))
        assert numba.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
        selective_scan_numba(*scan_inputs(20, E=24, seed=1))
    assert numba.get_num_threads() == min(before, numba.config.NUMBA_NUM_THREADS)


@pytest.mark.parametrize("N", [16, 5])
def test_numba_reverse_gate_and_softplus_equal_the_unfused_ops(N: int) -> None:
    """Softplus'd deltas (decays only: the states update two at a time, an odd N leaves one alone)."""
    x, dt_raw, A, B, C, D = scan_inputs(90, E=40, N=N, seed=4)
    dt_raw = 6.0 * torch.randn_like(dt_raw)  # spans softplus' linear (> 20) and exponential tails
    dt_raw[0, :5] = 25.0
    bias = torch.randn(40)
    z = 3.0 * torch.randn_like(x)
    delta = F.softplus(dt_raw + bias)
    want = selective_scan_reference(*_flip((x, delta, A, B, C, D))).flip(1) * F.silu(z)
    got = selective_scan_numba(x, dt_raw, A, B, C, D, z=z, reverse=True, delta_bias=bias, delta_softplus=True)
    scale = float(want.abs().max())
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("a_scale", [0.001, 500.0])
def test_numba_extreme_decay_stays_exact(a_scale: float) -> None:
    """Near-1 decay (long memory) and decays that underflow exp: against a float64 loop."""
    args = scan_inputs(150, a_scale=a_scale, seed=3)
    ref64 = selective_scan_reference(*(t.double() for t in args))
    out = selective_scan_numba(*args)
    assert torch.isfinite(out).all()
    scale = max(1.0, float(ref64.abs().max()))
    torch.testing.assert_close(out.double(), ref64, rtol=0, atol=1e-5 * scale)


def test_numba_reads_channel_slices_in_place_and_copies_other_views() -> None:
    """x and z as the two halves of one in_proj output (read in place at their channel offsets), a
    channel-strided view (copied): the same numbers as contiguous copies, and as the unfused reference."""
    x, dt_raw, A, B, C, D = scan_inputs(70, E=80, seed=6)
    xz = torch.cat([x, 2.0 * torch.randn_like(x)], dim=-1)
    xs, zs = xz.chunk(2, dim=-1)
    assert not zs.is_contiguous() and zs.storage_offset() == 80
    got = selective_scan_numba(xs, dt_raw, A, B, C, D, z=zs, delta_bias=D, delta_softplus=True)
    dense = selective_scan_numba(xs.contiguous(), dt_raw, A, B, C, D, z=zs.contiguous(), delta_bias=D,
                                 delta_softplus=True)
    torch.testing.assert_close(got, dense, rtol=0, atol=0)
    dbc = torch.cat([dt_raw, B, C], dim=-1)  # delta, B and C as slices of one x_proj output, read in place
    ds, bs, cs = torch.split(dbc, [80, B.shape[-1], C.shape[-1]], dim=-1)
    assert not bs.is_contiguous() and not cs.is_contiguous()
    in_place = selective_scan_numba(xs, ds, A, bs, cs, D, z=zs, delta_bias=D, delta_softplus=True)
    torch.testing.assert_close(in_place, dense, rtol=0, atol=0)
    want = selective_scan_reference(xs, F.softplus(dt_raw + D), A, B, C, D) * F.silu(zs)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * float(want.abs().max()))
    odd = torch.randn(2, 80, 70).transpose(1, 2)  # channels strided: not a slice of rows
    torch.testing.assert_close(selective_scan_numba(odd, dt_raw, A, B, C, D),
                               selective_scan_reference(odd, dt_raw, A, B, C, D), rtol=0, atol=1e-5)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("taps", [4, 3])
def test_numba_conv_equals_torch_conv1d(reverse: bool, bias: bool, taps: int) -> None:
    """d_conv = 4 (the fused interior pass) and another width (the general loop), both ends."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 300, 24, generator=g)[..., :12]  # a strided view, as the model passes xz's half
    weight = torch.randn(12, 1, taps, generator=g)
    b = torch.randn(12, generator=g) if bias else None
    xin = x.flip(1) if reverse else x
    want = F.conv1d(xin.transpose(1, 2), weight, b, padding=taps - 1, groups=12)[..., :300]
    want = F.silu(want).transpose(1, 2)
    want = want.flip(1) if reverse else want
    got = causal_conv1d_silu_numba(x, weight, b, reverse=reverse)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("L", [1, 5, 300])
@pytest.mark.parametrize("taps", [4, 3])
def test_numba_conv_both_directions_in_one_pass_equal_two_calls(L: int, taps: int) -> None:
    """Both directions' convolutions from one read of x: the bits of the two one-direction calls (rows with
    every tap inside, and the edge rows; another width runs the two calls)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, L, 40, generator=g)[..., 20:]  # the second half of wider rows
    fwd = (torch.randn(20, 1, taps, generator=g), torch.randn(20, generator=g))
    rev = (torch.randn(20, 1, taps, generator=g), None)
    out = (torch.empty(2, L, 20), torch.empty(2, L, 20))
    got = causal_conv1d_silu_both_numba(x, fwd, rev, out=out)
    assert got[0] is out[0] and got[1] is out[1]
    assert torch.equal(got[0], causal_conv1d_silu_numba(x, *fwd))
    assert torch.equal(got[1], causal_conv1d_silu_numba(x, *rev, reverse=True))


def test_forward_with_autograd_on_cpu_runs_and_matches_inference() -> None:
    """Gradients enabled: the differentiable per-step scan runs (numba and the in-place chunked scan are
    forward-only), with the inference forward's numbers, and gradients reach the weights."""
    model = from_pretrained(GOLDEN / "ps_d32_l2")
    ids = torch.randint(7, 11, (1, 40), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want = model.hidden_states(ids)
    got = model.hidden_states(ids)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    got.sum().backward()
    assert model.caduceus.backbone.layers[0].mixer.submodule.mamba_fwd.A_log.grad is not None


def test_backend_choice() -> None:
    """mamba-ssm first on CUDA, then Triton, then torch; numba on CPU; gradients never reach Triton/numba."""
    every = {"mamba-ssm", "triton", "numba"}
    assert pick_backend("cuda", every) == "mamba-ssm"
    assert pick_backend("cuda", {"triton", "numba"}) == "triton"
    assert pick_backend("cuda", set()) == "torch"
    assert pick_backend("cuda", {"triton"}, needs_grad=True) == "torch"
    assert pick_backend("cuda", every, needs_grad=True) == "mamba-ssm"
    assert pick_backend("cpu", every) == "numba"
    assert pick_backend("cpu", {"mamba-ssm", "triton"}) == "torch"
    assert pick_backend("cpu", every, needs_grad=True) == "torch"


def test_scan_backend_on_this_machine() -> None:
    """CPU inference uses numba; a tensor that needs gradients is never detached into the numba kernel."""
    x = torch.randn(1, 4, 3)
    assert scan.available_backends("cpu") == {"numba"}
    with torch.inference_mode():
        assert scan.scan_backend(x) == "numba"
    assert scan.scan_backend(x.requires_grad_()) == "torch"


@pytest.mark.parametrize("name", ["ps_d118_l4", "ph_d118_l4"])
def test_compiled_and_torch_model_paths_agree(name: str) -> None:
    """The whole model (numba conv + scan, backward direction walked in place) against the torch path."""
    model = from_pretrained(GOLDEN / name)
    ids = torch.from_numpy(np.load(GOLDEN / name / "golden.npz")["input_ids"][:2])
    with torch.inference_mode():
        compiled = model.hidden_states(ids)
        with scan.using_scan(selective_scan_chunked):
            torch_path = model.hidden_states(ids)
    torch.testing.assert_close(compiled, torch_path, rtol=0, atol=1e-5)
