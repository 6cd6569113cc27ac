"""The executor's pure parts, on the host without Docker: framing, output capture, the value
unpickler at the test/candidate boundary, verdict decoding and the CPU-time verdict."""

from __future__ import annotations

import io
import os
import pickle
import re
import signal

import numpy as np
import pytest

from agentloop.sandbox.executor import VERSION, wall_backstop
from agentloop.sandbox.executor.capture import Capture
from agentloop.sandbox.executor.framing import read_blob, read_frame, write_blob, write_frame
from agentloop.sandbox.executor.values import (
    MatchValue,
    ProtocolError,
    UnsupportedValue,
    dumps_value,
    loads_value,
)
from agentloop.sandbox.executor.verdicts import candidate_death, time_verdict, verdict


def test_frames_round_trip_and_cap():
    r, w = os.pipe()
    write_frame(w, {"ready": True, "version": VERSION})
    write_blob(w, b"x" * 100)
    os.close(w)
    assert read_frame(r) == {"ready": True, "version": VERSION}
    with pytest.raises(ValueError, match="over the cap"):
        read_blob(r, cap=10)
    os.close(r)


def test_capture_keeps_head_and_tail():
    cap = Capture(10)
    for chunk in (b"0123", b"456789", b"abcdefghij"):
        cap.feed(chunk)
    assert (bytes(cap.head), bytes(cap.tail), cap.truncated) == (b"01234", b"fghij", True)
    assert cap.text() == "01234\n[... 10 bytes truncated ...]\nfghij"
    small = Capture(10)
    small.feed(b"hi")
    assert (small.text(), small.truncated) == ("hi", False)
    tail_only = Capture(4, head=False)
    tail_only.feed(b"123456")
    assert bytes(tail_only.tail) == b"3456"
    whole = Capture(10)  # fits, but a 2-byte character straddles the head/tail boundary
    whole.feed("abcdé12".encode())
    assert (whole.text(), whole.truncated) == ("abcdé12", False)


class AlwaysEqual:
    def __eq__(self, other):
        return True


class Sneaky(int):
    def __eq__(self, other):
        return True


def test_values_cross_as_exact_builtins():
    value = loads_value(dumps_value([Sneaky(3), {"a": (1.5, "s")}, {1, 2}, b"x", range(3)]))
    assert value == [3, {"a": (1.5, "s")}, {1, 2}, b"x", range(3)]
    assert type(value[0]) is int and not value[0] == 4
    arr = loads_value(dumps_value(np.arange(3, dtype=np.int32)))
    assert type(arr) is np.ndarray and arr.dtype == np.int32 and arr.tolist() == [0, 1, 2]
    assert type(loads_value(dumps_value(np.float64(2.5)))) is float


def test_foreign_objects_are_refused():
    with pytest.raises(UnsupportedValue, match="AlwaysEqual"):
        loads_value(pickle.dumps(AlwaysEqual()))
    with pytest.raises(UnsupportedValue, match="os.system"):
        loads_value(b"cos\nsystem\n(S'true'\ntR.")  # a classic pickle exploit: never resolved
    with pytest.raises(UnsupportedValue):
        loads_value(dumps_value(AlwaysEqual()))


def test_re_match_crosses_as_a_plain_match_value():
    m = re.search(r"(b+)(c)?", "abbd")
    value = loads_value(dumps_value(m))
    assert type(value) is MatchValue and value is not None and value
    assert (value.group(), value.group(1), value.groups(), value.span(), value.string) == ("bb", "bb", ("bb", None), (1, 3), "abbd")
    assert value == loads_value(dumps_value(re.search(r"(b+)(c)?", "abbd")))
    assert not (value == "bb")
    assert loads_value(dumps_value(None)) is None


def test_a_forged_match_value_is_a_protocol_error():
    forged = io.BytesIO()

    class Forger(pickle.Pickler):
        def reducer_override(self, obj):
            if type(obj) is AlwaysEqual:
                return MatchValue, ("not a span", (), "s")
            return NotImplemented

    Forger(forged, 5).dump(AlwaysEqual())
    with pytest.raises(ProtocolError, match="malformed re.Match"):
        loads_value(forged.getvalue())


SECRET = "ab" * 16


def test_verdict_decoding():
    assert verdict(0, None, SECRET.encode() + b"\n", SECRET, ((0, 0), (0, 0))) == ("passed", "")
    assert verdict(0, None, b"", SECRET, ((0, 0), (0, 0)))[0] == "failed"  # exit 0 without the proof
    assert verdict(0, None, b"0" * 32 + b"\n", SECRET, ((0, 0), (0, 0)))[0] == "failed"  # a guessed token
    assert verdict(125, None, b"H" + SECRET.encode() + b"\n", SECRET, ((0, 0), (0, 0)))[0] == "infra_error"
    report = b'{"kind": "exception", "detail": "AssertionError: no"}\n'
    assert verdict(1, None, report, SECRET, ((0, 0), (0, 0))) == ("failed", "AssertionError: no")
    crash = b'{"kind": "crash", "detail": "RecursionError"}\n'
    assert verdict(1, None, crash, SECRET, ((0, 0), (0, 0))) == ("error", "RecursionError")
    assert verdict(None, signal.SIGKILL, b"", SECRET, ((0, 0), (1, 0)))[1].startswith("OOM")
    assert verdict(None, signal.SIGSEGV, b"", SECRET, ((0, 0), (0, 0))) == ("error", "killed by signal 11 (SIGSEGV)")
    assert candidate_death(0, ((0, 0), (0, 0)))[0] == "failed"
    assert candidate_death(125 << 8, ((0, 0), (0, 0)))[0] == "infra_error"


def test_time_verdict_is_decided_by_cpu_seconds():
    assert time_verdict(None, 0.4, 0.5, wall_s=30.0) is None  # a stalled machine: slow wall clock, no timeout
    over = time_verdict(None, 0.6, 0.5, wall_s=0.6)  # finished, but over its CPU limit: same verdict as if caught
    assert over[0] == "timeout" and over[1].startswith("timed out after 0.5 s (used 0.60 CPU s")
    assert time_verdict("cpu", 0.51, 0.5, wall_s=0.6)[0] == "timeout"
    blocked = time_verdict("wall", 0.01, 0.5, wall_s=wall_backstop(0.5))
    assert blocked[0] == "timeout" and "sleeping or blocked" in blocked[1]
    assert wall_backstop(2) == 11
