"""How a job ended -> (verdict, detail). Pure functions of exit statuses and the result channel."""

import json
import os
import signal

from .child import HARNESS_EXIT


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


def time_verdict(stopped, cpu_s, limit_s, wall_s):
    """(verdict, detail) when the job ran out of time, else None. CPU seconds decide; the wall
    clock only ends a job that sleeps or blocks. Decided from the totals, not from when the
    supervisor happened to look, so the same program gets the same verdict."""
    if stopped == "cpu" or cpu_s >= limit_s:
        cpu_s = max(cpu_s, limit_s)
        return "timeout", ("timed out after %g s (used %.2f CPU s, over its limit of %g CPU s)"
                           % (limit_s, cpu_s, limit_s))
    if stopped == "wall":
        return "timeout", ("timed out after %g s (still running after %.1f s wall clock having used only %.2f CPU s:"
                           " sleeping or blocked)" % (limit_s, wall_s, cpu_s))
    return None


def signal_name(sig):
    try:
        return signal.Signals(sig).name
    except ValueError:
        return "?"


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
