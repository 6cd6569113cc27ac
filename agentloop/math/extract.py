"""Final-answer extraction from model output and ground-truth solutions.

`extract_answer` takes the content of the last `\\boxed{...}` / `\\fbox{...}` (nested braces,
escaped `\\{ \\}` and the brace-less `\\boxed 5` form handled), else falls back to "the final
answer is X" / "final answer: X" / "answer is X", else GSM8K's `#### X`. Everything here is a
single left-to-right scan or `str.rfind`: linear time on any input (no backtracking regexes), so
hostile model output such as 100k characters of `\\boxed{{{{...` cannot stall a run.
"""

from __future__ import annotations

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_FALLBACKS = ("the final answer is", "final answer:", "answer is")
_STOP = " \t\r\n$"


def _strip_answer(s: str) -> str:
    """Trim the decoration around a fallback answer: spaces, `$`, `*` (markdown bold), `:` and a final period."""
    s = s.strip().strip("*").strip()
    s = s.lstrip(":").strip()
    for _ in range(3):  # bounded, so "$.$.$.…" stays linear
        s = s.strip().strip("$").strip()
        if s.endswith(".") and not s.endswith(".."):
            s = s[:-1]
    return s.strip().strip("$").strip()


def _last_box(text: str) -> str | None:
    """Content of the box that closes last (the outer one when boxes nest); None when there is none.

    One pass with a stack: each `{` pushes the index where its box's content starts (or -1 for an
    ordinary brace), each `}` pops; unmatched `}` are ignored and unclosed boxes never complete.
    """
    n = len(text)
    stack: list[int] = []
    best: str | None = None
    i = 0
    while i < n:
        c = text[i]
        if c == "\\":
            nxt = text[i + 1] if i + 1 < n else ""
            if nxt in ("\\", "{", "}"):  # `\\` line break, `\{` `\}` literal braces
                i += 2
                continue
            for cmd in _BOX_COMMANDS:
                if text.startswith(cmd, i):
                    j = i + len(cmd)
                    if j < n and text[j].isalpha():  # another command, e.g. \boxedsomething
                        i = j
                        break
                    k = j
                    while k < n and text[k] in " \t":
                        k += 1
                    if k < n and text[k] == "{":
                        stack.append(k + 1)
                        i = k + 1
                    elif k > j:  # `\boxed 5`: one token up to a space or `$`
                        e = k
                        while e < n and text[e] not in _STOP:
                            e += 1
                        token = text[k:e].rstrip(".,")
                        if token:
                            best = token
                        i = e
                    else:
                        i = j
                    break
            else:
                i += 1
            continue
        if c == "{":
            stack.append(-1)
        elif c == "}" and stack:
            start = stack.pop()
            if start >= 0:
                best = text[start:i].strip()
        i += 1
    return best


def _after_phrase(text: str, lower: str, phrase: str) -> str | None:
    """What follows the last `phrase` (case-insensitive) up to the end of its line or sentence."""
    at = lower.rfind(phrase)
    if at < 0:
        return None
    rest = text[at + len(phrase):]
    line_end = rest.find("\n")
    if line_end >= 0:
        rest = rest[:line_end]
    # a sentence ends at a period followed by a space ("5. I hope it is correct."), not in "3.5"
    sentence_end = rest.find(". ")
    if sentence_end >= 0:
        rest = rest[:sentence_end]
    answer = _strip_answer(rest)
    return answer or None


def extract_answer(text: str) -> str | None:
    """The model's final answer in `text`, as written (not canonicalized); None when none is found."""
    boxed = _last_box(text)
    if boxed is not None:
        return boxed
    lower = text.lower()
    for phrase in _FALLBACKS:
        answer = _after_phrase(text, lower, phrase)
        if answer is not None:
            return answer
    return _after_phrase(text, text, "####")


def gsm8k_answer(text: str) -> str:
    """GSM8K ground truth: the number after the last `####`, thousands separators removed.

    Raises ValueError when there is no `####` or nothing after it (loaders turn it into a DataError).
    """
    at = text.rfind("####")
    if at < 0:
        raise ValueError("no '#### N' final-answer line")
    answer = text[at + 4:].strip().splitlines()[0] if text[at + 4:].strip() else ""
    answer = _strip_answer(answer).replace(",", "").strip()
    if not answer:
        raise ValueError("nothing after '####'")
    return answer
