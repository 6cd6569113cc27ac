"""The workspace step server: the main process (PID 1) of every agent-episode container.

Bind-mounted read-only into each workspace container and started as `python3 -m agentloop_stepper`
(so a changed server needs no image rebuild); stdlib-only, on whatever python3 (>= 3.9) the image
has. It refuses to run as anything but PID 1: its clean-up is `kill(-1, SIGKILL)`, which only the
init of a PID namespace may aim at "every other process".

Protocol (both directions): a 4-byte big-endian length, then that many bytes of UTF-8 JSON.
  server -> host, once at start: {"ready": true, "version": VERSION, "pid": 1, "dumpable": false}
  host -> server, one request at a time, each with an "id" that the reply repeats:
    {"op": "write", "files": {relpath: text}}          -> {"written": n} | {"refused": "path: why"}
    {"op": "read", "paths": [relpath], "file_limit"}   -> {"files": {path: text|null}, "notes": {path: why}}
    {"op": "run", "kind": "bash"|"python", "command", "timeout_s", "output_limit", "read": [relpath],
     "file_limit"} -> {"exit_code", "signal", "timed_out", "duration_s", "stdout", "stderr",
                      "truncated", "files", "notes"}
    anything the server cannot do -> {"error": "one line"} (the host gives up on the workspace)

Semantics of a step (`run`): `bash -c COMMAND` (or `python3 FILE` with the code in a file under
/tmp) in /work, in a new session, stdin /dev/null, stdout and stderr drained all along into
head+tail captures of `output_limit` bytes each. When the command exits, or at `timeout_s` (wall
clock), the server SIGKILLs every other process of the container (`kill(-1)` from PID 1, repeated
and reaped until it has no child left): files persist from step to step, processes never do.
Step processes get oom_score_adj 1000, so the memory cgroup's OOM killer picks them, not the
server; the server is not dumpable, so they cannot ptrace it or read its /proc files, and as the
namespace's init it receives no signal from them that it has no handler for (it has none).
"""

VERSION = 1
"""Protocol version, sent in the ready frame; the host refuses a server that differs."""
WORKDIR = "/work"
"""The workspace: a tmpfs, the only place (with /tmp and /dev/shm) a step can write."""
