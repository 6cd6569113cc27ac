"""Action protocols: what the model is told, how a reply becomes actions, how results read back.

`text` (mini-swe-agent's protocol, for any chat model): each reply holds exactly one fenced
```bash block; a block holding only `submit` ends the episode. `tools` (OpenAI tool calling, as
vLLM serves it with a tool-call parser): `bash`, optionally `python`, and `submit`; every call gets
a `role: tool` result. A reply the protocol cannot read is a format error: the model is told what
was wrong, and the error counts against `max_format_errors`. Nothing here raises on model output.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from agentloop.agent.config import AgentConfig

SUBMIT = "submit"
_BLOCK = re.compile(r"```(?:bash|sh|shell)[ \t]*\n(.*?)```", re.DOTALL)
_ANY_FENCE = re.compile(r"```")

TEXT_SYSTEM = (
    "You are a careful Python programmer working in a Linux shell. Your working directory holds "
    "solution.py and test_solution.py. Every reply: think briefly, then give exactly ONE command to run "
    "in a single ```bash code block. You will see its output. Edit solution.py (for example with "
    "`cat > solution.py <<'EOF'` ... `EOF`), run `python3 test_solution.py` to check it, and when you are "
    "done reply with a ```bash block that holds only the word submit. Each command runs in a fresh "
    "shell with a time limit; files persist between commands, processes do not.\n\n"
    "Example reply:\nLet me run the tests first.\n```bash\npython3 test_solution.py\n```"
)
TOOLS_SYSTEM = (
    "You are a careful Python programmer with tools that act in a Linux workspace holding solution.py "
    "and test_solution.py. Edit solution.py, run `python3 test_solution.py` to check it, and call "
    "`submit` when you are done. Each command runs with a time limit; files persist between calls, "
    "processes do not."
)
TASK_TEMPLATE = (
    "Implement the function in solution.py so that it does what its docstring says:\n\n"
    "```python\n{prompt}\n```\n\n"
    "test_solution.py holds a few visible tests (`python3 test_solution.py`). Hidden tests grade "
    "solution.py as it is when you submit."
)


@dataclass(frozen=True)
class Action:
    kind: str
    """"bash", "python", "submit", or a protocol error: "format_error", "unknown_tool", "bad_arguments"."""
    command: str = ""
    """The command (bash) or code (python); for errors, what the model is told."""
    call_id: str | None = None
    """tools protocol: the tool call this answers."""

    @property
    def runs(self) -> bool:
        return self.kind in ("bash", "python")

    @property
    def is_error(self) -> bool:
        return self.kind in ("format_error", "unknown_tool", "bad_arguments")


def tool_schemas(cfg: AgentConfig) -> list[dict[str, Any]]:
    def tool(name: str, description: str, params: dict[str, Any]) -> dict[str, Any]:
        return {"type": "function", "function": {"name": name, "description": description, "parameters": {
            "type": "object", "properties": params, "required": list(params)}}}

    tools = [tool("bash", "Run a bash command in the workspace and return its exit code and output.",
                  {"command": {"type": "string", "description": "The command to run."}})]
    if cfg.python_tool:
        tools.append(tool("python", "Run a Python 3 program in the workspace and return its exit code and output.",
                          {"code": {"type": "string", "description": "The program's source."}}))
    tools.append(tool(SUBMIT, "Submit solution.py as it is now. This ends the episode.", {}))
    return tools


def first_messages(prompt: str, system: str | None, cfg: AgentConfig) -> list[dict[str, Any]]:
    """Step 0's prompt: the protocol's instructions and the task."""
    intro = TEXT_SYSTEM if cfg.protocol == "text" else TOOLS_SYSTEM
    return [{"role": "system", "content": intro if system is None else f"{intro}\n\n{system}"},
            {"role": "user", "content": TASK_TEMPLATE.replace("{prompt}", prompt.rstrip("\n"))}]


def text_actions(reply: str) -> list[Action]:
    """The action of a `text` reply: its one ```bash block (`submit` alone ends the episode)."""
    blocks = _BLOCK.findall(reply)
    if len(blocks) != 1:
        found = "no ```bash block" if not blocks else f"{len(blocks)} ```bash blocks"
        hint = " (a code block in another language does not count)" if not blocks and _ANY_FENCE.search(reply) else ""
        return [Action("format_error", f"Format error: your reply must contain exactly one ```bash block with one "
                                        f"command; it had {found}{hint}. Reply with one ```bash block, or with a "
                                        f"block holding only `{SUBMIT}` when you are done.")]
    command = blocks[0].strip()
    return [Action(SUBMIT)] if command == SUBMIT else [Action("bash", command)]


def tool_actions(tool_calls: tuple[dict[str, Any], ...] | list[dict[str, Any]], cfg: AgentConfig) -> list[Action]:
    """One action per tool call, in order; a reply with no call is a format error."""
    if not tool_calls:
        return [Action("format_error", f"Format error: call one of the tools ({', '.join(_names(cfg))}); "
                                        f"call `{SUBMIT}` when you are done.")]
    return [_tool_action(call, cfg) for call in tool_calls]


def _names(cfg: AgentConfig) -> list[str]:
    return [t["function"]["name"] for t in tool_schemas(cfg)]


def _tool_action(call: dict[str, Any], cfg: AgentConfig) -> Action:
    fn = call.get("function") if isinstance(call, dict) else None
    call_id = call.get("id") if isinstance(call, dict) else None
    call_id = call_id if isinstance(call_id, str) else None
    name = fn.get("name") if isinstance(fn, dict) else None
    if name not in _names(cfg):
        return Action("unknown_tool", f"Error: there is no tool {name!r:.80}; the tools are "
                                      f"{', '.join(_names(cfg))}.", call_id)
    raw = fn.get("arguments") if isinstance(fn, dict) else None
    try:
        args = json.loads(raw) if isinstance(raw, str) and raw.strip() else ({} if raw in (None, "") else raw)
    except json.JSONDecodeError as e:
        return Action("bad_arguments", f"Error: the arguments of `{name}` are not valid JSON ({e.msg} at "
                                       f"position {e.pos}); nothing was run.", call_id)
    if not isinstance(args, dict):
        return Action("bad_arguments", f"Error: the arguments of `{name}` must be a JSON object; nothing was run.",
                      call_id)
    if name == SUBMIT:
        return Action(SUBMIT, call_id=call_id)
    key = "command" if name == "bash" else "code"
    value = args.get(key)
    if not isinstance(value, str) or not value.strip():
        return Action("bad_arguments", f"Error: `{name}` needs a non-empty string argument {key!r}; nothing was run.",
                      call_id)
    return Action(name, value, call_id)


def cap(text: str, limit: int) -> str:
    """`text` within `limit` characters: its head and tail around a note of what was cut."""
    if len(text) <= limit:
        return text
    keep = max(0, limit - len(f"\n[... {len(text)} characters cut ...]\n"))
    note = f"\n[... {len(text) - keep} characters cut ...]\n"
    return text[: keep // 2] + note + text[len(text) - (keep - keep // 2):]


def result_text(exit_code: int | None, signal: int | None, timed_out: bool, timeout_s: float, stdout: str,
                stderr: str, limit: int) -> str:
    """What the model reads after a command: its exit status, then its output (head and tail)."""
    if timed_out:
        head = f"timed out after {timeout_s:g} s; the command and everything it started were killed"
    elif exit_code is None:
        why = " (out of memory?)" if signal == 9 else ""
        head = f"killed by signal {signal}{why}"
    else:
        head = f"exit code: {exit_code}"
    parts = [head]
    if stdout:
        parts.append(f"stdout:\n{stdout.rstrip()}")
    if stderr:
        parts.append(f"stderr:\n{stderr.rstrip()}")
    if not stdout and not stderr:
        parts.append("(no output)")
    return cap("\n".join(parts), limit)
