"""What every forked child shares: its set-up, how it reports, and how it exits like Python."""

import builtins
import json
import os
import sys

RESULT_FD = 3  # the child's private result pipe; every other fd above 2 is closed
HARNESS_EXIT = 125  # the child's set-up failed before the program started
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

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
    import linecache
    import types

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
    """The traceback as Python prints it, without the executor's own frames."""
    import traceback

    te = traceback.TracebackException(type(e), e, e.__traceback__)
    for link in [te] + [x for x in (te.__cause__, te.__context__) if x is not None]:
        link.stack = traceback.StackSummary.from_list([f for f in link.stack if not own_frame(f.filename)])
    return "".join(te.format())


def own_frame(filename):
    return filename.startswith(PACKAGE_DIR + os.sep) or filename == "<string>"


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
