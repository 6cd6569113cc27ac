"""`python3 -m agentloop_executor [--scratch DIR]`: the executor's main loop.

In a container (the default) jobs run in /scratch/job and /scratch, /tmp and /dev/shm are wiped
after each. `--scratch DIR` runs jobs in DIR and wipes only DIR: the host-side fork server of
benchmarks/sandbox_throughput.py (trusted programs, no isolation).
"""

import os
import signal
import sys

from . import VERSION
from .framing import read_frame, write_frame
from .jobs import Place, run_job
from .procs import kill_all, wipe

PREIMPORTS = (
    "numpy", "numpy.random",  # numpy 2 loads numpy.random lazily; every candidate reseeds it
    "math", "cmath", "re", "string", "itertools", "functools", "collections",
    "heapq", "bisect", "random", "json", "typing", "fractions", "decimal", "statistics",
    "datetime", "hashlib", "copy", "operator", "array", "traceback", "linecache", "types",
    "builtins", "threading", "atexit", "io",
    "fcntl", "socket",  # the harness's own: every graded job uses them
)


def preimport():
    """Import what most candidates import, once, so each forked child gets it for free."""
    for name in PREIMPORTS:
        try:
            __import__(name)
        except Exception:  # an image without numpy is fine
            pass


def prctl(option, value):
    """-> prctl's answer, or None where it cannot be called."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, int(value), 0, 0, 0)
    except Exception:
        return None


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 64 << 20


def tune_malloc():
    """glibc's malloc in this process and every child forked from it: blocks under 32 MB come
    from the heap, and up to 64 MB freed at its top stay mapped. By default glibc maps and unmaps
    blocks from 128 KB up (the threshold adapts only as blocks are freed), so each large value that
    crosses between the tests and the candidate (pickled, sent, read, unpickled: several buffers
    of its size) page-faults fresh memory in again; 27 replies of 7 MB (HumanEval/15) cost 0.9 s
    of CPU that way against 0.23 s. -> whether the settings were taken (False off glibc)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        mmap_ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        trim_ok = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        return bool(mmap_ok and trim_ok)
    except Exception:
        return False


def set_dumpable(flag):
    """PR_SET_DUMPABLE 0 makes /proc/PID/{mem,fd,environ} of this process and every child forked
    from it (the tests' process holding the result pipe) unreadable to the candidate, though it
    runs as the same user; ptrace is refused too. -> the flag as the kernel now has it."""
    if prctl(4, flag) is None:  # PR_SET_DUMPABLE
        return None
    return bool(prctl(3, 0))  # PR_GET_DUMPABLE


def place_from_argv(argv):
    if len(argv) == 2 and argv[0] == "--scratch":
        return Place(argv[1], (argv[1],))
    if argv:
        raise SystemExit("usage: python3 -m agentloop_executor [--scratch DIR]")
    return Place()


def main(argv):
    place = place_from_argv(argv)
    # Private copies of the protocol channels; fds 0/1 then point at /dev/null.
    job_in, result_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    os.chdir("/")
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as PID 1, a signal with no handler is dropped
    if os.getpid() != 1:
        prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: a job's orphans come to us, CPU time included
    dumpable = set_dumpable(False)
    malloc_tuned = tune_malloc()
    preimport()
    import gc

    gc.freeze()  # children never scan (and so never copy-on-write) the pre-imported objects
    write_frame(result_out, {
        "ready": True, "version": VERSION, "python": sys.version.split()[0], "numpy": "numpy" in sys.modules,
        "pid": os.getpid(), "dumpable": dumpable, "malloc_tuned": malloc_tuned,
    })
    while True:
        try:
            job = read_frame(job_in)
        except EOFError:
            return
        try:
            result = run_job(job, place)
        except Exception as e:  # an executor bug must cost one job, not the container
            kill_all([], {})
            wipe(place.wipe_dirs)
            result = {"verdict": "infra_error", "duration_s": 0.0,
                      "detail": "executor: %s: %s" % (type(e).__name__, e)}
        result["id"] = job.get("id")
        write_frame(result_out, result)
        job = result = None  # a later job's candidate must not find this one's tests or output


if __name__ == "__main__":
    main(sys.argv[1:])
