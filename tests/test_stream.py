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


# ---- chunked delivery -----------------------------------------------------------

def _chunked(frames, sizes, dt=0.01, log=None, **kw):
    """``frames`` cut into chunks of ``sizes`` (cycled); ``log`` gets each chunk's first frame as pulled."""
    def chunks():
        i, j = 0, 0
        while i < frames.shape[1]:
            f = sizes[j % len(sizes)]
            if log is not None:
                log.append(i)
            yield frames[:, i:i + f]
            i, j = i + f, j + 1
    B, F, n, c = frames.shape
    return Stream.from_chunks(chunks(), dt, n_frames=F, batch=B, n_leaves=n, input_dim=c,
                              dtype=frames.dtype, **kw)


def test_chunked_stream_equals_one_tensor_stream():
    g = torch.Generator().manual_seed(3)
    frames = torch.randn(2, 157, 3, 2, generator=g, dtype=torch.float64)
    whole, parts = Stream(frames, 0.01), _chunked(frames, [1, 7, 40, 3])
    for a, b in [(0.0, 1.56), (0.013, 0.5), (0.999, 1.001), (0.3, 0.3)]:
        torch.testing.assert_close(parts.integral(a, b), whole.integral(a, b), atol=1e-12, rtol=0)
        torch.testing.assert_close(parts.value(b), whole.value(b), atol=0, rtol=0)
        assert parts.window(a, b)[0] == whole.window(a, b)[0]
        torch.testing.assert_close(parts.window(a, b)[1], whole.window(a, b)[1], atol=0, rtol=0)
    torch.testing.assert_close(parts.frames, frames, atol=0, rtol=0)


def test_chunks_are_pulled_only_when_a_frame_in_them_is_needed():
    frames = torch.arange(100.0).reshape(1, 100, 1, 1)
    log = []
    s = _chunked(frames, [10], log=log)
    assert log == [] and s.loaded == 0
    s.value(0.205)                      # needs frames 20 and 21
    assert log == [0, 10, 20] and s.loaded == 30
    s.integral(0.0, 0.285)              # frames 0..29: nothing new
    assert s.loaded == 30 and len(log) == 3
    assert s.delivered(25).shape[1] == 5


@pytest.mark.parametrize("chunk,match", [
    (torch.zeros(1, 5, 2, 2), r"chunk from frame 10 must be \[1, f >= 1, 2, 1\]; got \(1, 5, 2, 2\)"),
    (torch.zeros(1, 0, 2, 1), "chunk from frame 10 must be"),
    ("frames", "chunk from frame 10 must be .*; got str"),
    (torch.zeros(1, 95, 2, 1), "chunk from frame 10 runs to frame 104, past the 100 frames announced"),
])
def test_bad_chunk_is_named_by_its_first_frame(chunk, match):
    s = Stream.from_chunks(iter([torch.zeros(1, 10, 2, 1), chunk]), 0.01, n_frames=100, batch=1,
                           n_leaves=2, input_dim=1, name="demo.wav")
    s.value(0.05)
    with pytest.raises(StreamError, match="demo.wav: the " + match):
        s.value(0.5)


def test_chunks_ending_early_are_an_error():
    s = Stream.from_chunks(iter([torch.zeros(1, 10, 1, 1)]), 0.01, n_frames=20, batch=1, n_leaves=1,
                           input_dim=1)
    with pytest.raises(StreamError, match="ended after 10 frames; 20 were announced"):
        s.value(0.15)


def test_non_finite_frame_in_a_later_chunk_is_named():
    frames = torch.zeros(1, 60, 1, 1)
    frames[0, 43] = float("nan")
    s = _chunked(frames, [20], name="scene")
    s.value(0.3)                        # the first two chunks are clean
    with pytest.raises(StreamError, match=r"scene: frame 43 \(t=0.43 s\)"):
        s.value(0.41)
    z = _chunked(frames, [20], nan_policy="zero")
    assert z.is_bad(43) and not z.is_bad(42) and z.bad_frames == [43]
    assert float(z.frames[0, 43, 0, 0]) == 0.0


def test_moved_stream_takes_the_chunks_over():
    frames = torch.randn(1, 30, 2, 1, dtype=torch.float64)
    s = _chunked(frames, [10])
    s.value(0.05)
    moved = s.to("cpu", torch.float32)
    assert moved.frames.dtype == torch.float32 and moved.loaded == 30
    torch.testing.assert_close(moved.frames, frames.float())
    with pytest.raises(StreamError, match="moved by .to"):
        s.value(0.25)
    assert s.to("cpu", torch.float64) is s


def test_annotations_are_checked():
    with pytest.raises(StreamError, match="differ in length"):
        Stream(torch.zeros(1, 3, 1, 1), 0.1, annotations={"time": [0.1, 0.2], "kind": ["a"], "stream": [0]})
    with pytest.raises(StreamError, match="'kind' must hold strings"):
        Stream(torch.zeros(1, 3, 1, 1), 0.1, annotations={"time": [0.1], "kind": [3], "stream": [0]})
