"""Final-answer extraction from model replies and ground-truth solutions.

`extract(text, finish_reason=...)` returns every final answer the text *states*, strongest kind
first (see `Extraction`); `extract_answer(text)` is the last of them ("last answer wins", what a
gold solution needs). The kinds, tried in this order (a kind is used only when none before it
states an answer):

1. ``final``: "final answer" statements ("The final answer is $X$.", "Final Answer: The final
   answer is \\( X \\). I hope it is correct.", "**Final Answer**" then ``\\[ \\boxed{X} \\]`` on the
   next lines, "Final Answer: The largest $n$ is 34.") and GSM8K's ``#### X``. Such a statement
   supersedes the boxes written before it (an earlier box corrected by a later final answer);
   boxes after the first one are statements too.
2. ``box``: ``\\boxed{}`` / ``\\fbox{}``. Boxes next to each other, joined only by punctuation,
   ``\\quad``, "and"/"or" (``\\boxed{1}, \\boxed{2}``, ``\\boxed{6} \\text{ and } \\boxed{8}``), are
   one list answer ("1, 2"); boxes in different places are different statements.
3. ``answer``: "the answer is X", "Answer: X", ``Answer \\[ X \\]`` (the last one).
4. ``sentence``: the last sentence that holds math, when it reads as a conclusion ("Therefore
   $x \\geq 5$ is the solution.", "So the answer is 34.", "Thus the probability is 2/3.").
5. ``bare_math`` / ``bare``: a short reply that is only an answer, in math delimiters
   ("$[0,1)$", "$1$ and $2$") or not ("7,425,000", "28 percent").

A reply cut off by the token limit (``finish_reason="length"``) gets kinds 1-3 only, and a plain
value that runs into the cut is not taken: a half-written sentence such as "...for 20 chickens,
we can multiply the" states no answer. A value is math: a ``$…$``/``$$…$$``/``\\(…\\)``/
``\\[…\\]`` span or box (a run of them joined by "and"/","/"or" is one list), or in plain text a
number with what makes it one (``1,000.99``, ``2/3``, ``28%``), or a short text answer. A trailing
"%"/"percent"/"pct" after a span or box becomes part of the answer (``\\boxed{28}$ pct`` → ``28\\%``).
Text escaped twice (``\\\\boxed{\\\\frac{1}{2}}``, as in some datasets) is read once unescaped.

Everything here is a single left-to-right scan, ``str.find`` with memoized failures, or a regex
run on a bounded window (a statement's value is at most `_WINDOW` characters of plain text), so
extraction is linear in the text on any input: hostile output such as 100k characters of
``\\boxed{{{{…`` or "the answer is " repeated cannot stall a run.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from dataclasses import dataclass, field
from itertools import pairwise

_BOX_COMMANDS = ("\\boxed", "\\fbox")
_BRACE_OR_COMMAND = re.compile(r"[\\{}]")
_DELIMITER = re.compile(r"[\\$]")
_STOP = " \t\r\n$"
_WINDOW = 300  # the most plain text a statement's value is read from
_MAX_STATEMENTS = 200  # a text with more "final answer"/"####" phrases is read from its last ones
_MAX_ANSWER_TRIES = 200  # "answer" words tried from the end for kind 3
_MAX_SENTENCES = 100  # sentences looked back through for kind 4

_PERCENT_WORD_TAIL = re.compile(r"\s*(?:percent(?:age)?|pct)\s*$", re.IGNORECASE)
_NUMBER = re.compile(
    r"[-+−]?\s?(?:\\?\$|[€£¥₹])?\s?(?:\d{1,3}(?:(?:,|\\!|\{,\}| )\d{3})+|\d+)(?:[.,]\d+)?(?:\s?(?:\\%|%))?"
    r"|[-+]?\.\d+(?:\s?%)?")
_PLAIN_EXPR = re.compile(
    r"[-+−]?\s?(?:\\?\$|[€£¥₹])?\s?(?:\d{1,3}(?:(?:,|\\!|\{,\}| )\d{3})+(?![\d])|\d+)?(?:[.,]\d+)?"
    r"(?:\s?[-+*/×÷^:]\s?\(?\s?[-+]?\d+(?:[.,]\d+)?\)?)*(?:\s?(?:\\%|%|percent(?:age)?\b|pct\b))?",
    re.IGNORECASE)
_PLAIN_LIST = re.compile(r"[-+−]?\d+(?:\.\d+)?(?:\s*(?:,|;|,?\s+and\s)\s*[-+−]?\d+(?:\.\d+)?(?![\d,]\d))+")
_FILLERS = ("approximately", "about", "around", "roughly", "exactly", "equal to", "equals", "simply", "just",
            "only", "now", "then", "therefore", "thus", "indeed", "\\approx", "≈", "~")
_ANCHORS = re.compile(r"(?:\b(?:is|are|was|were|equals|be|becomes|gives|get|obtain|find|it's|that's|to)\b|=|:)",
                      re.IGNORECASE)
_CONCLUSION = re.compile(
    r"^\W*(?:therefore|thus|hence|so|finally|consequently|in conclusion|in summary|overall|as a result|"
    r"we (?:find|get|have|obtain|conclude)|this gives|which gives)\b", re.IGNORECASE)
_AFTER = re.compile(r"^\W*(?:is|are)\s+(?:the|our|my)\s+(?:final\s+)?(?:solution|answer|result)s?\b", re.IGNORECASE)
_CHAT_TOKENS = ("<|im_start|>", "<|im_end|>", "<|eot_id|>", "<|endoftext|>", "</s>", "<|end|>", "<|user|>")
_KNOWN_COMMANDS = frozenset((
    "boxed", "fbox", "frac", "dfrac", "tfrac", "cfrac", "sqrt", "left", "right", "le", "ge", "leq", "geq", "lt", "gt",
    "neq", "ne", "text", "textbf", "textit", "textrm", "mathrm", "mathbf", "mbox", "pi", "cdot", "times", "div", "pm",
    "mp", "in", "cup", "cap", "infty", "begin", "end", "quad", "qquad", "circ", "sin", "cos", "tan", "sec", "csc",
    "cot", "log", "ln", "exp", "approx", "dots", "ldots", "cdots", "theta", "alpha", "beta", "gamma", "delta",
    "lambda", "mu", "sigma", "omega", "phi", "angle", "degree", "overline", "operatorname", "mathbb", "emptyset",
    "varnothing"))
_CORRECTIONS = frozenset(("later", "then", "again", "actually", "wait", "instead", "but", "no", "not", "correction",
                          "corrected", "revised"))


@dataclass(frozen=True, slots=True)
class Statement:
    """One stated final answer: the answer as written, where it is, and its kind (see the module)."""

    answer: str
    start: int
    end: int
    kind: str


@dataclass(frozen=True, slots=True)
class Extraction:
    """What a text states as its final answer(s), in text order; empty when it states none."""

    statements: tuple[Statement, ...] = ()
    kind: str | None = None
    cut_off: bool = False
    """The text was cut off by the token limit and stated no final answer before the cut."""

    @property
    def answer(self) -> str | None:
        """The last stated answer ("last answer wins"); None when there is none."""
        return self.statements[-1].answer if self.statements else None

    @property
    def answers(self) -> list[str]:
        """The distinct stated answers as written, in order of their last statement."""
        seen: dict[str, None] = {}
        for s in self.statements:
            seen.pop(s.answer, None)
            seen[s.answer] = None
        return list(seen)


# --- lexing -----------------------------------------------------------------------------------

def undouble(text: str) -> str:
    """Text escaped twice (``\\\\frac``, ``\\\\boxed``) read once: every ``\\\\`` becomes ``\\``.

    Applied only when a run of exactly two backslashes precedes a known command name, which in
    LaTeX written once means a line break followed by the bare word (never a real answer).
    """
    i = text.find("\\\\")
    found = False
    while i >= 0:
        j = i + 2
        if (i == 0 or text[i - 1] != "\\") and j < len(text) and text[j].isalpha():
            k = j
            while k < len(text) and text[k].isalpha() and k - j < 20:
                k += 1
            if text[j:k] in _KNOWN_COMMANDS:
                found = True
                break
        i = text.find("\\\\", j)
    if not found:
        return text
    out = text.replace("\\\\", "\\")
    return re.sub(r"\\n(?![a-z])", "\n", out)


@dataclass
class _Lexed:
    """Boxes and math spans of a text, found once, each in one linear pass."""

    text: str
    boxes: list[tuple[int, int, str]] = field(default_factory=list)  # (start, end, content), outermost
    spans: list[tuple[int, int, str]] = field(default_factory=list)  # (start, end, content) of $…$ etc.
    box_at: dict[int, int] = field(default_factory=dict)
    span_at: dict[int, int] = field(default_factory=dict)
    box_starts: list[int] = field(default_factory=list)
    span_starts: list[int] = field(default_factory=list)

    def overlapping(self, a: int, b: int, *, boxes: bool = True, spans: bool = True) -> list[tuple[int, int, str]]:
        """Boxes and spans that overlap ``[a, b)`` (each list is sorted and non-overlapping: bisect)."""
        out: list[tuple[int, int, str]] = []
        for on, items, starts in ((boxes, self.boxes, self.box_starts), (spans, self.spans, self.span_starts)):
            if not on:
                continue
            k = bisect_left(starts, a)
            if k > 0 and items[k - 1][1] > a:
                k -= 1
            while k < len(items) and items[k][0] < b:
                out.append(items[k])
                k += 1
        return out


def _scan_boxes(text: str) -> list[tuple[int, int, str]]:
    """Outermost complete boxes, in order. One pass with a stack: each ``{`` pushes the index
    where its box's content starts (or -1 for an ordinary brace), each ``}`` pops; unmatched
    ``}`` are ignored and unclosed boxes never complete."""
    n = len(text)
    stack: list[tuple[int, int]] = []  # (content start or -1, command start)
    found: list[tuple[int, int, str]] = []
    first = min((k for k in (text.find("\\boxed"), text.find("\\fbox")) if k >= 0), default=-1)
    if first < 0:
        return found
    i = first  # braces before the first box command belong to no box
    while i < n:
        m = _BRACE_OR_COMMAND.search(text, i)  # plain text in between is skipped at C speed
        if m is None:
            break
        i = m.start()
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
                        stack.append((k + 1, i))
                        i = k + 1
                    elif k > j:  # `\boxed 5`: one token up to a space or `$`
                        e = k
                        while e < n and text[e] not in _STOP:
                            e += 1
                        token = text[k:e].rstrip(".,")
                        if token and not any(s >= 0 for s, _ in stack):
                            found.append((i, e, token))
                        i = e
                    else:
                        i = j
                    break
            else:
                i += 1
            continue
        if c == "{":
            stack.append((-1, -1))
        elif c == "}" and stack:
            start, cmd_at = stack.pop()
            if start >= 0 and not any(s >= 0 for s, _ in stack):  # outermost box only
                while found and found[-1][0] > cmd_at:  # a token box inside this one
                    found.pop()
                found.append((cmd_at, i + 1, text[start:i].strip()))
        i += 1
    return found


def _scan_spans(text: str) -> list[tuple[int, int, str]]:
    """Math spans ``$$…$$``, ``\\[…\\]`` (may span lines), ``$…$``, ``\\(…\\)`` (one line), in one
    pass. A closer searched for in vain is remembered, so no later opener searches again."""
    n = len(text)
    spans: list[tuple[int, int, str]] = []
    failed: dict[str, int] = {}  # closer -> the position up to which it is known to be absent

    def find(closer: str, start: int, end: int) -> int:
        if failed.get(closer, -1) >= end:
            return -1
        j = text.find(closer, start, end)
        if j < 0:
            failed[closer] = end
        return j

    line = [-1, -1]  # the line end last found, and where it was searched from: reused on that line

    def line_end(i: int) -> int:
        if not (line[1] <= i <= line[0]):
            e = text.find("\n", i)
            line[0], line[1] = (n if e < 0 else e), i
        return line[0]

    i = 0
    while i < n:
        m = _DELIMITER.search(text, i)
        if m is None:
            break
        i = m.start()
        c = text[i]
        if c == "\\" and i + 1 < n:
            nxt = text[i + 1]
            if nxt in "([":
                closer = "\\)" if nxt == "(" else "\\]"
                j = find(closer, i + 2, line_end(i) if nxt == "(" else n)
                if j >= 0:
                    spans.append((i, j + 2, text[i + 2:j].strip()))
                    i = j + 2
                    continue
            i += 2
            continue
        if c == "$":
            if text.startswith("$$", i):
                j = find("$$", i + 2, n)
                if j >= 0:
                    spans.append((i, j + 2, text[i + 2:j].strip()))
                    i = j + 2
                    continue
                i += 2
                continue
            if i > 0 and text[i - 1].isdigit():  # "1,000.99$": a currency sign, not an opener
                i += 1
                continue
            le = line_end(i)
            j = find("$", i + 1, le)
            while j >= 0 and text[j - 1] == "\\":  # `\$` inside inline math is content
                j = find("$", j + 1, le)
            if j >= 0 and text[i + 1:j].strip():
                spans.append((i, j + 1, text[i + 1:j].strip()))
                i = j + 1
                continue
            i += 1
            continue
        i += 1
    return spans


def _lex(text: str) -> _Lexed:
    lx = _Lexed(text, sorted(_scan_boxes(text)), _scan_spans(text))
    lx.box_starts = [b[0] for b in lx.boxes]
    lx.span_starts = [s[0] for s in lx.spans]
    lx.box_at = {b[0]: k for k, b in enumerate(lx.boxes)}
    lx.span_at = {s[0]: k for k, s in enumerate(lx.spans)}
    return lx


# --- values -----------------------------------------------------------------------------------

def _with_percent(answer: str) -> str:
    """A trailing "percent"/"percentage"/"pct" word written as ``\\%`` ("28 pct" → "28\\%")."""
    return _PERCENT_WORD_TAIL.sub("\\%", answer) if _PERCENT_WORD_TAIL.search(answer) else answer


def _boxes_in(lx: _Lexed, start: int, end: int) -> list[tuple[int, int, str]]:
    return [b for b in lx.overlapping(start, end, spans=False) if start <= b[0] and b[1] <= end]


_CONNECTOR_NOISE = re.compile(r"\\(?:quad|qquad|[,;:! ]|text|textnormal|mbox|mathrm|textbf)|\\[()\[\]]|[${}]|\\\\")


def _is_connector(gap: str, *, alternatives: bool = True) -> bool:
    """Whether the text between two math items joins them into one list answer.

    ``alternatives``: "or" joins too ("$21,16$ or $11$"); not between boxes, where
    ``\\boxed{15\\frac{39}{40}}, or \\boxed{\\frac{639}{40}}`` states one value twice."""
    if len(gap) > 60 or "\n\n" in gap or re.search(r"[.!?](?:\s|$)", gap):
        return False
    words = re.findall(r"[A-Za-z]+", _CONNECTOR_NOISE.sub(" ", gap))
    if not words:
        return True
    lowered = [w.lower() for w in words]
    if any(w in _CORRECTIONS for w in lowered):
        return False
    joiners = ("and", "or") if alternatives else ("and",)
    if not alternatives and "or" in lowered:
        return False
    return any(w in joiners for w in lowered) and len(words) <= 5


def _item_at(lx: _Lexed, i: int) -> tuple[list[str], int] | None:
    """The math item starting at ``i`` (a box, or a span's boxes, or a span): contents and end."""
    if (k := lx.box_at.get(i)) is not None:
        return [lx.boxes[k][2]], lx.boxes[k][1]
    if (k := lx.span_at.get(i)) is not None:
        start, end, content = lx.spans[k]
        inner = _boxes_in(lx, start, end)
        if inner:
            groups = _group_boxes(lx, inner)
            return [", ".join(c for c in groups[-1][2])], end
        content = content.rstrip(" .,;")  # "$14{,}912.$": the sentence's period, not the answer's
        return ([content], end) if content else None
    return None


def _run_at(lx: _Lexed, i: int, limit: int) -> tuple[str, int] | None:
    """A run of math items from ``i`` joined by connectors: one answer (a list when several)."""
    item = _item_at(lx, i)
    if item is None:
        return None
    contents, end = item
    text = lx.text
    while True:
        nxt = _next_item_start(lx, end, min(limit, end + 60))
        if nxt is None or not _is_connector(text[end:nxt]):
            break
        more = _item_at(lx, nxt)
        if more is None:
            break
        contents += more[0]
        end = more[1]
    answer = ", ".join(c for c in contents if c)
    return (_with_percent(answer), end) if answer else None


def _next_item_start(lx: _Lexed, start: int, end: int) -> int | None:
    """Where the first box or span starting in ``[start, end)`` starts (bisect on both lists)."""
    found = [starts[k] for starts in (lx.box_starts, lx.span_starts)
             if (k := bisect_left(starts, start)) < len(starts) and starts[k] < end]
    return min(found) if found else None


def _skip(text: str, i: int, chars: str = " \t*\"'“”`\\") -> int:
    n = len(text)
    while i < n and text[i] in chars:
        if text[i] == "\\" and not text.startswith('\\"', i):
            break
        i += 1
    return i


def _sentence_end(text: str, i: int, cut: int) -> int:
    """End of the sentence starting at ``i``: a newline, ". ", "? ", "! " or the text's end, at most `_WINDOW` on."""
    end = min(len(text), i + _WINDOW, cut)
    m = re.compile(r"\n|[.?!](?=\s|$)|\bI hope\b").search(text, i, end)
    return m.start() if m else end


def _mask_spans(lx: _Lexed, start: int, end: int) -> str:
    """``text[start:end]`` with math spans and boxes blanked out (same length), to find prose words."""
    text = lx.text
    parts, at = [], start
    for a, b, _ in sorted(lx.overlapping(start, end)):
        a, b = max(a, start, at), min(b, end)
        if b > a:
            parts += [text[at:a], " " * (b - a)]
            at = b
    parts.append(text[at:end])
    return "".join(parts)


def _plain_value(s: str) -> str | None:
    """The answer in a plain-text value: a number-led expression (units and prose after it are
    dropped), else a short text answer, else the one number in a prose value; None otherwise."""
    s = s.strip().strip("*").strip().strip("\"'“”`").strip()
    s = s.lstrip(":").strip()
    for _ in range(3):
        lowered = s.lower()
        for f in _FILLERS:
            if lowered.startswith(f) and (len(s) == len(f) or not s[len(f)].isalpha()):
                s = s[len(f):].strip()
                break
        else:
            break
    s = s.rstrip(".,;:").strip().strip("*").strip()
    if not s:
        return None
    m = _PLAIN_EXPR.match(s)
    if m is not None and (s[0].isdigit() or s[0] in "-+−.$\\€£¥₹"):
        value, rest = m.group(0).strip(), s[m.end():]
        if value and any(ch.isdigit() for ch in value):
            if (listed := _PLAIN_LIST.match(s)) is not None and listed.end() > m.end():  # "1, -2", "3, 5 and 7"
                return listed.group(0).strip()
            if rest.lstrip().startswith("="):  # "3 + 4 = 7": the chain's last value
                return _plain_value(rest.lstrip()[1:])
            if not rest.strip() or not re.match(r"\s*[A-Za-z(\\{^_]", rest) or re.match(r"\s*[A-Za-z]{2,}", rest):
                return _with_percent(value.rstrip(".,:").strip())
            if len(s) <= 40:  # "2x + 3", "3\sqrt{2}": math, not a number with a unit
                return _with_percent(s)
            return _with_percent(value)
    if (lead := re.match(r"(\S{1,20}?)\s+(?=[A-Z][a-z]+\s)", s)) is not None and \
            not re.search(r"[A-Za-z]{3,}", lead.group(1)):  # "(C) We can check this": a new sentence, no period
        return lead.group(1)
    words = re.findall(r"[A-Za-z]{3,}", s)
    if len(s) <= 40 and len(words) <= 3 and not re.match(r"(?i)(?:the|a|an|to|that|this|in|of|not|we|it)\b", s):
        return _with_percent(s)
    numbers = [m.group(0) for m in _NUMBER.finditer(s) if _standalone(s, m.start(), m.end())]
    if len(numbers) == 1:
        return _with_percent(numbers[0].strip())
    return None


def _standalone(s: str, a: int, b: int) -> bool:
    """A number token not glued to a word before it ("AZYUK2A", "x2" hold no number)."""
    while a < b and s[a] in " ":
        a += 1
    return a == 0 or not (s[a - 1].isalnum() or s[a - 1] == "_")


def _value_at(lx: _Lexed, i: int, cut: int, *, heading: bool = False) -> tuple[str, int] | None:
    """The value stated from ``i`` on: a math run, else plain text up to the sentence end.

    ``heading``: the value follows "Final Answer:" and may be a sentence of its own ("The largest
    $n$ is 34."): its value is then what follows its last "is" (outside math).
    ``cut``: where the text was cut off (its end for ``finish_reason="length"``, else beyond it); a
    plain value that runs into it may be half-written and is not taken.
    """
    text = lx.text
    i = _skip(text, i)
    j = _skip(text, i, " \t\r\n*\"'“”`\\")  # display math may start on the next lines
    if j - i <= 40 and text.count("\n", i, j) <= 3 and (j in lx.box_at or j in lx.span_at):
        i = j
    if i in lx.box_at or i in lx.span_at:
        return _run_at(lx, i, len(text))
    end = _sentence_end(text, i, len(text))
    if heading:
        masked = _mask_spans(lx, i, end)
        last = None
        for m in re.finditer(r"\b(?:is|are|equals|=)\s", masked):
            last = m
        if last is not None and last.end() + i < end:
            inner = _value_at(lx, i + last.end(), cut)
            if inner is not None:
                return inner
    # a math item later in the value text ("approximately $7.78$"): take it when it is the only one
    nxt = _next_item_start(lx, i, end)
    if nxt is not None and not re.search(r"[A-Za-z0-9]{2,}", _mask_spans(lx, i, nxt).replace("approximately", "")):
        return _run_at(lx, nxt, len(text))
    value = _plain_value(_mask_spans(lx, i, end) if nxt is not None else text[i:end])
    return (value, end) if value and _complete(text, value, i, end, cut) else None


def _complete(text: str, value: str, i: int, end: int, cut: int) -> bool:
    """Whether a plain value read from ``text[i:end]`` was written in full before the cut: its
    sentence ends before it, or the value is followed by a space or punctuation ("#### 20 Let me
    verify the" holds 20; "#### 12" at the cut may have been 125)."""
    if end < cut:
        return True
    pos = text.find(value, i, end)
    after = pos + len(value)
    return pos >= 0 and after < min(end, cut) and not text[after].isalnum()


# --- statements -------------------------------------------------------------------------------

_FINAL_AFTER = re.compile(r"\s*(?:\*\*|\*|__)?\s*(?:(?:is|are|was|will be|would be|=)\b\s*:?|:|\n)", re.IGNORECASE)
_FINAL_LONG = re.compile(r"[^.\n$\\]{0,60}?\s(?:is|are)\b\s*:?", re.IGNORECASE)
_LLAMA = re.compile(r"\s*(?:\*\*)?\s*the final answer is\s*:?", re.IGNORECASE)


def _final_statements(lx: _Lexed, cut: int) -> list[Statement]:
    """ "Final answer" statements and ``#### X`` lines, in text order."""
    text, lower = lx.text, lx.text.lower()
    found: list[Statement] = []
    phrases: list[int] = []
    i = lower.rfind("final answer")
    while i >= 0 and len(phrases) < _MAX_STATEMENTS:
        phrases.append(i)
        i = lower.rfind("final answer", 0, i)
    done = -1  # the end of the last statement read: a phrase inside it is part of it
    for i in reversed(phrases):
        if i < done:
            continue
        j = i + len("final answer")
        j += 1 if lower.startswith("s", j) else 0
        m = _FINAL_AFTER.match(text, j) or _FINAL_LONG.match(text, j)
        heading = m is not None and (":" in m.group(0) or m.group(0).strip(" *_") == "")
        if m is None:  # "Final Answer $\boxed{5}$": a math item right after the words
            k = _skip(text, j, " \t\r\n*")
            m_end = k if (k in lx.box_at or k in lx.span_at) else -1
        else:
            m_end = m.end()
            if (llama := _LLAMA.match(text, m_end)) is not None:
                m_end, heading = llama.end(), False
        stated = _value_at(lx, m_end, cut, heading=heading) if m_end >= 0 else None
        if stated is not None:
            found.append(Statement(stated[0], i, stated[1], "final"))
            done = stated[1]
    marks: list[int] = []
    i = text.rfind("####")
    while i >= 0 and len(marks) < _MAX_STATEMENTS:
        while i > 0 and text[i - 1] == "#":
            i -= 1
        marks.append(i)
        i = text.rfind("####", 0, i)
    for i in reversed(marks):
        j = i + 4
        while text.startswith("#", j):
            j += 1
        nxt = text.find("####", j)
        le = text.find("\n", j)
        le = len(text) if le < 0 else le
        end = min(le, nxt) if nxt >= 0 else le
        raw = text[j:end].strip()
        value: str | None = None
        if raw:
            k = _skip(text, j)
            if k in lx.box_at or k in lx.span_at:
                run = _run_at(lx, k, end)
                value = run[0] if run else None
            else:
                value = _plain_value(raw.strip("$").strip())
                value = value if value and _complete(text, value, j, end, cut) else None
        if value:
            found.append(Statement(value, i, end, "final"))
    found.sort(key=lambda s: s.start)
    return found


def _group_boxes(lx: _Lexed, boxes: list[tuple[int, int, str]]) -> list[tuple[int, int, list[str]]]:
    """Boxes joined by connectors (``\\boxed{1}, \\boxed{2}``) are one list: (start, end, contents)."""
    groups: list[tuple[int, int, list[str]]] = []
    for start, end, content in boxes:
        if groups and _is_connector(lx.text[groups[-1][1]:start], alternatives=False):
            g = groups[-1]
            g[2].append(content)
            groups[-1] = (g[0], end, g[2])
        else:
            groups.append((start, end, [content]))
    return groups


def _box_statements(lx: _Lexed, boxes: list[tuple[int, int, str]]) -> list[Statement]:
    out = []
    for start, end, contents in _group_boxes(lx, boxes):
        answer = ", ".join(c for c in contents if c)
        if answer:
            out.append(Statement(_with_percent(answer), start, end, "box"))
    return out[-_MAX_STATEMENTS:]


_ANSWER_AFTER = re.compile(
    r"s?\s*(?:\*\*|\*)?\s*(?:(?:is|are|was|would be|should be|will be|equals|=)\b\s*:?|:)", re.IGNORECASE)


def _answer_statement(lx: _Lexed, cut: int) -> Statement | None:
    """The last "the answer is X" / "Answer: X" / ``Answer \\[ X \\]`` statement."""
    text, lower = lx.text, lx.text.lower()
    i = lower.rfind("answer")
    tries = 0
    while i >= 0 and tries < _MAX_ANSWER_TRIES:
        tries += 1
        if i == 0 or not lower[i - 1].isalpha():
            j = i + len("answer")
            m = _ANSWER_AFTER.match(text, j)
            value = None
            if m is not None:
                value = _value_at(lx, m.end(), cut)
            else:
                k = _skip(text, j, " \t\r\n*")
                if k - j <= 8 and (k in lx.box_at or k in lx.span_at):
                    value = _run_at(lx, k, len(text))
            if value is not None:
                return Statement(value[0], i, value[1], "answer")
        i = lower.rfind("answer", 0, i)
    return None


def _strip_tail(text: str) -> str:
    """The text without trailing chat-template tokens and "I hope it is correct." boilerplate."""
    end = len(text)
    for _ in range(8):
        t = text[:end].rstrip()
        for tok in _CHAT_TOKENS:
            k = t.rfind(tok)
            if k >= 0 and len(t) - k <= len(tok) + 12:
                t = t[:k].rstrip()
        if t.lower().endswith("i hope it is correct."):
            t = t[: -len("i hope it is correct.")].rstrip()
        if len(t) == end:
            break
        end = len(t)
    return text[:end]


def _sentences(lx: _Lexed, end: int) -> list[tuple[int, int]]:
    """Sentence spans of ``text[:end]``: split at newlines and ". " outside math spans."""
    text = lx.text
    cuts = [0]
    spans = iter(sorted((*((a, b) for a, b, _ in lx.spans), *((a, b) for a, b, _ in lx.boxes))))  # n log n
    nxt = next(spans, None)
    i = 0
    while i < end:
        while nxt is not None and nxt[1] <= i:
            nxt = next(spans, None)
        if nxt is not None and nxt[0] <= i < nxt[1]:
            i = nxt[1]
            inner = text[nxt[0]:i].rstrip("$)]\\ ")
            if inner.endswith((".", "?", "!")) and (i >= end or text[i].isspace()):  # "$14{,}912.$ However"
                cuts.append(i)
            continue
        c = text[i]
        if c == "\n" or (c in ".?!" and (i + 1 >= end or text[i + 1].isspace())):
            cuts.append(i + 1)
        i += 1
    cuts.append(end)
    return [(a, b) for a, b in pairwise(cuts) if text[a:b].strip()]


def _math_items(lx: _Lexed, a: int, b: int) -> list[tuple[int, int]]:
    """Math spans/boxes and plain numbers in ``text[a:b]``, in order: (start, end)."""
    items = [(s, e) for s, e, _ in lx.overlapping(a, b, boxes=False) if a <= s and e <= b]
    items += [(s, e) for s, e, _ in lx.overlapping(a, b, spans=False)
              if a <= s and e <= b and not any(x <= s and e <= y for x, y in items)]
    masked = _mask_spans(lx, a, b)
    for m in _NUMBER.finditer(masked):
        if m.group(0).strip() and any(ch.isdigit() for ch in m.group(0)) and _standalone(masked, m.start(), m.end()):
            items.append((a + m.start(), a + m.end()))
    return sorted(items)


def _sentence_statement(lx: _Lexed) -> Statement | None:
    """Kind 4: the last sentence holding math, when it reads as a conclusion."""
    end = len(_strip_tail(lx.text))
    for a, b in reversed(_sentences(lx, end)[-_MAX_SENTENCES:]):
        items = _math_items(lx, a, b)
        if not items:
            continue
        masked = _mask_spans(lx, a, b)
        anchors = [m for m in _ANCHORS.finditer(masked) if not (m.group(0) == ":" and m.start() == len(masked) - 1)]
        after_last = [it for it in items if anchors and it[0] >= a + anchors[-1].end()]
        if after_last and _only_fillers(masked[anchors[-1].end():after_last[0][0] - a]):
            if b >= end and _goes_on(lx.text[a:b], masked[after_last[0][1] - a:]):
                return None  # "... 7 * 2 = 14, then subtract 5 from": working that stops mid-sentence
            return _statement_from(lx, after_last[0][0], b, "sentence")  # "... is 2/3.", "there are 12 ways"
        tail = masked[items[-1][1] - a:]
        if _AFTER.match(tail):  # "$x \geq 5$ is the solution."
            return _statement_from(lx, items[-1][0], b, "sentence")
        if _CONCLUSION.match(masked) and len(items) == 1 and len(re.findall(r"[A-Za-z]+", tail)) <= 3:
            return _statement_from(lx, items[-1][0], b, "sentence")  # "Therefore, ... increases by 100%."
        return None
    return None


def _goes_on(sentence: str, tail: str) -> bool:
    """Whether the reply's unterminated last sentence goes on past its value (a clause after a comma,
    or more than three words): the value is working in progress, not a conclusion."""
    if sentence.rstrip().endswith((".", "!", "?")):
        return False
    return "," in tail or len(re.findall(r"[A-Za-z]+", tail)) > 3


def _only_fillers(gap: str) -> bool:
    """Whether only filler words ("approximately", "about") stand between an anchor and a value."""
    words = re.findall(r"[A-Za-z]+", gap)
    return len(gap) <= 30 and all(w.lower() in ("approximately", "about", "around", "roughly", "exactly", "just",
                                                "only", "then", "now", "therefore", "thus", "equal", "to", "simply",
                                                "a", "total", "of") for w in words)


def _statement_from(lx: _Lexed, i: int, end: int, kind: str) -> Statement | None:
    if i in lx.box_at or i in lx.span_at:
        run = _run_at(lx, i, end)
        return Statement(run[0], i, run[1], kind) if run else None
    value = _plain_value(lx.text[i:end])
    return Statement(value, i, end, kind) if value else None


def _bare_statement(lx: _Lexed) -> Statement | None:
    """Kind 5: a short reply that is only an answer."""
    text = lx.text
    s = _strip_tail(text).strip()
    start = text.find(s) if s else -1
    if not s:
        return None
    body = s.rstrip(".").rstrip()
    if start in lx.box_at or start in lx.span_at:
        run = _run_at(lx, start, start + len(body))
        if run is not None and not text[run[1]:start + len(body)].strip(" .$"):
            return Statement(run[0], start, run[1], "bare_math")
    if "\n" in body or len(body) > 80 or "\\boxed" in body or "\\fbox" in body:  # a broken box states nothing
        return None
    words = len(re.findall(r"(?<!\\)\b[A-Za-z]{2,}", body))
    if (words <= 2 and (any(ch.isdigit() for ch in body) or "\\" in body)) or len(body.split()) <= 2:
        value = body.strip()
        dollars = len(re.findall(r"(?<!\\)\$", value))  # a `\$` is a dollar sign, kept
        if dollars == 1:  # "$1,000.99", "0.3333$": a currency sign or a stray delimiter
            value = re.sub(r"(?<!\\)\$", "", value).strip()
        return Statement(_with_percent(value), start, start + len(body), "bare") if value else None
    return None


def extract(text: str, *, finish_reason: str | None = "stop") -> Extraction:
    """Every final answer ``text`` states, of the strongest kind it has (see the module docstring).

    ``finish_reason="length"`` (the reply was cut off at the token limit): only kinds 1-3, and
    no plain value that runs into the cut.
    """
    text = undouble(text)
    if (k := text.rfind("</think>")) >= 0 and text[k + 8:].strip():
        after = extract(text[k + 8:], finish_reason=finish_reason)
        if after.statements:
            return after
    cut_off = finish_reason == "length"
    cut = len(text) if cut_off else len(text) + 1  # a plain value reaching the cut may be half-written
    lx = _lex(text)
    finals = _final_statements(lx, cut)
    if finals:
        first = finals[0].start
        later = [b for b in lx.boxes if b[0] > first and not any(f.start <= b[0] < f.end for f in finals)]
        statements = sorted([*finals, *_box_statements(lx, later)], key=lambda s: s.start)
        return Extraction(tuple(statements[-_MAX_STATEMENTS:]), "final")
    if lx.boxes:
        boxed = _box_statements(lx, lx.boxes)
        if boxed:
            return Extraction(tuple(boxed), "box")
    if (st := _answer_statement(lx, cut)) is not None:
        return Extraction((st,), "answer")
    if cut_off:
        return Extraction(cut_off=True)
    if (st := _sentence_statement(lx)) is not None:
        return Extraction((st,), "sentence")
    if (st := _bare_statement(lx)) is not None:
        return Extraction((st,), st.kind)
    return Extraction()


def extract_answer(text: str) -> str | None:
    """The final answer ``text`` states last, as written (not canonicalized); None when it states none."""
    return extract(text).answer


def gsm8k_answer(text: str) -> str:
    """GSM8K ground truth: the number after the last `####`, thousands separators removed.

    Raises ValueError when there is no `####` or nothing after it (loaders turn it into a DataError).
    """
    at = text.rfind("####")
    if at < 0:
        raise ValueError("no '#### N' final-answer line")
    answer = text[at + 4:].strip().splitlines()[0] if text[at + 4:].strip() else ""
    answer = answer.strip().strip("*").strip().strip("$").strip().rstrip(".").strip()
    answer = answer.replace(",", "").strip()
    if not answer:
        raise ValueError("nothing after '####'")
    return answer
