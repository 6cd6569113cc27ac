"""The trusted side of a graded job: the suite's tests, calling the candidate over a socket.
Only this process holds the result pipe and, once all tests ran, the secret that proves it."""

import builtins
import hashlib
import marshal
import os
import sys

from .child import HARNESS_EXIT, RESULT_FD, _exit, enter_child, flush_std, fresh_main_module, report, report_exception
from .framing import BlobReader, write_blob
from .values import ProtocolError, Remote, UnsupportedValue, dumps_args, loads_value

RPC_FRAME_CAP = 256 << 20
TESTS_CACHE: dict = {}  # sha256 of a suite's tests -> their code object, marshalled (see compiled_tests)
TESTS_CACHE_BYTES = 48 << 20


class CandidateDied(Exception):
    """The candidate's process closed the connection (exited, crashed or was killed)."""


class Conn:
    """The tests' end of the connection to the candidate's process."""

    def __init__(self, fd):
        self.fd = fd
        self.reader = BlobReader(fd)

    def receive(self):
        """The candidate's next reply: its value, or its exception raised here."""
        try:
            data = self.reader.read_blob(RPC_FRAME_CAP)
        except (EOFError, OSError):
            raise CandidateDied from None
        except ValueError as e:
            raise ProtocolError(str(e)) from None
        try:
            reply = loads_value(data)
        except UnsupportedValue as e:
            raise TypeError(str(e)) from None
        except ProtocolError:
            raise
        except RecursionError:
            raise ProtocolError("a reply nested too deeply") from None
        except Exception as e:
            raise ProtocolError("a malformed reply (%s)" % type(e).__name__) from None
        if type(reply) is not tuple or len(reply) != 2 or reply[0] not in ("ok", "exc"):
            raise ProtocolError("a malformed reply")
        if reply[0] == "exc":
            raise local_exception(reply[1])
        return reply[1]

    def call(self, name, args, kwargs):
        data = dumps_args((name, args, kwargs))
        try:
            write_blob(self.fd, data)
        except OSError:
            raise CandidateDied from None
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
    """The suite's tests compiled, in the executor, before forking: a code object on a miss,
    else its marshalled bytes (the tests' process loads them: ~40x cheaper than compiling
    HumanEval+'s large literals, and every sample of a task is graded with the same tests).
    Marshalled, the cache costs the executor a few MB for a whole suite of tasks (HumanEval+:
    16 MB) where code objects cost ~3 times more and slow down every fork. Trusted code;
    compiling runs nothing."""
    key = hashlib.sha256(tests.encode("utf-8", "surrogatepass")).digest()
    blob = TESTS_CACHE.pop(key, None)
    if blob is not None:
        TESTS_CACHE[key] = blob  # most recently used last
        return blob
    code = compile(tests, "<tests>", "exec")
    blob = marshal.dumps(code)
    if len(blob) <= TESTS_CACHE_BYTES:
        TESTS_CACHE[key] = blob
        while sum(len(b) for b in TESTS_CACHE.values()) > TESTS_CACHE_BYTES:
            del TESTS_CACHE[next(iter(TESTS_CACHE))]
    return code


def tests_child(tests, code, entry_point, job_dir, out_w, err_w, res_w, rpc, go_r):
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
        sys.path[:] = [p for p in sys.path if p not in ("", ".", job_dir)]
        module = fresh_main_module("<tests>", tests)
        if type(code) is bytes:
            code = marshal.loads(code)
        conn = Conn(4)
    except BaseException:
        try:
            os.write(RESULT_FD, b"H" + secret + b"\n")
        finally:
            _exit(HARNESS_EXIT)
    token = secret + b"\n"
    del secret
    try:
        run_check(module.__dict__, code, entry_point, conn)
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


def run_check(namespace, code, entry_point, conn):
    """The candidate's exports into the tests' namespace, then the tests, then `check(candidate)`.
    The candidate handle is taken before the tests run, so an entry point named like one of the
    tests' own functions (MBPP+'s `check`) is still the candidate's."""
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
    candidate = namespace.get(entry_point)
    if type(candidate) is not Remote:
        candidate = Remote(entry_point, conn)
    exec(code, namespace)
    namespace["check"](candidate)


def importable(name):
    """A candidate name the tests may see: never one that would shadow a builtin (a candidate's
    own `abs` or `isinstance` must not answer the tests' assertions) or a dunder."""
    return type(name) is str and name.isidentifier() and not name.startswith("__") and not hasattr(builtins, name)
