"""Settings of agent episodes (TOML table `[agent]`, CLI `--agent-protocol`, `--step-timeout`)."""

from __future__ import annotations

from dataclasses import dataclass

PROTOCOLS = ("text", "tools")


@dataclass(frozen=True)
class AgentConfig:
    protocol: str = "text"
    """"text": one fenced ```bash block per reply and `submit` (mini-swe-agent's protocol, any model);
    "tools": OpenAI tool calling (bash, python, submit), for servers started with a tool-call parser."""
    step_timeout_s: float = 10.0
    """Wall-clock limit of one action; its whole process tree is killed then."""
    time_limit_s: float = 600.0
    """Limit on the time an episode's actions run in its workspace, summed over its steps (the
    model's time is not counted, so a slow or busy server changes no outcome); it then ends,
    graded on its state."""
    observation_chars: int = 4000
    """Cap on one observation (the head and tail are kept)."""
    max_format_errors: int = 3
    """Replies without exactly one action an episode may make before it ends (outcome format_errors)."""
    python_tool: bool = True
    """tools protocol: offer a `python` tool beside `bash` and `submit`."""
    max_live: int = 16
    """Episodes running at once (each holds one workspace container)."""

    def problems(self) -> list[tuple[bool, str, str]]:
        """(ok, field, expected) range checks, for config.validate."""
        return [
            (self.protocol in PROTOCOLS, "agent.protocol", "one of: " + ", ".join(repr(p) for p in PROTOCOLS)),
            (self.step_timeout_s > 0, "agent.step_timeout_s", "a number of seconds > 0"),
            (self.time_limit_s > 0, "agent.time_limit_s", "a number of seconds > 0"),
            (self.observation_chars >= 200, "agent.observation_chars", "an integer >= 200"),
            (self.max_format_errors >= 1, "agent.max_format_errors", "an integer >= 1"),
            (self.max_live >= 1, "agent.max_live", "an integer >= 1"),
        ]
