"""Fork server that is the main process of every sandbox container.

Started as `python3 -c <this source>` so a changed executor needs no image rebuild; therefore it
is stdlib-only and runs on whatever python3 (>= 3.9) the image has. It pays the interpreter start
and the numpy import once, then forks one child per job, which is what makes a sandboxed run
cheaper than a bare `python3 -` on the host.

Protocol (both directions): a 4-byte big-endian length, then that many bytes of UTF-8 JSON.
  host -> executor: {"id", "program", "timeout_s", "output_limit"}
  executor -> host: {"ready": true, ...} once at start, then one result object per job
    {"id", "verdict", "duration_s", "exit_code", "signal", "stdout", "stderr", "truncated",
     "detail"} (the fields of agentloop.sandbox.types.ExecResult).

Results go to a private dup of the original stdout; fds 0/1 are pointed at /dev/null at start so
that neither a stray print here nor any child can corrupt the protocol.

Verdicts: `passed` needs exit status 0 AND a per-job random token that the child writes on its
private result pipe only after the program's code returned, so `sys.exit(0)` or `os._exit(0)`
halfway is `failed`. (A program that digs the token out of the harness's frames could forge
it; the token guards against accidental early exits, not against adversarial code.) Uncaught
exceptions and non-zero exits are `failed`; signals, MemoryError and RecursionError are `error`;
the wall clock is `timeout`. As the container's PID 1 the executor cannot be signalled by the
program and inherits (and kills) every process the job leaves behind.
"""

import json
import os
import select
import shutil
import signal
import struct
import sys
import time

JOB_DIR = "/scratch/job"
WIPE_DIRS = ("/scratch", "/tmp", "/dev/shm")
RESULT_FD = 3  # the child's private result pipe; every other fd above 2 is closed
HARNESS_EXIT = 125  # the child's set-up failed before the program started
RESULT_CAP = 65536  # tail of the result pipe kept (the harness writes last)
PREIMPORTS = (
    "numpy", "math", "cmath", "re", "string", "itertools", "functools", "collections",
    "heapq", "bisect", "random", "json", "typing", "fractions", "decimal", "statistics",
    "datetime", "hashlib", "copy", "operator", "array", "traceback", "linecache", "types",
    "builtins", "threading", "atexit", "io",
)


def preimport():
    """Import what most candidates import, once, so each forked child gets it for free."""
    for name in PREIMPORTS:
        try:
            __import__(name)
        except Exception:  # an image without numpy is fine
            pass


# --- framing -------------------------------------------------------------------------------


def read_exact(fd, n):
    parts = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def read_frame(fd):
    (n,) = struct.unpack(">I", read_exact(fd, 4))
    return json.loads(read_exact(fd, n))


def write_frame(fd, obj):
    data = json.dumps(obj).encode()
    view = memoryview(struct.pack(">I", len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


# --- output capture ------------------------------------------------------------------------


class Capture:
    """Keeps the head and tail of a stream, so gigabytes of output cost no memory."""

    def __init__(self, limit):
        self.head_cap = limit - limit // 2
        self.tail_cap = limit // 2
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data):
        self.total += len(data)
        room = self.head_cap - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data and self.tail_cap:
            self.tail += data[-self.tail_cap:]
            if len(self.tail) > self.tail_cap:
                del self.tail[: len(self.tail) - self.tail_cap]

    @property
    def truncated(self):
        return self.total > len(self.head) + len(self.tail)

    def text(self):
        head = self.head.decode("utf-8", "replace")
        tail = self.tail.decode("utf-8", "replace")
        if not self.truncated:
            return head + tail
        cut = self.total - len(self.head) - len(self.tail)
        return "%s\n[... %d bytes truncated ...]\n%s" % (head, cut, tail)


# --- the child -----------------------------------------------------------------------------


def child(program, secret, out_w, err_w, res_w):
    """Runs in the forked child; never returns. Exit statuses are read by `verdict`."""
    try:
        os.setsid()
        os.chdir(JOB_DIR)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.dup2(res_w, RESULT_FD, inheritable=False)
        os.closerange(RESULT_FD + 1, 1 << 16)
        try:  # let the OOM killer pick the candidate, never the executor
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")
        except OSError:
            pass
        import builtins, linecache, types

        if "numpy" in sys.modules:  # fork copied the parent's RNG state: reseed like a fresh run
            sys.modules["numpy"].random.seed()
        module = types.ModuleType("__main__")
        module.__dict__["__builtins__"] = builtins
        sys.modules["__main__"] = module
        sys.argv = [""]
        linecache.cache["<candidate>"] = (len(program), None, program.splitlines(True), "<candidate>")
    except BaseException:
        try:
            os.write(res_w, b"H" + secret.encode() + b"\n")
        finally:
            os._exit(HARNESS_EXIT)
    token = secret.encode() + b"\n"
    del secret
    try:
        exec(compile(program, "<candidate>", "exec"), module.__dict__)
    except SystemExit as e:
        status = exit_status(e.code)
        os._exit(flush_std() or status)
    except BaseException as e:
        report_exception(e)
        flush_std()
        os._exit(1)
    finish(token)


def flush_std():
    """Flush what the program printed, as Python does at exit; 120 if that fails, like Python."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        return 120
    return 0


def exit_status(code):
    """What `python3 -` would exit with after an uncaught SystemExit(code)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        sys.stderr.write("%s\n" % (code,))
        sys.stderr.flush()
    except BaseException:
        pass
    return 1


def report_exception(e):
    kind = "crash" if isinstance(e, (MemoryError, RecursionError)) else "exception"
    try:
        msg = str(e)
    except BaseException:
        msg = "<unprintable>"
    line = type(e).__name__ + (": " + " ".join(msg.split()) if msg.strip() else "")
    try:
        os.write(RESULT_FD, json.dumps({"kind": kind, "detail": line[:500]}).encode() + b"\n")
    except BaseException:
        pass
    try:
        import traceback

        traceback.print_exception(type(e), e, e.__traceback__.tb_next)
        sys.stderr.flush()
    except BaseException:
        pass


def finish(token):
    """The program ran to its end: prove it with the token, then exit like Python would."""
    status = flush_std()
    try:
        os.write(RESULT_FD, token)
    except BaseException:
        status = 120
    try:
        if "threading" in sys.modules:
            sys.modules["threading"]._shutdown()  # wait for non-daemon threads, as Python does
        import atexit

        atexit._run_exitfuncs()
    except SystemExit as e:
        status = exit_status(e.code)
    except BaseException:
        pass
    os._exit(flush_std() or status)


# --- supervision in the parent ---------------------------------------------------------------


def supervise(pid, deadline, caps):
    """Drain the child's pipes until it exits or the deadline passes. -> (status|None, end time)."""
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
                return status, time.monotonic()
            left = deadline - time.monotonic()
            if left <= 0:
                return None, time.monotonic()
            wait_ms = left * 1000 if pidfd is not None else min(left * 1000, 10)
            for fd, _ in poller.poll(max(1, int(wait_ms) + 1)):
                if fd in caps and not drain_once(fd, caps):
                    poller.unregister(fd)
    finally:
        if pidfd is not None:
            os.close(pidfd)


def drain_once(fd, caps):
    try:
        data = os.read(fd, 1 << 16)
    except BlockingIOError:
        return True
    if data:
        caps[fd].feed(data)
        return True
    return False


def drain_rest(caps, budget_s=2.0):
    """After every writer is dead, read what is left in the pipes, then close them."""
    open_fds = set(caps)
    for fd in open_fds:
        os.set_blocking(fd, False)
    end = time.monotonic() + budget_s
    while open_fds and time.monotonic() < end:
        ready, _, _ = select.select(list(open_fds), [], [], max(0.0, end - time.monotonic()))
        for fd in ready:
            if not drain_once(fd, caps):
                open_fds.discard(fd)
    for fd in caps:
        os.close(fd)


def kill_all(pgid, statuses):
    """SIGKILL the job's process group, then every other process of our user (setsid escapees)."""
    try:
        if pgid is not None:
            os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
    me, uid = os.getpid(), os.getuid()
    for _ in range(300):
        others = []
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == me:
                continue
            try:
                if os.stat("/proc/" + name).st_uid != uid or proc_state(name) == "Z":
                    continue
                os.kill(int(name), signal.SIGKILL)
                others.append(name)
            except OSError:
                pass
        reap(statuses)
        if not others:
            return
        time.sleep(0.005)


def proc_state(pid):
    with open("/proc/%s/stat" % pid, "rb") as f:
        stat = f.read()
    return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3].decode()


def reap(statuses):
    """Reap every exited child; as PID 1 we also inherit the orphans of the job."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        statuses[pid] = status


def wipe():
    for root in WIPE_DIRS:
        try:
            entries = os.listdir(root)
        except OSError:
            continue
        for name in entries:
            path = os.path.join(root, name)
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    rmtree(path)
                else:
                    os.unlink(path)
            except OSError:
                pass


def rmtree(path):
    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=force_remove)
    else:
        shutil.rmtree(path, onerror=force_remove)


def force_remove(func, path, _exc):
    """rmtree helper: a candidate may have chmod-ed its own files read-only."""
    try:
        os.chmod(os.path.dirname(path), 0o700)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o700)
            shutil.rmtree(path, ignore_errors=True)
        else:
            func(path)
    except OSError:
        pass


# --- OOM evidence --------------------------------------------------------------------------


def oom_counters():
    """(OOM kills, memory-limit hits) of this container's memory cgroup; None where unreadable."""
    kills = hits = None
    for path in ("/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events"):
        try:
            with open(path) as f:
                fields = dict(line.split()[:2] for line in f if line.strip())
            kills = int(fields["oom_kill"])
            break
        except (OSError, ValueError, KeyError):
            continue
    try:
        with open("/sys/fs/cgroup/memory/memory.failcnt") as f:
            hits = int(f.read())
    except (OSError, ValueError):
        pass
    return kills, hits


# --- one job ---------------------------------------------------------------------------------


def run_job(job):
    timeout_s = float(job["timeout_s"])
    limit = int(job.get("output_limit", 16384))
    secret = os.urandom(16).hex()
    os.makedirs(JOB_DIR, exist_ok=True)
    (out_r, out_w), (err_r, err_w), (res_r, res_w) = os.pipe(), os.pipe(), os.pipe()
    caps = {out_r: Capture(limit), err_r: Capture(limit), res_r: Capture(RESULT_CAP)}
    caps[res_r].head_cap, caps[res_r].tail_cap = 0, RESULT_CAP
    oom_before = oom_counters()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        child(job["program"], secret, out_w, err_w, res_w)
    for fd in (out_w, err_w, res_w):
        os.close(fd)
    statuses = {}
    status, t_end = supervise(pid, t0 + timeout_s, caps)
    still_running = status is None
    kill_all(pid, statuses)
    if status is None:
        status = statuses[pid] if pid in statuses else os.waitpid(pid, 0)[1]
    timed_out = still_running and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    drain_rest(caps)
    wipe()
    res = {
        "id": job.get("id"),
        "duration_s": round(t_end - t0, 6),
        "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "stdout": caps[out_r].text(),
        "stderr": caps[err_r].text(),
        "truncated": caps[out_r].truncated or caps[err_r].truncated,
    }
    res["verdict"], res["detail"] = verdict(
        res, bytes(caps[res_r].tail), secret, timeout_s if timed_out else None,
        oom_before, oom_counters(),
    )
    return res


def verdict(res, channel, secret, timed_out_after, oom_before, oom_after):
    """(verdict, detail) from how the child ended and what it wrote on its result pipe."""
    if timed_out_after is not None:
        return "timeout", "timed out after %g s" % timed_out_after
    sig = res["signal"]
    if sig is not None:
        if sig == signal.SIGKILL:
            grew = [a is not None and b is not None and a > b for a, b in zip(oom_after, oom_before)]
            if grew[0]:
                return "error", "OOM: killed by the kernel at the container memory limit"
            if grew[1]:
                return "error", "OOM: killed by signal 9 after hitting the memory limit"
        return "error", "killed by signal %d (%s)" % (sig, signal_name(sig))
    lines = channel.split(b"\n")
    if res["exit_code"] == 0:
        if secret.encode() in lines:
            return "passed", ""
        return "failed", "exited with status 0 before the program ended (sys.exit/os._exit): not a pass"
    if b"H" + secret.encode() in lines:
        return "infra_error", "sandbox harness failed to start the program"
    for line in reversed(lines):
        if line.startswith(b"{"):
            try:
                report = json.loads(line)
                kind, detail = report["kind"], str(report["detail"])
            except (ValueError, KeyError, TypeError):
                continue
            return ("error" if kind == "crash" else "failed"), detail
    return "failed", "exited with status %d" % res["exit_code"]


def signal_name(sig):
    try:
        return signal.Signals(sig).name
    except ValueError:
        return "?"


# --- main loop -------------------------------------------------------------------------------


def main():
    # Private copies of the protocol channels; fds 0/1 then point at /dev/null.
    job_in, result_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    os.chdir("/")
    preimport()
    import gc

    gc.freeze()  # children never scan (and so never copy-on-write) the pre-imported objects
    write_frame(result_out, {
        "ready": True, "python": sys.version.split()[0], "numpy": "numpy" in sys.modules,
        "pid": os.getpid(),
    })
    while True:
        try:
            job = read_frame(job_in)
        except EOFError:
            return
        try:
            result = run_job(job)
        except Exception as e:  # an executor bug must cost one job, not the container
            kill_all(None, {})
            wipe()
            result = {"id": job.get("id"), "verdict": "infra_error", "duration_s": 0.0,
                      "detail": "executor: %s: %s" % (type(e).__name__, e)}
        write_frame(result_out, result)


if __name__ == "__main__":
    main()
