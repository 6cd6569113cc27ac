"""`python3 -m agentloop_stepper`: the workspace step server's main loop (see __init__)."""

import os
import signal
import sys
import time

from . import VERSION, WORKDIR
from .files import read_files, write_files
from .framing import read_frame, write_frame
from .steps import PR_SET_DUMPABLE, kill_everything, libc, run_step


def set_dumpable(flag):
    """PR_SET_DUMPABLE 0: the step processes (same user) can neither ptrace the server nor open its
    /proc/1/{mem,fd,environ}. -> the flag as the kernel now has it, None where prctl is missing."""
    lib = libc()
    if lib is None:
        return None
    lib.prctl(PR_SET_DUMPABLE, int(flag), 0, 0, 0)
    return bool(lib.prctl(3, 0, 0, 0, 0))  # PR_GET_DUMPABLE


def handle(req):
    if req.get("hang_s"):  # test hook: a server that stops answering
        time.sleep(float(req["hang_s"]))
    op = req.get("op")
    if op == "run":
        return run_step(req, WORKDIR)
    if op == "write":
        return write_files(WORKDIR, req.get("files"))
    if op == "read":
        paths = req.get("paths")
        if not isinstance(paths, list):
            raise ValueError("read: `paths` must be a list")
        files, notes = read_files(WORKDIR, paths, int(req["file_limit"]))
        return {"files": files, "notes": notes}
    raise ValueError(f"unknown op {op!r}")


def main():
    if os.getpid() != 1:  # kill(-1) anywhere else would hit every process of the user
        raise SystemExit("agentloop_stepper runs only as PID 1 of a container")
    req_in, rep_out = os.dup(0), os.dup(1)  # private, close-on-exec copies; fds 0/1 -> /dev/null
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as PID 1, a signal with no handler is dropped
    dumpable = set_dumpable(False)
    os.chdir(WORKDIR)
    write_frame(rep_out, {"ready": True, "version": VERSION, "pid": os.getpid(), "dumpable": dumpable,
                          "python": sys.version.split()[0]})
    while True:
        try:
            req = read_frame(req_in)
        except EOFError:
            return
        try:
            reply = handle(req)
        except Exception as e:  # noqa: BLE001 - a bad request or a server bug: an error reply ends the workspace
            kill_everything({}, budget_s=2.0)
            reply = {"error": f"step server: {type(e).__name__}: {e}"}
        reply["id"] = req.get("id")
        write_frame(rep_out, reply)


if __name__ == "__main__":
    main()
