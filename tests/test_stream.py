"""Streams: exact window integrals and a stated policy for bad frames."""

import math

import pytest
import torch

from rtnclock import Stream, StreamError


def test_integral_of_linear_pieces_is_exact():
    dt = 0.01
    t = torch.arange(101, dtype=torch.float64) * dt
    frames = (3 * t + 1)[None, :, None, None].expand(2, -1, 3, 2).clone()    # linear in t
    s = Stream(frames, dt)
    for a, b in [(0.0, 1.0), (0.013, 0.5), (0.2567, 0.2581)]:
        exact = 1.5 * (b * b - a * a) + (b - a)
        torch.testing.assert_close(s.integral(a, b), torch.full((2, 3, 2), exact, dtype=torch.float64),
                                   atol=1e-12, rtol=0)
    torch.testing.assert_close(s.value(0.255), torch.full((2, 3, 2), 3 * 0.255 + 1, dtype=torch.float64))


def test_integral_of_sine_converges_at_second_order():
    errs = []
    for dt in (0.01, 0.005):
        t = torch.arange(int(1 / dt) + 1, dtype=torch.float64) * dt
        s = Stream(torch.sin(2 * math.pi * t)[None, :, None, None], dt)
        errs.append(abs(float(s.integral(0.0, 0.25)[0, 0, 0]) - 1 / (2 * math.pi)))
    assert errs[0] / errs[1] == pytest.approx(4.0, rel=0.05)


def test_non_finite_frame_is_named():
    frames = torch.zeros(1, 10, 2, 1)
    frames[0, 7, 1, 0] = float("nan")
    with pytest.raises(StreamError, match="frame 7 .*t=0.07"):
        Stream(frames, 0.01)


def test_zero_policy_fills_and_lists_bad_frames():
    frames = torch.ones(1, 10, 2, 1)
    frames[0, 3, 0, 0] = float("inf")
    s = Stream(frames, 0.01, nan_policy="zero")
    assert s.bad_frames == [3] and float(s.frames[0, 3, 0, 0]) == 0.0


@pytest.mark.parametrize("frames,dt,match", [
    (torch.zeros(5, 2), 0.01, "B, F, n_leaves, d_in"),
    (torch.zeros(1, 1, 2, 1), 0.01, "at least 2 frames"),
    (torch.zeros(1, 4, 2, 1), 0.0, "dt must be > 0"),
])
def test_malformed_stream(frames, dt, match):
    with pytest.raises(StreamError, match=match):
        Stream(frames, dt)
