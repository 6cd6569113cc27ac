"""Fork server that is the main process of every sandbox container.

Started as `python3 -c <this source>` so a changed executor needs no image rebuild; therefore it
is stdlib-only and runs on whatever python3 (>= 3.9) the image has. It pays the interpreter start
and the numpy import once, then forks per job, which is what makes a sandboxed run cheaper than a
bare `python3 -` on the host.

Protocol (both directions): a 4-byte big-endian length, then that many bytes of UTF-8 JSON.
  host -> executor: {"id", "timeout_s", "output_limit"} plus either
    {"candidate", "tests", "entry_point"} (a graded job) or {"program"} (a plain one)
  executor -> host: {"ready": true, ...} once at start, then one result object per job
    {"id", "verdict", "duration_s", "exit_code", "signal", "stdout", "stderr", "truncated",
     "detail"} (the fields of agentloop.sandbox.types.ExecResult).

Results go to a private dup of the original stdout; fds 0/1 are pointed at /dev/null at start so
that neither a stray print here nor any child can corrupt the protocol.

Graded jobs cannot be forged. The suite's tests run in one process, the candidate module in
another, and the tests call the candidate's functions over a socket; values cross as tagged JSON
and are rebuilt as exact built-in types, so nothing the candidate defines or patches runs on the
tests' side. Only the tests' process holds the result pipe, and `passed` needs the per-job secret
that it receives after the candidate's process was forked and writes only once `check` returned.
Both are non-dumpable, so the candidate (same uid) cannot read their memory or fds via /proc or
ptrace. Uncaught exceptions are `failed`; signals, MemoryError and RecursionError are `error`; a
candidate process that exits or dies early is `failed` or `error`; the wall clock is `timeout`.

Plain jobs (`agentloop sandbox exec`) run in one process: exit 0 plus the secret written after the
code returned, so `sys.exit(0)` halfway is `failed`; a deliberately hostile program could forge that.

As the container's PID 1 the executor cannot be signalled by the program and inherits (and kills)
every process the job leaves behind.
"""

import builtins
import io
import json
import os
import pickle
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
    "fcntl", "socket",  # the harness's own: every graded job uses them
)
TESTS_CACHE = {}  # tests source -> code object: a suite's tests compile once per container
TESTS_CACHE_SIZE = 64


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


# --- values across the test/candidate boundary ----------------------------------------------
#
# Graded jobs run the candidate and the tests in two processes (see `start_graded`); arguments and
# return values cross between them pickled. The tests' side unpickles with `ValueUnpickler`, which
# resolves no class but the built-in value types and numpy.array, so no object the candidate
# builds (an `__eq__` that is always True, an int subclass, a patched module) reaches an assertion.
# (Pickle's C implementation makes this ~7x cheaper than a tagged-JSON walk on HumanEval+.)


class ProtocolError(Exception):
    """The candidate's process sent something that is not a well-formed reply."""


class UnsupportedValue(TypeError):
    pass


VALUE_TYPES = ("bool", "int", "float", "complex", "str", "bytes", "bytearray", "tuple", "list",
               "dict", "set", "frozenset", "range")
RPC_FRAME_CAP = 256 << 20


class ValueUnpickler(pickle.Unpickler):
    """The tests' side: rebuilds exact built-in values; refuses every other class and any id."""

    def find_class(self, module, name):
        if module == "builtins" and name in VALUE_TYPES:
            return getattr(builtins, name)
        if (module, name) == ("numpy", "array") and "numpy" in sys.modules:
            return sys.modules["numpy"].array
        raise UnsupportedValue("cannot pass a value of type %s.%s between the candidate and the tests" % (module, name))

    def persistent_load(self, pid):
        raise ProtocolError("unexpected persistent id")


def loads_value(data):
    return ValueUnpickler(io.BytesIO(data)).load()


class ValuePickler(pickle.Pickler):
    """The candidate's side: subclasses of value types cross as their base type, numpy arrays and
    scalars as numpy.array / Python scalars; anything else fails to unpickle over there."""

    BASES = (bool, int, float, complex, str, bytes, bytearray, tuple, list, dict, set, frozenset, range)

    def reducer_override(self, obj):
        np = sys.modules.get("numpy")
        if np is not None:
            if isinstance(obj, np.ndarray):
                return np.array, (obj.tolist(), obj.dtype.str)
            if isinstance(obj, np.generic):
                item = obj.item()
                return type(item), (item,)
        for base in self.BASES:
            if isinstance(obj, base) and type(obj) is not base:
                return base, (base(obj),)
        return NotImplemented


def dumps_value(obj):
    out = io.BytesIO()
    ValuePickler(out, 5).dump(obj)
    return out.getvalue()


class ArgsPickler(pickle.Pickler):
    """The tests' side, only when an argument is a candidate function: sent as its name."""

    def persistent_id(self, obj):
        return obj.name if type(obj) is Remote else None


class ArgsUnpickler(pickle.Unpickler):
    """The candidate's side: the tests' own values; ids name the candidate's functions."""

    def __init__(self, data, namespace):
        super().__init__(io.BytesIO(data))
        self.namespace = namespace

    def persistent_load(self, pid):
        return self.namespace[pid]


def write_blob(fd, data):
    view = memoryview(struct.pack(">I", len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def read_blob(fd, cap=None):
    (n,) = struct.unpack(">I", read_exact(fd, 4))
    if cap is not None and n > cap:
        raise ProtocolError("a reply of %d bytes is over the cap" % n)
    return read_exact(fd, n)


# --- the children ----------------------------------------------------------------------------


_exit = os._exit  # kept: a candidate may replace os._exit in its own process


def in_child(fn, *args):
    """Run `fn` in a freshly forked child, which must never return into the executor's loop."""
    try:
        fn(*args)
    finally:
        _exit(HARNESS_EXIT)


def enter_child(fds, cwd):
    """Common set-up of a forked child: new session, its fds at 0..n, nothing else open.
    `fds` are placed at 1, 2, 3, ...; stdin is /dev/null."""
    import fcntl

    os.setsid()
    os.chdir(cwd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, 256) for fd in fds]  # above every target number
    for target, fd in enumerate(moved, start=1):
        os.dup2(fd, target, inheritable=target <= 2)
    os.closerange(len(fds) + 1, 1 << 16)


def fresh_main_module(filename, source):
    import linecache, types

    module = types.ModuleType("__main__")
    module.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = module
    sys.argv = [""]
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    return module


def candidate_setup():
    try:  # let the OOM killer pick the candidate, never the executor or the tests
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass
    if "numpy" in sys.modules:  # fork copied the parent's RNG state: reseed like a fresh run
        sys.modules["numpy"].random.seed()


def child(program, secret, out_w, err_w, res_w):
    """Plain job (`sandbox exec`): the whole program in one process. Never returns."""
    try:
        enter_child((out_w, err_w, res_w), JOB_DIR)
        candidate_setup()
        module = fresh_main_module("<candidate>", program)
    except BaseException:
        try:
            os.write(res_w, b"H" + secret.encode() + b"\n")
        finally:
            _exit(HARNESS_EXIT)
    token = secret.encode() + b"\n"
    del secret
    try:
        exec(compile(program, "<candidate>", "exec"), module.__dict__)
    except SystemExit as e:
        status = exit_status(e.code)
        _exit(flush_std() or status)
    except BaseException as e:
        report_exception(e)
        flush_std()
        _exit(1)
    finish(token)


def candidate_child(source, out_w, err_w, rpc):
    """Graded job, candidate side: import the candidate module, then serve calls from the tests.
    Holds no secret and no result channel, so whatever it does it cannot write a verdict. Once the
    candidate's code has run, any failure here is the candidate's doing: exit status 1."""
    try:
        enter_child((out_w, err_w, rpc), JOB_DIR)
        candidate_setup()
        module = fresh_main_module("<candidate>", source)
    except BaseException:
        _exit(HARNESS_EXIT)
    try:
        serve_candidate(source, module.__dict__, 3)
    finally:
        _exit(1)


def serve_candidate(source, namespace, rpc):
    try:
        exec(compile(source, "<candidate>", "exec"), namespace)
        hello = ("ok", exported(namespace))
    except BaseException as e:
        hello = ("exc", remote_exception(e))
    flush_std()
    write_blob(rpc, dumps_value(hello))
    if hello[0] == "exc":
        return
    while True:
        try:
            request = read_blob(rpc)
        except EOFError:
            _exit(flush_std())
        try:
            name, args, kwargs = ArgsUnpickler(request, namespace).load()
            reply = dumps_value(("ok", namespace[name](*args, **kwargs)))
        except BaseException as e:
            reply = dumps_value(("exc", remote_exception(e)))
        flush_std()
        write_blob(rpc, reply)


def exported(namespace):
    """What the tests may use from the candidate module: its functions (as names) and the values
    that will unpickle on the tests' side."""
    functions, values = [], []
    for name, value in list(namespace.items()):
        if name.startswith("__") or type(value).__name__ == "module":
            continue
        if callable(value):
            functions.append(name)
            continue
        try:
            loads_value(dumps_value(value))
        except BaseException:
            continue
        values.append((name, value))
    return functions, values


def remote_exception(e):
    try:
        tb = format_exception(e)[-4000:]
        msg = str(e)[:2000]
    except BaseException:
        tb, msg = "", "<unprintable>"
    return [type(e).__name__, msg, tb]


class Remote:
    """The tests' handle on a function defined by the candidate: calling it runs it over there."""

    __slots__ = ("name", "conn")

    def __init__(self, name, conn):
        self.name, self.conn = name, conn

    def __call__(self, *args, **kwargs):
        return self.conn.call(self.name, args, kwargs)

    def __repr__(self):
        return "<candidate function %s>" % self.name

    def __reduce__(self):
        raise TypeError("pickled by id")  # see Conn.call


class CandidateDied(Exception):
    """The candidate's process closed the connection (exited, crashed or was killed)."""


class Conn:
    """The tests' end of the connection to the candidate's process."""

    def __init__(self, fd):
        self.fd = fd

    def receive(self):
        """The candidate's next reply: its value, or its exception raised here."""
        try:
            data = read_blob(self.fd, RPC_FRAME_CAP)
        except (EOFError, OSError):
            raise CandidateDied()
        try:
            reply = loads_value(data)
        except UnsupportedValue as e:
            raise TypeError(str(e)) from None
        except RecursionError:
            raise ProtocolError("a reply nested too deeply")
        except Exception as e:
            raise ProtocolError("a malformed reply (%s)" % type(e).__name__)
        if type(reply) is not tuple or len(reply) != 2 or reply[0] not in ("ok", "exc"):
            raise ProtocolError("a malformed reply")
        if reply[0] == "exc":
            raise local_exception(reply[1])
        return reply[1]

    def call(self, name, args, kwargs):
        request = (name, args, kwargs)
        try:
            data = pickle.dumps(request, 5)
        except TypeError:  # a candidate function among the arguments (Remote refuses to pickle)
            out = io.BytesIO()
            ArgsPickler(out, 5).dump(request)
            data = out.getvalue()
        try:
            write_blob(self.fd, data)
        except OSError:
            raise CandidateDied()
        return self.receive()


# Exceptions the candidate may raise across the boundary as themselves; others become RuntimeError.
PORTABLE_EXCEPTIONS = (
    "ArithmeticError", "AssertionError", "AttributeError", "EOFError", "FloatingPointError",
    "IndexError", "KeyError", "LookupError", "MemoryError", "NameError", "NotImplementedError",
    "OverflowError", "RecursionError", "RuntimeError", "StopIteration", "SyntaxError",
    "IndentationError", "TypeError", "UnboundLocalError", "UnicodeError", "ValueError",
    "ZeroDivisionError", "TimeoutError", "OSError",
)


def local_exception(exc):
    if type(exc) is not list or len(exc) != 3 or not all(type(v) is str for v in exc):
        return ProtocolError("a malformed exception")
    name, msg, tb = exc
    if name in PORTABLE_EXCEPTIONS:
        cls = getattr(builtins, name)
    else:  # same name, plain behaviour: SystemExit or a custom class must not act as such here
        cls = type(name, (RuntimeError,), {"__module__": "builtins"})
    e = cls(msg)
    e.remote_traceback = tb
    return e


def compiled_tests(tests):
    """Compiled in the executor, before forking: HumanEval+ tests hold large literals, and every
    sample of a task is graded with the same ones. Trusted code; compiling runs nothing."""
    code = TESTS_CACHE.pop(tests, None)
    if code is None:
        code = compile(tests, "<tests>", "exec")
        while len(TESTS_CACHE) >= TESTS_CACHE_SIZE:
            del TESTS_CACHE[next(iter(TESTS_CACHE))]
    TESTS_CACHE[tests] = code  # most recently used last
    return code


def tests_child(tests, code, entry_point, out_w, err_w, res_w, rpc, go_r):
    """Graded job, tests side: runs only the suite's (trusted) test code, calling the candidate's
    functions over `rpc`; it alone holds the result channel and, once read from `go_r`, the
    secret that proves all tests ran. Never returns."""
    secret = b""
    try:
        enter_child((out_w, err_w, res_w, rpc, go_r), "/")
        while len(secret) < 32:
            chunk = os.read(5, 32 - len(secret))
            if not chunk:
                break
            secret += chunk
        os.close(5)
        if len(secret) != 32:
            raise RuntimeError("no secret")
        sys.path[:] = [p for p in sys.path if p not in ("", ".", JOB_DIR)]
        module = fresh_main_module("<tests>", tests)
        conn = Conn(4)
    except BaseException:
        try:
            os.write(RESULT_FD, b"H" + secret + b"\n")
        finally:
            _exit(HARNESS_EXIT)
    token = secret + b"\n"
    del secret
    try:
        namespace = module.__dict__
        hello = conn.receive()
        if type(hello) is not tuple or len(hello) != 2 or type(hello[0]) is not list or type(hello[1]) is not list:
            raise ProtocolError("a malformed hello")
        for name in hello[0]:
            if importable(name):
                namespace[name] = Remote(name, conn)
        for item in hello[1]:
            if type(item) is not tuple or len(item) != 2:
                raise ProtocolError("a malformed hello")
            if importable(item[0]):
                namespace[item[0]] = item[1]
        exec(code, namespace)
        namespace["check"](namespace[entry_point] if entry_point in namespace else Remote(entry_point, conn))
    except CandidateDied:
        report({"kind": "candidate_died", "detail": ""})
        _exit(1)
    except ProtocolError as e:
        report({"kind": "exception", "detail": "the candidate broke the test protocol: %s" % e})
        _exit(1)
    except BaseException as e:
        report_exception(e)
        flush_std()
        _exit(1)
    status = flush_std()
    try:
        os.write(RESULT_FD, token)
    except BaseException:
        status = 120
    _exit(status)


def importable(name):
    """A candidate name the tests may see: never one that would shadow a builtin (a candidate's
    own `abs` or `isinstance` must not answer the tests' assertions) or a dunder."""
    return type(name) is str and name.isidentifier() and not name.startswith("__") and not hasattr(builtins, name)


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


def report(obj):
    try:
        os.write(RESULT_FD, json.dumps(obj).encode() + b"\n")
    except BaseException:
        pass


def report_exception(e):
    kind = "crash" if isinstance(e, (MemoryError, RecursionError)) else "exception"
    try:
        msg = str(e)
    except BaseException:
        msg = "<unprintable>"
    line = type(e).__name__ + (": " + " ".join(msg.split()) if msg.strip() else "")
    report({"kind": kind, "detail": line[:500]})
    try:
        sys.stderr.write(format_exception(e))
        remote = getattr(e, "remote_traceback", "")
        if remote:
            sys.stderr.write("\nIn the candidate:\n" + remote)
        sys.stderr.flush()
    except BaseException:
        pass


def format_exception(e):
    """The traceback as Python prints it, without the executor's own frames (file "<string>")."""
    import traceback

    te = traceback.TracebackException(type(e), e, e.__traceback__)
    for link in [te] + [x for x in (te.__cause__, te.__context__) if x is not None]:
        link.stack = traceback.StackSummary.from_list([f for f in link.stack if f.filename != "<string>"])
    return "".join(te.format())


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
    _exit(flush_std() or status)


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


def kill_all(pgids, statuses):
    """SIGKILL the job's process groups, then every other process of our user (setsid escapees)."""
    pgids = [p for p in pgids if p is not None]
    for pgid in pgids:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass
    for pid in pgids:  # our children and group leaders: wait for them rather than poll /proc
        try:
            statuses[pid] = os.waitpid(pid, 0)[1]
        except ChildProcessError:  # reaped already
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
    """One job -> its result. A graded job ({"candidate", "tests", "entry_point"}) runs the tests and
    the candidate in two processes; a plain job ({"program"}) runs one program (`sandbox exec`)."""
    timeout_s = float(job["timeout_s"])
    limit = int(job.get("output_limit", 16384))
    graded = "program" not in job
    # A broken suite: infra_error, no fds open. Held in a list the candidate's process can empty.
    code = [compiled_tests(job["tests"])] if graded else None
    os.makedirs(JOB_DIR, exist_ok=True)
    (out_r, out_w), (err_r, err_w), (res_r, res_w) = os.pipe(), os.pipe(), os.pipe()
    caps = {out_r: Capture(limit), err_r: Capture(limit), res_r: Capture(RESULT_CAP)}
    caps[res_r].head_cap, caps[res_r].tail_cap = 0, RESULT_CAP
    oom_before = oom_counters()
    t0 = time.monotonic()
    if graded:
        pid, cpid, secret = start_graded(job, code, out_w, err_w, res_w)
    else:
        cpid, secret = None, os.urandom(16).hex()
        pid = os.fork()
        if pid == 0:
            in_child(child, job["program"], secret, out_w, err_w, res_w)
        for fd in (out_w, err_w, res_w):
            os.close(fd)
    statuses = {}
    status, t_end = supervise(pid, t0 + timeout_s, caps)
    still_running = status is None
    kill_all([pid, cpid], statuses)
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
    oom = (oom_before, oom_counters())
    channel = bytes(caps[res_r].tail)
    if timed_out:
        res["verdict"], res["detail"] = "timeout", "timed out after %g s" % timeout_s
    else:
        res["verdict"], res["detail"] = verdict(res["exit_code"], res["signal"], channel, secret, oom)
    if graded and res["verdict"] == "failed" and b'"candidate_died"' in channel:
        res["verdict"], res["detail"] = candidate_death(statuses.get(cpid), oom)
    return res


def start_graded(job, code, out_w, err_w, res_w):
    """Fork the tests' process, then the candidate's, and only then make the secret and hand it
    to the tests: the candidate's process never had it in memory, nor the result pipe open.
    The candidate's process also drops every Python reference to test code it inherited (this
    job's, and the cached tests of earlier jobs) before the candidate runs; see SECURITY.md."""
    import socket

    tests_end, cand_end = (s.detach() for s in socket.socketpair())
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(go_w)
        in_child(tests_child, job["tests"], code[0], job["entry_point"], out_w, err_w, res_w, tests_end, go_r)
    os.close(go_r)
    cpid = os.fork()
    if cpid == 0:
        source = job["candidate"]
        job.clear()  # the same dict the executor's loop holds
        code.clear()
        TESTS_CACHE.clear()
        in_child(candidate_child, source, out_w, err_w, cand_end)
    for fd in (out_w, err_w, res_w, tests_end, cand_end):
        os.close(fd)
    secret = os.urandom(16).hex()
    try:
        os.write(go_w, secret.encode())
    except OSError:  # the tests' process is already gone: its status tells why
        pass
    os.close(go_w)
    return pid, cpid, secret


def verdict(exit_code, sig, channel, secret, oom):
    """(verdict, detail) from how the process that holds the result pipe ended and what it wrote."""
    if sig is not None:
        return killed(sig, oom)
    lines = channel.split(b"\n")
    if exit_code == 0:
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
    return "failed", "exited with status %d" % exit_code


def killed(sig, oom):
    if sig == signal.SIGKILL:
        before, after = oom
        grew = [a is not None and b is not None and a > b for a, b in zip(after, before)]
        if grew[0]:
            return "error", "OOM: killed by the kernel at the container memory limit"
        if grew[1]:
            return "error", "OOM: killed by signal 9 after hitting the memory limit"
    return "error", "killed by signal %d (%s)" % (sig, signal_name(sig))


def candidate_death(status, oom):
    """The tests lost the candidate's process: say how it ended."""
    if status is not None and os.WIFSIGNALED(status):
        return killed(os.WTERMSIG(status), oom)
    code = os.WEXITSTATUS(status) if status is not None and os.WIFEXITED(status) else None
    if code == HARNESS_EXIT:
        return "infra_error", "sandbox harness failed to start the candidate"
    return "failed", "the candidate's process ended (exit status %s) before the tests finished: not a pass" % code


def signal_name(sig):
    try:
        return signal.Signals(sig).name
    except ValueError:
        return "?"


def set_dumpable(flag):
    """PR_SET_DUMPABLE 0 makes /proc/PID/{mem,fd,environ} of this process and every child forked
    from it (the tests' process holding the result pipe) unreadable to the candidate, though it
    runs as the same user; ptrace is refused too. -> the flag as the kernel now has it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(4, int(flag), 0, 0, 0)  # PR_SET_DUMPABLE
        return bool(libc.prctl(3, 0, 0, 0, 0))  # PR_GET_DUMPABLE
    except Exception:
        return None


# --- main loop -------------------------------------------------------------------------------


def main():
    # Private copies of the protocol channels; fds 0/1 then point at /dev/null.
    job_in, result_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    os.chdir("/")
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as PID 1, a signal with no handler is dropped
    dumpable = set_dumpable(False)
    preimport()
    import gc

    gc.freeze()  # children never scan (and so never copy-on-write) the pre-imported objects
    write_frame(result_out, {
        "ready": True, "python": sys.version.split()[0], "numpy": "numpy" in sys.modules,
        "pid": os.getpid(), "dumpable": dumpable,
    })
    while True:
        try:
            job = read_frame(job_in)
        except EOFError:
            return
        try:
            result = run_job(job)
        except Exception as e:  # an executor bug must cost one job, not the container
            kill_all([], {})
            wipe()
            result = {"id": job.get("id"), "verdict": "infra_error", "duration_s": 0.0,
                      "detail": "executor: %s: %s" % (type(e).__name__, e)}
        write_frame(result_out, result)
        job = result = None  # a later job's candidate must not find this one's tests or output


if __name__ == "__main__":
    main()
