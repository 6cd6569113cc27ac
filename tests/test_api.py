"""The public surface is deliberate: adding or removing a name must be a visible change."""

import agentloop

EXPECTED = {
    "AgentConfig", "AgentloopError", "AnswerVerdict", "Attempt", "AttemptKind", "AttemptStore", "Completion",
    "ConfigError", "ContextLengthExceeded", "DataError", "DockerPool", "DockerUnavailable", "ExecResult",
    "ExportOptions", "ExportStats", "ImageMissing", "InfraError", "ModelClient", "ModelConfig", "Report",
    "RunConfig", "RunDirError", "SamplingParams", "Sandbox", "SandboxConfig", "ServerUnreachable", "Suite",
    "Task", "Verdict", "Workspace", "WorkspaceError", "WorkspacePool", "answers_equal", "build_report",
    "canonical_answer", "export_runs", "grade_answer", "load_config", "load_jsonl", "load_suite", "pass_at_k",
    "run",
}


def test_public_api_is_locked():
    assert set(agentloop.__all__) == EXPECTED
    for name in EXPECTED:
        assert getattr(agentloop, name) is not None


def test_user_errors_share_one_base():
    for name in ("ConfigError", "DataError", "DockerUnavailable", "ImageMissing", "RunDirError", "ServerUnreachable"):
        assert issubclass(getattr(agentloop, name), agentloop.AgentloopError)
    assert not issubclass(agentloop.InfraError, agentloop.AgentloopError)  # per-attempt, never fatal
    for name in ("ContextLengthExceeded", "WorkspaceError"):  # per-attempt (an episode's outcome or infra_error)
        assert issubclass(getattr(agentloop, name), agentloop.InfraError)
