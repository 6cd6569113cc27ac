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
    """One frame: its length and payload in one writev() (no copy of a large payload to join them)."""
    head = struct.pack(">I", len(data))
    total = 4 + len(data)
    sent = os.writev(fd, (head, data))
    while sent < total:  # a full pipe or socket took part of it
        if sent < 4:
            sent += os.write(fd, head[sent:])
        else:
            sent += os.write(fd, memoryview(data)[sent - 4:])


def read_blob(fd, cap=None):
    """One frame's payload; ValueError when it announces more than `cap` bytes."""
    (n,) = struct.unpack(">I", read_exact(fd, 4))
    if cap is not None and n > cap:
        raise ValueError("a frame of %d bytes is over the cap" % n)
    return read_exact(fd, n)


class BlobReader:
    """Frames from a stream, read through a buffer: a small frame (an RPC call or its reply)
    costs one read() syscall, not one for its length and another for its payload."""

    def __init__(self, fd):
        self.file = open(fd, "rb", buffering=1 << 16, closefd=False)  # noqa: SIM115 (the connection's lifetime)

    def read_blob(self, cap=None):
        """As read_blob above."""
        head = self.file.read(4)
        if len(head) < 4:
            raise EOFError
        (n,) = struct.unpack(">I", head)
        if cap is not None and n > cap:
            raise ValueError("a frame of %d bytes is over the cap" % n)
        data = self.file.read(n)
        if len(data) < n:
            raise EOFError
        return data


def read_frame(fd):
    return json.loads(read_blob(fd))


def write_frame(fd, obj):
    write_blob(fd, json.dumps(obj).encode())
