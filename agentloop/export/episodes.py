"""Agent episodes (`agent:NxM` strategies) as export records: whole transcripts, not single replies.

An episode is one chain of a task's rows, its turns being steps. Its transcript is what the model
saw at its last step, then that step's assistant message and the observation messages appended
after it (extra["episode"]); its answer is its final state (the workspace's solution.py after the
last step), "verified" when that state passes the grading tests (or the feedback tests with
`verified_by="feedback"`). Only ended episodes are exported (the last step has an outcome:
submitted, a step/token/time limit, a full context, too many format errors); an episode a run left
unfinished (killed, or an infra error that `--resume` would continue) is not a trajectory yet.

Records hold the transcript and the tool schemas. Grading tests never reach a record: an
observation is the output of a command the agent ran in its workspace, which never holds them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from agentloop.export.records import Messages, attempt_meta
from agentloop.export.source import Row, RunSource
from agentloop.strategy import is_agent

BAD_ACTIONS = frozenset({"format_error", "unknown_tool", "bad_arguments"})
"""Steps whose reply was not a usable action: OpenAI exports give their assistant turn weight 0."""


@dataclass(frozen=True)
class Episode:
    source: RunSource
    steps: tuple[Row, ...]
    """The episode's completed steps, in step order."""

    @property
    def final(self) -> Row:
        return self.steps[-1]

    @property
    def info(self) -> dict[str, Any]:
        value = self.final.extra_json().get("episode")
        return value if isinstance(value, dict) else {}

    @property
    def outcome(self) -> str | None:
        outcome = self.info.get("outcome")
        return str(outcome) if outcome else None

    @property
    def protocol(self) -> str:
        return str(self.info.get("protocol") or "text")

    def tools(self) -> list[dict[str, Any]] | None:
        """The tool schemas the model was given (stored with step 0; tools protocol only)."""
        if self.protocol != "tools":
            return None
        for r in self.steps:
            info = r.extra_json().get("episode")
            if isinstance(info, dict) and isinstance(info.get("tools"), list):
                return list(info["tools"])
        return []

    def transcript(self) -> Messages:
        """What the model saw at its last step, its last reply, and the observation it got."""
        info = self.info
        messages = list(self.source.store.messages(self.final.messages_hash))
        if isinstance(info.get("assistant"), dict):
            messages.append(info["assistant"])
        messages += [m for m in info.get("observation_messages") or [] if isinstance(m, dict)]
        return messages

    def bad_steps(self) -> list[bool]:
        """Per step: whether its reply was not a usable action (format error, unknown tool, bad arguments)."""
        out = []
        for r in self.steps:
            info = r.extra_json().get("episode")
            actions = info.get("actions") if isinstance(info, dict) else None
            if not isinstance(actions, list) or not actions:
                out.append(False)
                continue
            out.append(all(isinstance(a, dict) and a.get("kind") in BAD_ACTIONS for a in actions))
        return out

    def meta(self, resolved: bool) -> dict[str, Any]:
        """The final step's provenance, plus the episode's own numbers (tokens summed over its steps)."""
        def total(field: str) -> int:
            return sum(getattr(r, field) or 0 for r in self.steps)

        return {**attempt_meta(self.source, self.final), "episode": {
            "protocol": self.protocol, "steps": len(self.steps), "outcome": self.outcome,
            "format_errors": int(self.info.get("format_errors") or 0), "resolved": resolved,
            "tokens": {"prompt": total("prompt_tokens"), "cached_prompt": total("cached_prompt_tokens"),
                       "completion": total("completion_tokens")}}}


def split_rows(rows: Sequence[Row]) -> tuple[list[Row], list[Row]]:
    """(agent episode steps, every other row)."""
    agent = [r for r in rows if is_agent(r.strategy)]
    return agent, ([r for r in rows if not is_agent(r.strategy)] if agent else list(rows))


def episodes(sources: Sequence[RunSource], rows: Sequence[Row]) -> tuple[list[Episode], int]:
    """One task's ended episodes (runs in the order given, then strategy and episode index), and
    how many episodes were left out as unfinished."""
    by_chain: dict[tuple[int, str, int], list[Row]] = {}
    for r in rows:
        by_chain.setdefault(r.chain_key, []).append(r)
    ended, unfinished = [], 0
    for key in sorted(by_chain):
        ep = Episode(sources[key[0]], tuple(sorted(by_chain[key], key=lambda r: r.turn)))
        if ep.outcome is None:
            unfinished += 1
        else:
            ended.append(ep)
    return ended, unfinished


def episode_key(ep: Episode, dedup: str) -> str:
    """`none`: every episode is distinct; otherwise the sequence of replies (the assistant
    messages: text and tool calls), whitespace kept: the same actions in the same order match."""
    if dedup == "none":
        return f"{ep.final.run}:{ep.final.id}"
    replies = [m for m in ep.transcript() if m.get("role") == "assistant"]
    text = json.dumps([[m.get("content"), m.get("tool_calls")] for m in replies], sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def shared_prefix(a: Messages, b: Messages) -> int:
    """How many leading messages two transcripts share (at least the task prompt for one task)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def openai_messages(ep: Episode, transcript: Messages) -> Messages:
    """OpenAI chat fine-tuning messages: `weight` 0 on the assistant turns whose reply was not a
    usable action (only when there is one; otherwise every assistant turn is trained on)."""
    bad = ep.bad_steps()
    if not any(bad):
        return transcript
    replies = [i for i, m in enumerate(transcript) if m.get("role") == "assistant"]
    weights = dict(zip(replies, (0 if b else 1 for b in bad), strict=False))
    return [{**m, "weight": weights[i]} if i in weights else m for i, m in enumerate(transcript)]


def sft_episode_record(fmt: str, ep: Episode, transcript: Messages, meta: dict[str, Any]) -> dict[str, Any]:
    """TRL: `messages` (+ `tools` for the tools protocol, as a JSON string: TRL's SFTTrainer
    json-loads a string `tools` column, while a list of schemas would be unified by Arrow into one
    struct, adding every other tool's parameters as nulls) + `metadata`. OpenAI: `messages` and
    a `tools` list (its chat format); the metadata goes to the sidecar file."""
    tools = ep.tools()
    if fmt == "openai":
        return {"messages": openai_messages(ep, transcript), **({"tools": tools} if tools is not None else {})}
    return {"messages": transcript, **({"tools": json.dumps(tools)} if tools is not None else {}), "metadata": meta}


def dpo_episode_record(chosen: Episode, rejected: Episode, meta: dict[str, Any]) -> dict[str, Any]:
    """TRL preference record: `prompt` = the messages both transcripts start with, `chosen` and
    `rejected` = the rest of each (message lists), `tools` as for SFT."""
    a, b = chosen.transcript(), rejected.transcript()
    n = shared_prefix(a, b)
    tools = chosen.tools()
    return {"prompt": a[:n], "chosen": a[n:], "rejected": b[n:],
            **({"tools": json.dumps(tools)} if tools is not None else {}), "metadata": meta}


def iter_unique(eps: Sequence[Episode], dedup: str) -> Iterator[Episode]:
    seen: set[str] = set()
    for ep in eps:
        k = episode_key(ep, dedup)
        if k not in seen:
            seen.add(k)
            yield ep
