"""Length-prefixed frames: 4 bytes big-endian, then the payload (JSON objects or pickled blobs)."""

import json
import os
import struct


def read_exact(fd, n):
    parts = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def write_blob(fd, data):
    view = memoryview(struct.pack(">I", len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def read_blob(fd, cap=None):
    """One frame's payload; ValueError when it announces more than `cap` bytes."""
    (n,) = struct.unpack(">I", read_exact(fd, 4))
    if cap is not None and n > cap:
        raise ValueError("a frame of %d bytes is over the cap" % n)
    return read_exact(fd, n)


def read_frame(fd):
    return json.loads(read_blob(fd))


def write_frame(fd, obj):
    write_blob(fd, json.dumps(obj).encode())
