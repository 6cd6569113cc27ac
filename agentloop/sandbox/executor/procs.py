"""Supervising a job's processes: draining their pipes, charging their CPU time against the
limit, killing and reaping them, and wiping what they wrote.

CPU time is that of the job's processes: live ones from /proc/PID/stat (utime + stime + the
cutime/cstime of the children they reaped), finished ones from the executor's RUSAGE_CHILDREN
(the executor reaps every process of a job in the end: as the container's PID 1 it inherits the
orphans, and elsewhere it is a child subreaper). The total at the end is exact; the live reading
only decides when to stop a job early.
"""

import os
import resource
import select
import shutil
import signal
import sys
import time

from . import wall_backstop

TICKS = os.sysconf("SC_CLK_TCK")
MIN_CHECK_S = 0.01


def reaped_cpu():
    """CPU seconds of every child (and their reaped descendants) the executor has reaped."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def job_stats(sessions):
    """(pid, fields after the command name) of every live job process. As PID 1 (in a container)
    that is every other process of our user; elsewhere the descendants of the executor (a child
    subreaper, so orphans stay among them) in the job's sessions."""
    me = os.getpid()
    if me == 1:
        uid = os.getuid()
        pids = [int(n) for n in os.listdir("/proc") if n.isdigit() and int(n) != me and owned_by(n, uid)]
    else:
        pids = descendants(me)
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid, "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()
        if me == 1 or int(fields[3]) in sessions:
            yield pid, fields


def owned_by(name, uid):
    try:
        return os.stat("/proc/" + name).st_uid == uid
    except OSError:
        return False


def descendants(pid):
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            tids = os.listdir("/proc/%d/task" % parent)
        except OSError:
            continue
        for tid in tids:
            try:
                with open("/proc/%d/task/%s/children" % (parent, tid)) as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


def live_cpu(sessions):
    ticks = 0
    for _, fields in job_stats(sessions):
        ticks += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return ticks / TICKS


class one_cpu:
    """Pin what is forked inside to the CPU the executor runs on now (where the scheduler just
    woke it for this job). A graded job's two processes ping-pong over a socket for every call:
    on one CPU a round trip costs a few µs, across CPUs (an inter-processor wakeup, costly in a
    VM) over ten times more. A job cannot use more than one CPU's worth anyway (the container's
    quota), and CPU time, not wall time, is what its limit charges."""

    def __enter__(self):
        self.allowed = os.sched_getaffinity(0)
        self.pinned = False
        if len(self.allowed) > 1:
            try:
                with open("/proc/self/stat", "rb") as f:
                    stat = f.read()
                cpu = int(stat[stat.rindex(b")") + 2:].split()[36])  # field 39: processor
                if cpu in self.allowed:
                    os.sched_setaffinity(0, {cpu})
                    self.pinned = True
            except (OSError, ValueError, IndexError):
                pass
        return self

    def __exit__(self, *exc):
        if self.pinned:
            os.sched_setaffinity(0, self.allowed)


class Clock:
    """A job's CPU and wall time, against its limit (CPU seconds) and its wall-clock backstop."""

    def __init__(self, limit_s, stall_s=0.0):
        self.limit_s = limit_s
        self.t0 = time.monotonic()
        self.wall_deadline = self.t0 + wall_backstop(limit_s)
        self.cpu_base = reaped_cpu()
        self.sessions = set()
        self.stall_until = self.t0 + stall_s if stall_s else None
        self.ncpu = max(1, len(os.sched_getaffinity(0)))
        self.next_check = self.t0 + limit_s / self.ncpu

    def used(self):
        return reaped_cpu() - self.cpu_base + live_cpu(self.sessions)

    def stall(self):
        """Test hook: stop the job's processes now, as a stalled machine would (SIGCONT later)."""
        self._signal(signal.SIGSTOP)

    def _signal(self, sig):
        # The processes themselves (they may not have called setsid() yet), then their groups.
        for sid in self.sessions:
            for send in (os.kill, os.killpg):
                try:
                    send(sid, sig)
                except OSError:
                    pass

    def tick(self, now):
        """-> "cpu" | "wall" when the job must stop, else None; seconds until the next look."""
        if self.stall_until is not None and now >= self.stall_until:
            self._signal(signal.SIGCONT)
            self.stall_until = None
        if now >= self.wall_deadline:
            return "wall", 0
        if now >= self.next_check:
            left = self.limit_s - self.used()
            if left <= 0:
                return "cpu", 0
            # The job cannot use more than `ncpu` CPU seconds per second: no need to look sooner.
            self.next_check = now + max(MIN_CHECK_S, left / self.ncpu)
        wake = min(self.wall_deadline, self.next_check)
        if self.stall_until is not None:
            wake = min(wake, self.stall_until)
        return None, wake - now


def supervise(pid, clock, caps):
    """Drain the child's pipes until it exits or its time is up. -> (status|None, stopped, end)."""
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
            now = time.monotonic()
            if done:
                return status, None, now
            stopped, left = clock.tick(now)
            if stopped:
                return None, stopped, now
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


def kill_all(pgids, statuses, sessions=()):
    """SIGKILL the job's process groups, then every other job process (setsid escapees), and
    reap them all."""
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
    for _ in range(300):
        others = []
        for pid, fields in job_stats(set(sessions) | set(pgids)):
            if fields[0] == b"Z":
                continue
            try:
                os.kill(pid, signal.SIGKILL)
                others.append(pid)
            except OSError:
                pass
        reap(statuses)
        if not others:
            return
        time.sleep(0.005)


def reap(statuses):
    """Reap every exited child; as PID 1 (or subreaper) we also inherit the orphans of the job."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        statuses[pid] = status


def wipe(dirs):
    for root in dirs:
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
