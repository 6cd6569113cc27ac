"""One job: a plain program, or a candidate graded against one or more test suites, each suite
against a fresh fork of the candidate (so one suite cannot change what another sees), each held
to the time limit on its own and given its own verdict."""

import os

from .candidate import candidate_child, plain_child
from .capture import Capture
from .child import in_child
from .procs import Clock, drain_rest, kill_all, one_cpu, supervise, wipe
from .tests_side import TESTS_CACHE, compiled_tests, tests_child
from .verdicts import candidate_death, oom_counters, time_verdict, verdict

RESULT_CAP = 65536  # tail of the result pipe kept (the harness writes last)
RPC_SOCKET_BUFFER = 1 << 20


class Place:
    """Where jobs run: the job's working dir and the dirs wiped after every job."""

    def __init__(self, scratch="/scratch", wipe_dirs=("/scratch", "/tmp", "/dev/shm")):
        self.job_dir = os.path.join(scratch, "job")
        self.wipe_dirs = tuple(wipe_dirs)


def run_job(job, place):
    """A graded job ({"candidate", "suites"}) -> {"results": [...]}; a plain one ({"program"}) ->
    its result. `job` is cleared in every candidate process (see start_graded)."""
    if "program" in job:
        return run_one(job, place, None)
    # A broken suite: infra_error before anything runs. Held in lists a candidate's process empties.
    codes = [[compiled_tests(suite["tests"])] for suite in job["suites"]]
    return {"results": [run_one(job, place, (i, codes)) for i in range(len(codes))]}


def run_one(job, place, graded):
    timeout_s = float(job["timeout_s"])
    limit = int(job.get("output_limit", 16384))
    os.makedirs(place.job_dir, exist_ok=True)
    (out_r, out_w), (err_r, err_w), (res_r, res_w) = os.pipe(), os.pipe(), os.pipe()
    caps = {out_r: Capture(limit), err_r: Capture(limit), res_r: Capture(RESULT_CAP, head=False)}
    oom_before = oom_counters()
    clock = Clock(timeout_s, float(job.get("stall_s") or 0))
    with one_cpu():  # the job's processes inherit it
        if graded is not None:
            pid, cpid, secret = start_graded(job, graded, place.job_dir, out_w, err_w, res_w)
        else:
            cpid, secret = None, os.urandom(16).hex()
            pid = os.fork()
            if pid == 0:
                in_child(plain_child, job["program"], secret, place.job_dir, out_w, err_w, res_w)
            for fd in (out_w, err_w, res_w):
                os.close(fd)
    clock.sessions.update(p for p in (pid, cpid) if p is not None)
    if clock.stall_until is not None:
        clock.stall()
    statuses = {}
    status, stopped, t_end = supervise(pid, clock, caps)
    kill_all([pid, cpid], statuses, clock.sessions)
    if status is None:
        status = statuses[pid] if pid in statuses else os.waitpid(pid, 0)[1]
    cpu_s = clock.used()  # everything is reaped: the exact total
    drain_rest(caps)
    wipe(place.wipe_dirs)
    res = {
        "duration_s": round(t_end - clock.t0, 6),
        "cpu_s": round(cpu_s, 4),
        "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "stdout": caps[out_r].text(),
        "stderr": caps[err_r].text(),
        "truncated": caps[out_r].truncated or caps[err_r].truncated,
    }
    oom = (oom_before, oom_counters())
    channel = bytes(caps[res_r].tail)
    timed_out = time_verdict(stopped, cpu_s, timeout_s, t_end - clock.t0)
    if timed_out:
        res["verdict"], res["detail"] = timed_out
    else:
        res["verdict"], res["detail"] = verdict(res["exit_code"], res["signal"], channel, secret, oom)
    if graded is not None and res["verdict"] == "failed" and b'"candidate_died"' in channel:
        res["verdict"], res["detail"] = candidate_death(statuses.get(cpid), oom)
    return res


def start_graded(job, graded, job_dir, out_w, err_w, res_w):
    """Fork the tests' process, then the candidate's, and only then make the secret and hand it
    to the tests: the candidate's process never had it in memory, nor the result pipe open.
    The candidate's process also drops every Python reference to test code it inherited (this
    job's suites, and the cached tests of earlier jobs) before the candidate runs; see SECURITY.md."""
    import socket

    index, codes = graded
    ends = socket.socketpair()
    for end in ends:  # a large value (HumanEval/15 returns 7 MB strings) crosses in fewer pieces
        try:
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, RPC_SOCKET_BUFFER)
        except OSError:
            pass
    tests_end, cand_end = (end.detach() for end in ends)
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(go_w)
        suite = job["suites"][index]
        in_child(tests_child, suite["tests"], codes[index][0], suite["entry_point"], job_dir,
                 out_w, err_w, res_w, tests_end, go_r)
    os.close(go_r)
    cpid = os.fork()
    if cpid == 0:
        source = job["candidate"]
        for suite in job["suites"]:
            suite.clear()
        job.clear()  # the same dict the executor's loop holds
        for code in codes:
            code.clear()
        TESTS_CACHE.clear()
        in_child(candidate_child, source, job_dir, out_w, err_w, cand_end)
    for fd in (out_w, err_w, res_w, tests_end, cand_end):
        os.close(fd)
    secret = os.urandom(16).hex()
    try:
        os.write(go_w, secret.encode())
    except OSError:  # the tests' process is already gone: its status tells why
        pass
    os.close(go_w)
    return pid, cpid, secret
