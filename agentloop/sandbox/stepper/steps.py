"""The `run` op: one step's process tree, from fork to the last process killed and reaped."""

import contextlib
import os
import select
import signal
import time

from .capture import Capture
from .files import read_files

PROGRAM = "/tmp/.agentloop-step.py"
"""Where a `python` step's code is written (and removed after the step)."""
KILL_BUDGET_S = 10.0
"""How long the clean-up may take to see every other process gone before the server gives up."""
OOM_SCORE_ADJ = b"1000"
PR_SET_DUMPABLE = 4
_LIBC: list = []  # ctypes' libc, loaded once in the server (not in every forked child)


def libc():
    """-> libc through ctypes, or None where it cannot be loaded."""
    if not _LIBC:
        try:
            import ctypes

            _LIBC.append(ctypes.CDLL(None, use_errno=True))
        except Exception:  # noqa: BLE001 - no ctypes or no libc
            _LIBC.append(None)
    return _LIBC[0]


def run_step(req, workdir):
    kind, command = req.get("kind"), req.get("command")
    timeout_s, limit = float(req["timeout_s"]), int(req["output_limit"])
    if not isinstance(command, str):
        raise ValueError("run: `command` must be a string")
    env = os.environ
    if kind == "bash":
        argv = ["bash", "-c", command]
    elif kind == "python":
        try:
            with open(PROGRAM, "w", encoding="utf-8", errors="surrogatepass") as f:
                f.write(command)
        except OSError as e:  # the step's own doing (a full /tmp): its observation, not a crash
            with contextlib.suppress(OSError):
                os.unlink(PROGRAM)
            return _not_started(f"agentloop: cannot write the python program to {PROGRAM}: {e.strerror}\n",
                                req, workdir)
        argv = ["python3", PROGRAM]
        # The script's dir (/tmp) is sys.path[0]; the workdir next, so `import solution` works as
        # it would with the script in /work, and tracebacks still show the program's lines.
        env = dict(os.environ, PYTHONPATH=workdir)
    else:
        raise ValueError(f"run: unknown kind {kind!r} (bash or python)")
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    t0 = time.monotonic()
    try:
        pid = os.fork()
    except OSError:
        for fd in (out_r, out_w, err_r, err_w):
            os.close(fd)
        raise
    if pid == 0:
        _child(argv, env, workdir, out_w, err_w)  # never returns
    os.close(out_w)
    os.close(err_w)
    caps = {out_r: Capture(limit), err_r: Capture(limit)}
    status, timed_out = _supervise(pid, t0 + timeout_s, caps)
    duration = time.monotonic() - t0
    statuses = {}
    if not kill_everything(statuses):
        raise RuntimeError(f"processes of the step outlived SIGKILL for {KILL_BUDGET_S:g} s")
    if status is None:
        status = statuses.get(pid)
    for fd, cap in caps.items():  # every writer is dead: read to the end, it cannot block
        while True:
            data = os.read(fd, 1 << 16)
            if not data:
                break
            cap.feed(data)
        os.close(fd)
    if kind == "python":
        with contextlib.suppress(OSError):
            os.unlink(PROGRAM)
    out, err = caps[out_r], caps[err_r]
    exit_code = os.WEXITSTATUS(status) if status is not None and os.WIFEXITED(status) else None
    sig = os.WTERMSIG(status) if status is not None and os.WIFSIGNALED(status) else None
    files, notes = read_files(workdir, req.get("read") or [], int(req["file_limit"]))
    return {
        "exit_code": None if timed_out else exit_code, "signal": sig, "timed_out": timed_out,
        "duration_s": round(duration, 6), "stdout": out.text(), "stderr": err.text(),
        "truncated": out.truncated or err.truncated, "files": files, "notes": notes,
    }


def _not_started(why, req, workdir):
    files, notes = read_files(workdir, req.get("read") or [], int(req["file_limit"]))
    return {"exit_code": 126, "signal": None, "timed_out": False, "duration_s": 0.0, "stdout": "",
            "stderr": why, "truncated": False, "files": files, "notes": notes}


def _child(argv, env, workdir, out_w, err_w):
    """In the forked child: new session, stdin /dev/null, the pipes, default signals, first in line
    for the OOM killer, then exec. Never returns."""
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT):  # Python's own choices, not the step's
            signal.signal(sig, signal.SIG_DFL)
        lib = libc()
        if lib is not None:  # the server is not dumpable, so neither is this fork: /proc/self would be root's
            lib.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # exec makes it dumpable anyway; no other step process is alive
        try:
            fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
            os.write(fd, OOM_SCORE_ADJ)
            os.close(fd)
        except OSError:
            pass
        os.chdir(workdir)
        os.execvpe(argv[0], argv, env)
    except BaseException as e:  # noqa: BLE001 - whatever failed, the forked child must not return
        try:
            os.write(2, (f"agentloop: cannot start {argv[0]}: {e}\n").encode())
        finally:
            os._exit(127)


def _supervise(pid, deadline, caps):
    """Drain the pipes until the command exits or the deadline passes. -> (status | None, timed_out)."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    poller = select.poll()
    for fd in caps:
        poller.register(fd, select.POLLIN)
    if pidfd is not None:
        poller.register(pidfd, select.POLLIN)
    try:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return status, False
            left = deadline - time.monotonic()
            if left <= 0:
                return None, True
            wait_ms = left * 1000 if pidfd is not None else min(left * 1000, 10)
            for fd, _ in poller.poll(int(wait_ms) + 1):
                if fd in caps:
                    data = os.read(fd, 1 << 16)
                    if data:
                        caps[fd].feed(data)
                    else:
                        poller.unregister(fd)
    finally:
        if pidfd is not None:
            os.close(pidfd)


def kill_everything(statuses, budget_s=KILL_BUDGET_S):
    """SIGKILL every other process of the PID namespace and reap them, until none is left (as its
    PID 1, every orphan comes to us: no child left means no process left). -> False if some
    survive `budget_s` (stuck in the kernel)."""
    end = time.monotonic() + budget_s
    pause = 0.0002
    while True:
        with contextlib.suppress(OSError):  # ESRCH: nobody to signal
            os.kill(-1, signal.SIGKILL)
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return True
            if pid == 0:
                break
            statuses[pid] = status
        if time.monotonic() >= end:
            return False
        time.sleep(pause)
        pause = min(pause * 2, 0.01)
