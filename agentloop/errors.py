"""One error tree for agentloop.

Every error a user can act on is an `AgentloopError` whose message is one line that names the
file, field, URL or command involved; the CLI prints it without a traceback and exits 2.
Third-party errors (Docker, HTTP, SQLite) are translated into these at the boundary.
"""

from __future__ import annotations


class AgentloopError(Exception):
    """Base class: a one-line, user-actionable error (CLI exit code 2)."""


class ConfigError(AgentloopError):
    """A config file or CLI flag has an unknown key, a wrong type or a bad value."""


class DataError(AgentloopError):
    """A task file is malformed; the message names file:line and the field."""


class ServerUnreachable(AgentloopError):
    """The model server does not answer, or does not serve the requested model."""


class DockerUnavailable(AgentloopError):
    """No Docker engine answers on the default socket or DOCKER_HOST."""


class ImageMissing(AgentloopError):
    """The sandbox image is not built."""


class RunDirError(AgentloopError):
    """A run directory is missing, malformed or half-written."""


class InfraError(Exception):
    """An infrastructure failure (server error, sandbox crash) while producing one attempt.

    Never a wrong answer: the attempt is logged with kind `infra_error` and excluded from pass@k.
    """


class MathWorkerError(AgentloopError):
    """The math answer checker's worker processes cannot answer (cannot start, died, or hang).

    Never a wrong verdict in disguise: the pool raises this instead of falling back to strings.
    """


class ContextLengthExceeded(InfraError):
    """The server refused the request because the prompt (plus max_tokens) does not fit the
    model's context (vLLM: HTTP 400 "maximum context length ..."). An infra error for a single
    generation; in an agent episode it ends the episode, which is then graded on its state."""


class WorkspaceError(InfraError):
    """An episode's workspace (its container and step server) stopped answering or could not start.
    Never the agent's verdict: the step is logged as `infra_error`."""
