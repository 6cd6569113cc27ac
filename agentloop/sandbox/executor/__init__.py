"""The sandbox executor: the fork server that is the main process of every sandbox container.

This package is bind-mounted read-only into each container and started as
`python3 -m agentloop_executor`, so a changed executor needs no image rebuild; therefore it is
stdlib-only and runs on whatever python3 (>= 3.9) the image has. It pays the interpreter start and
the numpy import once, then forks per job, which is what makes a sandboxed run cheaper than a bare
`python3 -` on the host. On the host its pure parts (framing, capture, values, verdicts) are
importable as `agentloop.sandbox.executor.*` and unit-tested without Docker.

Protocol (both directions): a 4-byte big-endian length, then that many bytes of UTF-8 JSON.
  host -> executor: {"id", "timeout_s", "output_limit"} plus either
    {"candidate", "suites": [{"tests", "entry_point"}, ...]} (a graded job: one verdict per suite,
    each suite against a fresh fork of the candidate) or {"program"} (a plain one)
  executor -> host: {"ready": true, "version": VERSION, ...} once at start, then one result per
    job: {"id", "results": [result, ...]} for a graded job, the result itself for a plain one;
    a result has the fields of agentloop.sandbox.types.ExecResult.

Time limits are CPU seconds: what the job's processes (the tests', the candidate's and every
process they start) used, read from /proc while it runs and from the reaped children's rusage at
the end, so a machine that stalls the job (load, I/O pressure, SIGSTOP) cannot make it time out.
A wall-clock backstop (WALL_FACTOR x limit + WALL_SLACK_S) ends programs that sleep or block.
"""

VERSION = 3
"""Protocol version, sent in the ready frame; the host refuses an executor that differs."""
WALL_FACTOR = 3.0
WALL_SLACK_S = 5.0


def wall_backstop(limit_s):
    """Wall-clock seconds after which a job that is still running is stopped (`timeout`)."""
    return WALL_FACTOR * limit_s + WALL_SLACK_S
