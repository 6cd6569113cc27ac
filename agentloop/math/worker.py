"""The math worker server: ``python -m agentloop.math.worker``, started by `agentloop.math.pool`.

It never imports the user's ``__main__``: the pool starts it as a module of ours
(``sys.executable -m agentloop.math.worker``) and talks to it over its stdin and stdout. The server
imports sympy and latex2sympy2 once, checks that a parse works, seeds every random generator,
records the state a parse can leave behind (`CleanState`), and then forks its runners from that
clean image (a zygote), so a replacement costs a fork, not a re-import.

One item at a time per runner. Before each item a runner puts back everything an earlier item may
have changed: every module-level global of latex2sympy2 and of the agentloop.math modules that run
here (latex2sympy2 1.9.1 rebinds ``var`` when it meets "d followed by a letter", and adds to
``variances``), sympy's cache, sympy's global evaluation flags, the ``Dummy`` counter, the random
generators (Python's and sympy's), mpmath's precision, the decimal context, the recursion limit
and the int-to-str digit limit. A runner that imported a new module during an item, or whose
mutable latex2sympy2 matrices changed in place, is retired after that item and replaced by a fresh
fork, so nothing an item did reaches the next one.

The limit is CPU time, not wall time: each item runs under ``setitimer(ITIMER_PROF, cpu_s)``, whose
signal (SIGPROF, default action: terminate) the kernel delivers when the runner has used ``cpu_s``
seconds of CPU on that item, however busy the machine is and even inside C code. A wall-clock
backstop of ``3 * cpu_s + 5`` seconds kills a runner that cannot even get that much CPU.
RLIMIT_AS (``mem_mb``) bounds memory. Outcomes per item: ``ok`` (the result, which may be None when
nothing parses), ``error`` (the entry raised: None), ``cpu``, ``wall`` and ``memory`` (limits: the
caller gets None), ``recovered`` (answered on the retry below) and ``crash``.
A runner that dies any other way is not trusted to have been killed by its item: the item is
retried once in a fresh runner, and every fresh runner first parses a canary answer; only an item
that kills two fresh runners, each of which passed its canary, is reported as ``crash`` (None).
A runner that cannot start or pass its canary, or that dies while idle, is a broken pool: the server
sends ``fatal`` with a one-line reason and exits, and the pool raises `MathWorkerError`.

Protocol (both directions): frames of a 4-byte little-endian length and a pickle. Pool → server:
``("map", [str, ...])``. Server → pool: ``("ready", pid)`` once, then per batch one
``("item", index, outcome, result)`` per item in completion order and ``("done",)``; or
``("fatal", message)``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import decimal
import gc
import os
import pickle
import random
import re
import resource
import select
import signal
import socket
import struct
import sys
import time
import types
from collections import deque
from collections.abc import Callable
from typing import Any

CANARY = r"\frac{(z+1)^2}{2}"  # must parse in every runner before it takes an item
FAULT_ENV = "AGENTLOOP_MATH_WORKER_FAULT"  # tests only: "runner-start" makes every runner exit at start
EXIT_MEMORY = 3  # a runner that hit MemoryError outside the parser's own error handling
_HEADER = struct.Struct("<I")

# Answers the zygote parses at start-up, so sympy's lazily imported modules are loaded once in the
# image every runner is forked from (a runner that imports something new is retired, see above).
WARM_UP = [
    r"x^2+2x+1", r"\sin^2 x+\cos^2 x", r"e^{i\pi}", r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}",
    r"(-\infty, 3] \cup (5, \infty)", r"3 \pm \sqrt{2}", r"y = 2x+3", r"x^2 < 4", r"\frac{d}{dx} x^2", r"\text{(A)}",
]


class Fatal(Exception):
    """The server cannot answer: its message (one line) goes to the pool, which raises it."""


# --- framing -----------------------------------------------------------------------------------

class Channel:
    """Length-prefixed pickles over a pair of file descriptors (a pipe pair or one socket)."""

    def __init__(self, rfd: int, wfd: int) -> None:
        self.rfd, self.wfd, self.buf = rfd, wfd, bytearray()

    def send(self, obj: Any) -> None:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        view = memoryview(_HEADER.pack(len(data)) + data)
        while view:
            view = view[os.write(self.wfd, view):]

    def _frame(self) -> Any:
        if len(self.buf) >= 4:
            (n,) = _HEADER.unpack_from(self.buf)
            if len(self.buf) >= 4 + n:
                obj = pickle.loads(bytes(self.buf[4:4 + n]))
                del self.buf[:4 + n]
                return obj
        return _NOTHING

    def pending(self) -> bool:
        """Whether a whole frame is already buffered."""
        return self._frame_ready()

    def _frame_ready(self) -> bool:
        return len(self.buf) >= 4 and len(self.buf) >= 4 + _HEADER.unpack_from(self.buf)[0]

    def fill(self) -> None:
        """Read what is there (call when select says readable); EOFError when the other end is gone."""
        try:
            chunk = os.read(self.rfd, 1 << 20)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise EOFError
        self.buf += chunk

    def recv(self, timeout: float | None = None) -> Any:
        """The next object; TimeoutError after ``timeout`` seconds, EOFError when the peer is gone."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (obj := self._frame()) is _NOTHING:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.rfd], [], [], left)[0]:
                raise TimeoutError
            self.fill()
        return obj


_NOTHING = object()


# --- the state a parse may leave behind ----------------------------------------------------------

_IMMUTABLE = (type(None), bool, int, float, complex, str, bytes, range, re.Pattern, type, types.ModuleType,
              types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.GenericAlias,
              types.UnionType, property, staticmethod, classmethod)


class CleanState:
    """Everything a parse may change that could change a later parse, recorded once in the zygote.

    ``restore()`` runs before every item (tens of microseconds); ``tainted()`` after it says whether
    the runner must be retired instead (a new import, or a mutable matrix changed in place).
    """

    def __init__(self, modules: list[types.ModuleType]) -> None:
        import mpmath  # type: ignore[import-untyped]
        import sympy.core.random as sympy_random
        from sympy import Dummy
        from sympy.core.parameters import global_parameters

        self.matrices: dict[int, tuple[Any, Any, Any]] = {}
        self.caches: list[Any] = []
        self.modules = [(vars(m), {k: self._pristine(v) for k, v in vars(m).items() if not k.startswith("__")})
                        for m in modules]
        self._sizes = [(ns, len(ns)) for ns, _ in self.modules]
        self._containers = [(ns, k, v, type(v) is tuple or _has_containers(v))
                            for ns, saved in self.modules for k, v in saved.items() if _copied(v)]
        self._plain = [(ns, {k: v for k, v in saved.items() if not _copied(v)}.items()) for ns, saved in self.modules]
        self._params, self._flags = global_parameters, dict(vars(global_parameters))
        self._dummy, self._dummy_count = Dummy, Dummy._count
        self._rngs = [(g, g.getstate()) for g in (random._inst, sympy_random.rng, sympy_random._assumptions_rng)]
        self._mp, self._mp_prec = mpmath.mp, mpmath.mp.prec
        self._decimal = decimal.getcontext().copy()
        self._limits = (sys.getrecursionlimit(), sys.get_int_max_str_digits())
        self._n_modules = len(sys.modules)

    def _pristine(self, v: Any) -> Any:
        """A private copy of a module global (containers copied, leaves shared or fingerprinted)."""
        if isinstance(v, _IMMUTABLE) or _is_sympy_immutable(v):
            return v
        t = type(v)
        if t is dict:
            return {k: self._pristine(x) for k, x in v.items()}
        if t is list or t is set or t is tuple or t is frozenset:
            return t(self._pristine(x) for x in v)
        if hasattr(v, "_rep") and hasattr(v._rep, "to_list_flat"):  # a mutable sympy matrix
            self.matrices[id(v)] = (v, v._rep, copy.deepcopy(v._rep.rep))
            return v
        if callable(getattr(v, "cache_clear", None)):  # functools.lru_cache
            self.caches.append(v)
        return v  # an object we share as is (a typing alias, a printer): no parse writes to these

    @staticmethod
    def _fresh(v: Any) -> Any:
        t = type(v)
        if t is dict:
            return {k: CleanState._fresh(x) for k, x in v.items()}
        if t is list or t is set or (t is tuple and _has_containers(v)):
            return t(CleanState._fresh(x) for x in v)
        return v

    def restore(self) -> None:
        from sympy.core.cache import clear_cache

        for (namespace, saved), (_, size) in zip(self.modules, self._sizes, strict=True):
            if len(namespace) != size:  # a global that did not exist at start: remove it
                for extra in [k for k in namespace if k not in saved and not k.startswith("__")]:
                    del namespace[extra]
        for namespace, plain in self._plain:
            if not plain <= namespace.items():  # C-level, identity first: almost always unchanged
                namespace.update(plain)
        for namespace, k, v, deep in self._containers:
            namespace[k] = self._fresh(v) if deep else v.copy()
        for c in self.caches:
            c.cache_clear()
        clear_cache()
        for k, v in self._flags.items():
            setattr(self._params, k, v)
        self._dummy._count = self._dummy_count
        for g, st in self._rngs:
            g.setstate(st)
        self._mp.prec = self._mp_prec
        decimal.setcontext(self._decimal.copy())
        sys.setrecursionlimit(self._limits[0])
        sys.set_int_max_str_digits(self._limits[1])

    def tainted(self) -> bool:
        if len(sys.modules) != self._n_modules:
            return True
        return any(m._rep is not rep or rep.rep != held for m, rep, held in self.matrices.values())


_COPIED = (dict, list, set)


def _copied(v: Any) -> bool:
    """Whether a global is restored as a fresh copy (mutable containers, at any depth)."""
    return type(v) in _COPIED or (type(v) is tuple and _has_containers(v))


def _has_containers(v: Any) -> bool:
    """Whether a container holds a mutable container (then it is copied level by level)."""
    values = v.values() if type(v) is dict else v
    return any(type(x) in _COPIED or (type(x) is tuple and _has_containers(x)) for x in values)


def _is_sympy_immutable(v: Any) -> bool:
    from sympy import Basic

    return isinstance(v, Basic) and not hasattr(v, "_rep")  # sympy expressions never change


def _used_modules(root: types.ModuleType) -> list[types.ModuleType]:
    """``root`` and the agentloop.math modules whose code it uses (the code that runs in a runner)."""
    found, todo = {root.__name__: root}, [root]
    while todo:
        for v in vars(todo.pop()).values():
            name = v.__name__ if isinstance(v, types.ModuleType) else getattr(v, "__module__", None)
            if isinstance(name, str) and name.startswith("agentloop.math.") and name not in found:
                found[name] = sys.modules[name]
                todo.append(found[name])
    return list(found.values())


ENTRY = "agentloop.math._sym:canonical_form"  # the same string as agentloop.math.pool.ENTRY


def load(entry: str = ENTRY, seed: int = 0) -> tuple[Callable[[str], Any], CleanState]:
    """Import the parser, seed its randomness, warm it up, check it, and record the clean state."""
    import importlib

    import latex2sympy2
    import sympy.core.random as sympy_random

    module_name, _, func = entry.partition(":")
    module = importlib.import_module(module_name)
    parse: Callable[[str], Any] = getattr(module, func)
    random.seed(seed)
    sympy_random.seed(seed)
    modules = list({m.__name__: m for m in [latex2sympy2, *_used_modules(module)]}.values())
    state = CleanState(modules)
    for s in WARM_UP:  # loads sympy's lazy imports into the image every runner is forked from
        state.restore()
        try:
            parse(s)
        except Exception:  # noqa: BLE001 - a warm-up answer the entry cannot read is fine
            continue
    state.restore()
    try:
        ok = parse(CANARY) is not None
    except Exception:  # noqa: BLE001 - the message below says what to do
        ok = False
    if not ok and entry == ENTRY:  # another entry (a test's) need not read LaTeX
        raise Fatal(f"the math worker cannot parse the canary answer {CANARY!r} with {entry}: latex2sympy2 or its"
                    " antlr4 runtime is broken in this environment; reinstall: pip install latex2sympy2==1.9.1"
                    " antlr4-python3-runtime==4.7.2")
    state = CleanState(modules)  # again: the warm-up imported modules and must not count as taint
    return parse, state


# --- one runner ------------------------------------------------------------------------------------

def run_runner(ch: Channel, parse: Callable[[str], Any], state: CleanState, cpu_s: float, mem_mb: int,
               fresh: bool) -> int:
    """A forked runner: canary, then one item at a time until the server closes the channel."""
    if os.environ.get(FAULT_ENV) == "runner-start":
        return 71  # a test's way to make every runner die at start
    if mem_mb > 0:
        limit = mem_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGPROF, signal.SIG_DFL)
    item: str | None = CANARY  # the zygote parsed it already: it can neither taint nor retire a runner
    first = True
    while item is not None:
        state.restore()
        signal.setitimer(signal.ITIMER_PROF, cpu_s)
        kind = "ok"
        try:
            result = parse(item)
        except MemoryError:
            return EXIT_MEMORY
        except Exception:  # noqa: BLE001 - the parser said no: no canonical form, like a None
            kind, result = "error", None
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
        retire = not first and (fresh or state.tainted())
        first = False
        ch.send((kind, result, retire))
        if retire:
            return 0
        try:
            item = ch.recv()
        except EOFError:
            return 0
    return 0


# --- the server --------------------------------------------------------------------------------------

class Runner:
    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid, self.sock = pid, sock
        self.ch = Channel(sock.fileno(), sock.fileno())
        self.item: int | None = None
        self.deadline = 0.0


class Server:
    def __init__(self, up: Channel, parse: Callable[[str], Any], state: CleanState, workers: int,
                 cpu_s: float, mem_mb: int, fresh: bool) -> None:
        self.up, self.parse, self.state = up, parse, state
        self.size, self.cpu_s, self.mem_mb, self.fresh = workers, cpu_s, mem_mb, fresh
        self.wall_s = 3 * cpu_s + 5
        self.strict = True  # the canary must parse (off for a test's entry point)
        self.runners: list[Runner] = []

    def spawn(self) -> Runner:
        """Fork a runner from this clean image and wait for its canary; Fatal when it fails."""
        mine, theirs = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # the runner
            code = 70
            try:
                mine.close()
                for r in self.runners:
                    r.sock.close()
                os.close(self.up.rfd)
                os.close(self.up.wfd)
                code = run_runner(Channel(theirs.fileno(), theirs.fileno()), self.parse, self.state,
                                  self.cpu_s, self.mem_mb, self.fresh)
            except BaseException:  # noqa: BLE001 - report on stderr, exit with a code the server classifies
                import traceback
                traceback.print_exc()
            finally:
                os._exit(code)
        theirs.close()
        runner = Runner(pid, mine)
        try:
            _kind, result, _ = runner.ch.recv(self.wall_s)
        except (EOFError, TimeoutError) as e:
            if isinstance(e, TimeoutError):
                why = "did not answer"
                self._kill(runner)
            else:
                why = self._reap(runner)[1]  # reaped: never signal that pid again
            raise Fatal(f"a fresh math worker (pid {pid}) failed its self-check on {CANARY!r}: {why}; "
                        "check the memory limit (mem_mb) and that sympy and latex2sympy2 import cleanly") from None
        if result is None and self.strict:
            self._kill(runner)
            raise Fatal(f"a fresh math worker (pid {pid}) could not parse the canary {CANARY!r} (mem_mb too low?)")
        return runner

    def _reap(self, r: Runner) -> tuple[str, str]:
        """Wait for a dead runner: (outcome kind, description)."""
        _, status = os.waitpid(r.pid, 0)
        r.sock.close()
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            kind = "cpu" if sig in (signal.SIGPROF, signal.SIGXCPU) else "crash"
            return kind, f"killed by {signal.Signals(sig).name}"
        code = os.WEXITSTATUS(status)
        return ("memory" if code == EXIT_MEMORY else "crash"), f"exited with code {code}"

    def _kill(self, r: Runner) -> None:
        try:
            os.kill(r.pid, signal.SIGKILL)
            os.waitpid(r.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        r.sock.close()

    def start(self) -> None:
        while len(self.runners) < self.size:
            self.runners.append(self.spawn())

    def _replace(self, r: Runner) -> None:
        self.runners[self.runners.index(r)] = self.spawn()

    def _check_idle(self, r: Runner) -> None:
        pid, status = os.waitpid(r.pid, os.WNOHANG)
        if pid:
            how = (f"killed by {signal.Signals(os.WTERMSIG(status)).name}" if os.WIFSIGNALED(status)
                   else f"exited with code {os.WEXITSTATUS(status)}")
            r.sock.close()
            self.runners.remove(r)
            raise Fatal(f"a math worker (pid {r.pid}) died while idle ({how}): something outside agentloop "
                        "killed it (the OOM killer?); free memory or lower the number of math workers")

    def batch(self, items: list[str]) -> None:
        todo: deque[int] = deque(range(len(items)))
        crashes: dict[int, int] = {}
        left = len(items)
        while left:
            for r in self.runners:
                if r.item is None and todo:
                    self._check_idle(r)
            for r in list(self.runners):
                if r.item is None and todo:
                    r.item = todo.popleft()
                    r.deadline = time.monotonic() + self.wall_s
                    with contextlib.suppress(OSError):  # it just died: select sees its end closed, the item is retried
                        r.ch.send(items[r.item])
            busy = [r for r in self.runners if r.item is not None]
            wait = max(0.0, min(r.deadline for r in busy) - time.monotonic())
            ready = select.select([self.up.rfd] + [r.sock for r in busy], [], [], wait)[0]
            if self.up.rfd in ready:  # the pool never writes during a batch: its end is closed
                raise SystemExit(0)
            for r in busy:
                idx = r.item
                assert idx is not None
                if r.sock in ready:
                    try:
                        r.ch.fill()
                        if not r.ch.pending():
                            continue
                        said, result, retire = r.ch.recv()
                    except EOFError:
                        kind, _ = self._reap(r)
                        self._replace(r)
                        if kind == "crash" and crashes.get(idx, 0) == 0:
                            crashes[idx] = 1  # not yet the item's fault: once more in a fresh runner
                            todo.appendleft(idx)
                            continue
                        self.up.send(("item", idx, kind, None))
                        left -= 1
                        continue
                    r.item = None
                    if retire:
                        self._reap(r)
                        self._replace(r)
                    kind = "error" if said == "error" else "recovered" if crashes.get(idx) else "ok"
                    self.up.send(("item", idx, kind, result))
                    left -= 1
                elif time.monotonic() >= r.deadline:
                    self._kill(r)
                    self._replace(r)
                    self.up.send(("item", idx, "wall", None))
                    left -= 1
        self.up.send(("done",))

    def serve(self) -> None:
        while True:
            try:
                msg = self.up.recv()
            except EOFError:
                return
            if msg[0] == "map":
                self.batch(msg[1])

    def stop(self) -> None:
        for r in self.runners:
            self._kill(r)
        self.runners.clear()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agentloop.math.worker")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cpu-s", type=float, default=2.0)
    ap.add_argument("--mem-mb", type=int, default=2048)
    ap.add_argument("--fresh", action="store_true", help="retire each runner after one item (a reference mode)")
    ap.add_argument("--entry", default=ENTRY, help="module:function that turns one string into a picklable result")
    args = ap.parse_args(argv)
    up = Channel(0, os.dup(1))
    os.dup2(2, 1)  # a stray print from a library goes to stderr, never into the protocol
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    server = None
    try:
        import warnings
        warnings.simplefilter("ignore")
        parse, state = load(args.entry)
        gc.collect()
        gc.freeze()  # runners share the image copy-on-write; the collector leaves it alone
        server = Server(up, parse, state, max(1, args.workers), args.cpu_s, args.mem_mb, args.fresh)
        server.strict = args.entry == ENTRY
        server.start()
        up.send(("ready", os.getpid()))
        server.serve()
        return 0
    except Fatal as e:
        _tell(up, str(e))
        return 1
    except BrokenPipeError:
        return 0  # the pool is gone
    except Exception as e:
        _tell(up, f"the math worker failed: {type(e).__name__}: {e}")
        raise
    finally:
        if server is not None:
            server.stop()


def _tell(up: Channel, message: str) -> None:
    with contextlib.suppress(OSError):
        up.send(("fatal", " ".join(message.split())))


if __name__ == "__main__":
    sys.exit(main())
