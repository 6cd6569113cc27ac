"""math_vote: agentloop's math checker against math-verify 0.9.0, majority votes, pathological inputs.

    python benchmarks/math_vote.py [--mv-venv DIR] [--data-dir DIR] [--rounds N] [--only SECTIONS]
                                   [--sets math500,mvsuite] [--show-disagreements N] [--patho-mathverify]

Four sections (``--only compare,vote,patho,profile`` picks some; the default runs the first three):

compare
    The same pairs through both checkers, back to back, each in a fresh subprocess that times
    itself. agentloop grades with ``agentloop.math.grade.grade_answer(reply, gold)`` (its default
    configuration: 2 pool workers); math-verify with ``verify(parse(gold), parse(reply))``, run by
    the interpreter of a separate venv (math-verify pins another antlr runtime than latex2sympy2).
    Each subprocess reports: ``import`` (importing the checker), ``first`` (grading every pair once,
    in order: for agentloop this includes starting its pool), ``cold = import + first`` and ``warm``
    (the same pairs again in the same process). Interpreter start-up is excluded from all of them.
    The ratio line is on **cold** (math-verify's cold / agentloop's cold): a run grades each reply
    once, in a process that imported the checker for it. ``warm`` is printed but not the ratio:
    agentloop caches canonical forms by string (200k entries) and math-verify caches 20 parses,
    so the warm pass over the same pairs measures agentloop's cache, not its grading. With
    ``--rounds N`` (default 5) the two sides alternate (A B, B A, ...) and the ratio is over all
    rounds: the sum of math-verify's cold times / the sum of agentloop's (each round's own ratio
    is printed too, to show the spread). Two pair sets:

    - ``math500``: the 500 MATH-500 answers as models write them, "The final answer is \\( X \\)."
      and "The final answer is:" with ``\\[ X \\]`` on the lines after it (1000 pairs), X the gold
      answer. agentloop gets the bare gold; math-verify gets ``$X$`` (its parser needs delimiters
      or a box around a bare LaTeX gold: with the bare gold it agrees with itself on far fewer).
    - ``mvsuite``: Math-Verify 0.9.0's own 276 labelled pairs, ``pred`` graded as the reply against
      ``gold``. math-verify runs each pair with that pair's options as its own test suite does
      (``compare_strings``: the match types, ``float_rounding=precision``, ``strict``,
      ``allow_set_relation_comp``; plain ``parse``/``verify`` for ``mode: default``); agentloop
      maps the options it has an equivalent for, as ``scripts/math_verify_pairs.py`` does.

    Printed per set: times, agreement between the two checkers (and, on mvsuite, each side's score
    against the labels), then ``ratio math_check_vs_math_verify_<set> V`` (target >= 2.0).

vote
    256 answers x 500 MATH-500 problems majority-voted with ``agentloop.math.majority_vote`` in a
    fresh subprocess (pool start-up and a cold cache included, import excluded and printed).
    Target: under 60 s. Answers are realistic strings: each problem's ground truth, equivalent
    rewrites of it and wrong answers (other problems' truths, off-by-one integers), fixed seed.

patho
    Hostile replies (exponent towers, 100k-character replies, deep brace nesting, 50k unclosed
    ``\\boxed{``, long sums) each through ``grade_answer`` in one subprocess after one warm-up
    grade (so pool start-up is not charged to the first input); each timed (wall, and CPU of the
    whole process tree, which a loaded machine does not inflate), then the max. Target: each
    within about 3 s. Measured here, never asserted in tests. ``--patho-mathverify`` also times
    math-verify on the same inputs, for context.

profile
    cProfile of agentloop's side on the math500 set (the parent process only: pool workers run
    elsewhere), top functions by cumulative time.

Data: ``--data-dir``, else ``$AGENTLOOP_DATA_DIR``, else ``../shared/data`` beside the repository.

math-verify: ``--mv-venv DIR`` uses the venv in DIR (it must have math-verify 0.9.0); without it
the benchmark creates ``~/.cache/agentloop/bench/math-verify-0.9.0`` (``$XDG_CACHE_HOME`` honoured)
with ``python -m venv`` and ``pip install math-verify==0.9.0`` on first use. If that install fails
(no package index reachable), it says which command failed and exits 2.

The result lines (each set's ratio inputs, ``ratio ...``, ``target ...``, ``patho max``) are printed
again together under ``summary:`` at the end. Exit status: 0 when every measured target is met, 1
when one is not, 2 when it could not measure (missing data, no math-verify venv).
The machine it runs on may be shared: every ratio is between two sides measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MV_VERSION = "0.9.0"
RATIO_TARGET = 2.0
VOTE_TARGET_S = 60.0
PATHO_TARGET_S = 3.0
SECTIONS = ("compare", "vote", "patho", "profile")


SUMMARY: list[str] = []  # the result lines, printed again together at the end


def result(line: str) -> None:
    """Print a result line (ratio, target, max) and keep it for the closing summary."""
    print(line)
    SUMMARY.append(line)


class CannotMeasure(Exception):
    """A side could not be run: the message is the one line printed before exiting 2."""


# ---------------------------------------------------------------------------------------------
# Data and pair sets (parent side, stdlib only)
# ---------------------------------------------------------------------------------------------

def data_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    if env := os.environ.get("AGENTLOOP_DATA_DIR"):
        return Path(env)
    return ROOT.parent / "shared" / "data"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def math500_pairs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each gold answer written the two ways the issue measured, as a model writes a reply."""
    pairs = []
    for i, row in enumerate(rows):
        gold = row["answer"]
        for form, reply in (("inline", f"The final answer is \\( {gold} \\)."),
                            ("display", f"The final answer is:\n\\[\n{gold}\n\\]")):
            pairs.append({"id": f"math500/{i}/{form}", "form": form, "reply": reply, "gold": gold,
                          "mv_gold": f"${gold}$", "ours": {}, "mv": {"mode": "default"}})
    return pairs


def ours_settings(options: dict[str, Any]) -> dict[str, Any]:
    """math-verify options -> grade_answer keyword arguments, by scripts/math_verify_pairs.py's own mapping."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from math_verify_pairs import settings  # type: ignore[import-not-found]
    except Exception as e:  # no silent stand-in mapping: say what broke
        raise CannotMeasure(f"scripts/math_verify_pairs.py does not import ({type(e).__name__}: {e})") from e
    finally:
        sys.path.pop(0)
    return dict(settings(options))


def mvsuite_pairs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"id": r["id"], "form": r["category"], "reply": r["pred"], "gold": r["gold"], "mv_gold": r["gold"],
             "expected": int(r["expected"]), "ours": ours_settings(r.get("options") or {}),
             "mv": r.get("options") or {"mode": "default"}} for r in rows]


# ---------------------------------------------------------------------------------------------
# The two checkers, each run by a worker subprocess of this same file (top level is stdlib only)
# ---------------------------------------------------------------------------------------------

def _import_ours() -> Any:
    from agentloop.math.grade import grade_answer

    def grade(pair: dict[str, Any]) -> bool:
        return bool(grade_answer(pair["reply"], pair["gold"], **pair["ours"]).passed)
    return grade


def _import_mv() -> Any:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify  # type: ignore[import-not-found]

    def grade(pair: dict[str, Any]) -> bool:
        opts = pair["mv"]
        if opts.get("mode", "default") == "default":
            return bool(verify(parse(pair["mv_gold"]), parse(pair["reply"])))
        # math-verify's tests/test_all.py::compare_strings, which produced these labels
        targets: list[Any] = []
        for kind in opts.get("match_types", ["latex", "expr"]):
            targets.append(LatexExtractionConfig(boxed_match_priority=0) if kind == "latex" else ExprExtractionConfig())
        return bool(verify(parse(pair["mv_gold"], targets), parse(pair["reply"], targets),
                           float_rounding=opts.get("precision", 6), strict=opts.get("strict", True),
                           allow_set_relation_comp=opts.get("allow_set_relation_comp", False)))
    return grade


def _proc_table() -> dict[int, tuple[int, float]] | None:
    """{pid: (parent pid, CPU seconds incl. reaped children)} from /proc; None off Linux."""
    try:
        tick = os.sysconf("SC_CLK_TCK")
        table: dict[int, tuple[int, float]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    raw = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                fields = raw[raw.rfind(")") + 2:].split()  # after "pid (comm) "
                table[int(entry)] = (int(fields[1]), sum(int(x) for x in fields[11:15]) / tick)
    except (OSError, ValueError, IndexError):
        return None
    return table


def _descendants(table: dict[int, tuple[int, float]] | None = None) -> list[int]:
    """The live descendants of this process (agentloop's math workers show up here)."""
    table = _proc_table() if table is None else table
    tree, frontier = [], [os.getpid()]
    while table and frontier:
        parent = frontier.pop()
        kids = [pid for pid, (ppid, _) in table.items() if ppid == parent]
        tree += kids
        frontier += kids
    return tree


def tree_cpu_s() -> float | None:
    """CPU seconds of this process and all its live descendants (with the children they reaped):
    agentloop's math workers are its children and grandchildren. None off Linux."""
    table = _proc_table()
    if table is None:
        return None
    return sum(table[pid][1] for pid in [os.getpid(), *_descendants(table)] if pid in table)


def _cpu_delta(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def worker_grade(side: str, pairs_file: str, profile: bool) -> dict[str, Any]:
    """Import the checker, grade every pair (cold), then again (warm); all timed in here."""
    pairs = json.loads(Path(pairs_file).read_text())
    prof = None
    if profile:
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    c0 = tree_cpu_s()
    t0 = time.perf_counter()
    grade = _import_ours() if side == "agentloop" else _import_mv()
    t1 = time.perf_counter()
    first: list[bool | None] = []
    per_pair: list[float] = []
    errors: list[str] = []
    for p in pairs:
        s = time.perf_counter()
        try:
            first.append(grade(p))
        except Exception as e:  # noqa: BLE001 - a raise is reported, never a verdict
            first.append(None)
            errors.append(f"{p['id']}: {type(e).__name__}: {str(e)[:160]}")
        per_pair.append(time.perf_counter() - s)
    t2 = time.perf_counter()
    c2 = tree_cpu_s()
    second: list[bool | None] = []
    for p in pairs:
        try:
            second.append(grade(p))
        except Exception:  # noqa: BLE001
            second.append(None)
    t3 = time.perf_counter()
    c3 = tree_cpu_s()
    out: dict[str, Any] = {"import_s": t1 - t0, "first_s": t2 - t1, "cold_s": t2 - t0, "warm_s": t3 - t2,
                           "cold_cpu_s": _cpu_delta(c0, c2), "warm_cpu_s": _cpu_delta(c2, c3),
                           "verdicts": first, "warm_verdicts": second, "per_pair_s": per_pair, "errors": errors}
    if prof is not None:
        import io
        import pstats
        prof.disable()
        buf = io.StringIO()
        st = pstats.Stats(prof, stream=buf)
        st.sort_stats("cumulative").print_stats(25)
        out["profile"] = buf.getvalue()
        out["split"] = _profile_split(st.stats, t1 - t0)  # type: ignore[attr-defined]
    return out


def _profile_split(stats: dict[Any, Any], import_s: float) -> list[tuple[str, float]]:
    """Where the grading process's time went, from cProfile's table: cumulative time of each
    function of agentloop's pool module (starting the workers, waiting on them), of the
    multiprocessing calls that start processes and wait on them (if the pool uses multiprocessing),
    and the self time of each agentloop/math module."""
    cum: dict[str, float] = {}
    own: dict[str, float] = {}
    for (file, line, func), (_, ncalls, tottime, cumtime, _) in stats.items():
        if file.endswith("agentloop/math/pool.py") and cumtime >= 0.01:
            cum[f"pool.py:{line} {func}, cumulative ({ncalls} calls)"] = cumtime
        elif file.endswith("multiprocessing/process.py") and func == "start":
            cum[f"multiprocessing Process.start, cumulative ({ncalls} processes started)"] = cumtime
        elif file.endswith("multiprocessing/connection.py") and func == "wait":
            cum[f"multiprocessing connection.wait, cumulative ({ncalls} calls)"] = cumtime
        if "agentloop/math/" in file:
            key = "self time in agentloop/math/" + file.split("agentloop/math/")[-1]
            own[key] = own.get(key, 0.0) + tottime
    rows = [("importing the checker (agentloop.math.grade, hence the agentloop package)", import_s)]
    rows += sorted(cum.items(), key=lambda kv: -kv[1]) + sorted(own.items(), key=lambda kv: -kv[1])
    return rows


def worker_import_breakdown() -> dict[str, Any]:
    """Import times in fresh interpreters: what the math worker processes load before they answer."""
    out = {}
    for mods in (["sympy"], ["sympy", "latex2sympy2"], ["agentloop"], ["agentloop.math.grade"],
                 ["agentloop.math._sym"], ["agentloop.math.worker"]):
        code = ("import time; t = time.perf_counter(); " + "; ".join(f"import {m}" for m in mods)
                + "; print(time.perf_counter() - t)")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
        out[" + ".join(mods)] = float(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 else None
    return out


def worker_vote(problems_file: str) -> dict[str, Any]:
    data = json.loads(Path(problems_file).read_text())
    t0 = time.perf_counter()
    from agentloop.math import canonical_answer, majority_vote
    t1 = time.perf_counter()
    winners = [majority_vote(answers) for answers in data["problems"]]
    t2 = time.perf_counter()
    correct = sum(w[0] == canonical_answer(t) for w, t in zip(winners, data["truths"], strict=True))
    return {"import_s": t1 - t0, "vote_s": t2 - t1, "correct": correct}


WARMUP = [("The final answer is \\( \\sin^2(x)+\\cos^2(x) \\).", "1"),
          ("The final answer is \\( \\sec^2 y \\).", "\\tan^2 y + 1"),
          ("The final answer is \\( \\int_0^1 x\\,dx \\).", "\\frac{1}{2}")]


def worker_patho(cases_file: str, side: str = "agentloop") -> dict[str, Any]:
    """Each case timed; a line before and after each, so a hang is attributed to its case."""
    cases = json.loads(Path(cases_file).read_text())
    t0 = time.perf_counter()
    if side == "agentloop":
        from agentloop.math.grade import grade_answer

        def grade(reply: str, gold: str) -> str:
            v = grade_answer(reply, gold)
            return f"passed={v.passed} answer={str(v.answer)[:40]!r} detail={v.detail[:70]!r}"
        for reply, gold in WARMUP:  # answers only sympy can compare: they start the worker processes
            grade(reply, gold)
    else:
        from math_verify import parse, verify

        def grade(reply: str, gold: str) -> str:
            return f"passed={verify(parse(f'${gold}$'), parse(reply))}"
        for reply, gold in WARMUP:
            grade(reply, gold)
    print("@@WARMUP@@" + json.dumps([time.perf_counter() - t0, len(_descendants())]), flush=True)
    for c in cases:
        print("@@CASE@@" + json.dumps(c["name"]), flush=True)
        c0 = tree_cpu_s()
        s = time.perf_counter()
        try:
            outcome = grade(c["reply"], c["gold"])
        except Exception as e:  # noqa: BLE001 - raising is an allowed outcome; it is printed
            outcome = f"raised {type(e).__name__}: {str(e)[:80]}"
        row = {"name": c["name"], "chars": len(c["reply"]) + len(c["gold"]), "s": time.perf_counter() - s,
               "cpu_s": _cpu_delta(c0, tree_cpu_s()), "outcome": outcome}
        print("@@ROW@@" + json.dumps(row), flush=True)
    return {}


def worker_main(argv: list[str]) -> None:
    kind, path = argv[0], argv[1]
    if kind in ("agentloop", "mathverify"):
        out = worker_grade(kind, path, profile="--profile" in argv)
    elif kind == "imports":
        out = worker_import_breakdown()
    elif kind == "vote":
        out = worker_vote(path)
    elif kind == "patho-mv":
        out = worker_patho(path, "mathverify")
    else:
        out = worker_patho(path)
    sys.stdout.write("\n@@RESULT@@" + json.dumps(out) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------
# Parent: the math-verify venv, running workers, printing
# ---------------------------------------------------------------------------------------------

def default_mv_venv() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "agentloop" / "bench" / f"math-verify-{MV_VERSION}"


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def mv_versions(python: Path) -> dict[str, str] | None:
    code = ("import importlib.metadata as m, json; import math_verify; print(json.dumps({d: m.version(d) for d in "
            "('math-verify', 'latex2sympy2_extended', 'antlr4-python3-runtime', 'sympy')}))")
    try:
        r = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=300, env=_clean_env())
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])


def ensure_mv(venv_arg: str | None) -> tuple[Path, dict[str, str]]:
    """The python of a venv with math-verify 0.9.0: the given one, or the cached one (created on first use)."""
    venv = Path(venv_arg) if venv_arg else default_mv_venv()
    python = venv_python(venv)
    if python.exists() and (versions := mv_versions(python)) is not None:
        if versions["math-verify"] != MV_VERSION:
            raise CannotMeasure(f"{venv} has math-verify {versions['math-verify']}, not {MV_VERSION}; "
                                f"point --mv-venv at a venv with math-verify=={MV_VERSION}")
        return python, versions
    if venv_arg:
        raise CannotMeasure(f"--mv-venv {venv}: `{python} -c 'import math_verify'` failed; create it with"
                            f" `python -m venv {venv} && {python} -m pip install math-verify=={MV_VERSION}`")
    print(f"# creating {venv} (python -m venv; pip install math-verify=={MV_VERSION}) ...", flush=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    steps = [[sys.executable, "-m", "venv", "--clear", str(venv)], [*pip, f"math-verify=={MV_VERSION}"]]
    for cmd in steps:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=_clean_env())
            rc, err = r.returncode, (r.stderr or r.stdout).strip().splitlines()
        except (OSError, subprocess.TimeoutExpired) as e:
            rc, err = -1, [str(e)]
        if rc != 0:
            last = err[-1] if err else ""
            raise CannotMeasure(f"`{' '.join(cmd)}` failed (exit {rc}: {last[:200]}); pass --mv-venv DIR "
                                f"pointing at a venv that has math-verify=={MV_VERSION} installed")
    if (versions := mv_versions(python)) is None:
        raise CannotMeasure(f"{python} cannot import math_verify after installing it; pass --mv-venv DIR")
    return python, versions


def _clean_env() -> dict[str, str]:
    """The environment for the math-verify interpreter: no PYTHONPATH or venv of ours leaking in."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}


def run_worker(python: Path | str, args: list[str], *, ours: bool, timeout: float = 1800) -> dict[str, Any]:
    cmd = [str(python), str(Path(__file__).resolve()), "--worker", *args]
    env = dict(os.environ) if ours else _clean_env()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    except subprocess.TimeoutExpired as e:
        raise CannotMeasure(f"worker {args[0]} ran past {timeout:.0f} s") from e
    marker = r.stdout.rfind("@@RESULT@@")
    if r.returncode != 0 or marker < 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-5:]
        raise CannotMeasure(f"worker {args[0]} failed (exit {r.returncode}): {' | '.join(tail)[:600]}")
    return json.loads(r.stdout[marker + len("@@RESULT@@"):].strip().splitlines()[0])


def _med(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def _fmt_side(name: str, runs: list[dict[str, Any]]) -> str:
    med = {k: _med(runs, k) or 0.0 for k in ("import_s", "first_s", "cold_s", "warm_s")}
    cpu = _med(runs, "cold_cpu_s")
    n = len(runs[0]["verdicts"])
    colds = ", ".join(f"{r['cold_s']:.2f}" for r in runs)
    return (f"  {name:10s} import {med['import_s']:5.2f} s + first pass {med['first_s']:6.2f} s"
            f" = cold {med['cold_s']:6.2f} s"
            f" ({1e3 * med['first_s'] / n:5.1f} ms/pair; CPU {'n/a' if cpu is None else f'{cpu:.2f} s'} all processes);"
            f" warm {med['warm_s']:5.2f} s ({1e3 * med['warm_s'] / n:5.2f} ms/pair)"
            + (f"  [medians of {len(runs)} rounds; cold per round {colds}]" if len(runs) > 1 else ""))


def compare(name: str, pairs: list[dict[str, Any]], mv_python: Path, rounds: int, show: int,
            tmp: Path) -> float | None:
    """Both sides on one pair set; returns the cold ratio (math-verify / agentloop)."""
    f = tmp / f"{name}.json"
    f.write_text(json.dumps(pairs))
    ours_runs: list[dict[str, Any]] = []
    mv_runs: list[dict[str, Any]] = []
    for r in range(rounds):
        order = ("ours", "mv") if r % 2 == 0 else ("mv", "ours")
        for side in order:
            if side == "ours":
                ours_runs.append(run_worker(sys.executable, ["agentloop", str(f)], ours=True))
            else:
                mv_runs.append(run_worker(mv_python, ["mathverify", str(f)], ours=False))
    ours, mv = ours_runs[0], mv_runs[0]
    print(f"{name}: {len(pairs)} pairs")
    print(_fmt_side("agentloop", ours_runs))
    print(_fmt_side("mathverify", mv_runs))
    for label, run in (("agentloop", ours), ("mathverify", mv)):
        if run["errors"]:
            print(f"  {label} raised on {len(run['errors'])} pairs, e.g. {run['errors'][0]}")
        unstable = sum(a != b for a, b in zip(run["verdicts"], run["warm_verdicts"], strict=True))
        if unstable:
            print(f"  {label}: {unstable} verdicts differ between the cold and the warm pass")
    forms = sorted({p["form"] for p in pairs}, key=lambda s: [q["form"] for q in pairs].index(s))
    by_form = len(forms) <= 3
    agree = sum(a == b for a, b in zip(ours["verdicts"], mv["verdicts"], strict=True))
    print(f"  agreement {agree}/{len(pairs)}; passed: agentloop {sum(v is True for v in ours['verdicts'])},"
          f" mathverify {sum(v is True for v in mv['verdicts'])}")
    if by_form:
        for form in forms:
            idx = [i for i, p in enumerate(pairs) if p["form"] == form]
            print(f"    {form:8s} agreement {sum(ours['verdicts'][i] == mv['verdicts'][i] for i in idx)}/{len(idx)};"
                  f" passed: agentloop {sum(ours['verdicts'][i] is True for i in idx)},"
                  f" mathverify {sum(mv['verdicts'][i] is True for i in idx)}")
    if all("expected" in p for p in pairs):
        for label, run in (("agentloop", ours), ("mathverify", mv)):
            right = sum(v == bool(p["expected"]) for v, p in zip(run["verdicts"], pairs, strict=True))
            print(f"  {label} vs labels: {right}/{len(pairs)} ({100 * right / len(pairs):.1f}%)")
    diffs = [i for i, (a, b) in enumerate(zip(ours["verdicts"], mv["verdicts"], strict=True)) if a != b]
    for i in diffs[:show]:
        p = pairs[i]
        print(f"    differ {p['id'][:70]}: agentloop={ours['verdicts'][i]} mathverify={mv['verdicts'][i]}"
              f" gold={p['gold'][-60:]!r} reply={p['reply'][-80:]!r}")
    for label, run in (("agentloop", ours), ("mathverify", mv)):
        slow = sorted(range(len(pairs)), key=lambda i: -run["per_pair_s"][i])[:3]
        print(f"  {label} slowest first-pass pairs: "
              + "; ".join(f"{run['per_pair_s'][i]:.2f} s {pairs[i]['id'][:50]}" for i in slow))
    ours_cold = sum(r["cold_s"] for r in ours_runs)
    mv_cold = sum(r["cold_s"] for r in mv_runs)
    ratio = mv_cold / ours_cold
    per_round = ", ".join(f"{m['cold_s'] / o['cold_s']:.2f}" for o, m in zip(ours_runs, mv_runs, strict=True))
    ours_cpus = [r.get("cold_cpu_s") for r in ours_runs]
    mv_cpus = [r.get("cold_cpu_s") for r in mv_runs]
    cpu = "n/a"
    if None not in ours_cpus and None not in mv_cpus:
        o_cpu, m_cpu = sum(x for x in ours_cpus if x is not None), sum(x for x in mv_cpus if x is not None)
        cpu = f"{m_cpu:.2f} / {o_cpu:.2f} = {m_cpu / o_cpu:.2f}"
    result(f"{name} inputs (wall, cold = import + first pass, summed over {rounds} rounds): mathverify {mv_cold:.2f} s"
           f" / agentloop {ours_cold:.2f} s = {ratio:.2f} (per round {per_round}); not the ratio: cold CPU {cpu},"
           f" warm medians {_med(mv_runs, 'warm_s'):.2f} / {_med(ours_runs, 'warm_s'):.2f} s (see the docstring)")
    result(f"ratio math_check_vs_math_verify_{name} {ratio:.2f}")
    result(f"target math_check_vs_math_verify_{name} >= {RATIO_TARGET}: {'PASS' if ratio >= RATIO_TARGET else 'FAIL'}")
    return ratio


# --- votes ------------------------------------------------------------------------------------

def _value(answer: str) -> float | None:
    """A float for plain numbers and simple fractions (enough to write a decimal rewrite)."""
    a = answer.strip().replace("\\dfrac", "\\frac")
    if re.fullmatch(r"-?\d+(?:\.\d+)?", a):
        return float(a)
    if m := re.fullmatch(r"(-?)\\frac\{(\d+)\}\{(\d+)\}", a):
        return (-1 if m.group(1) else 1) * int(m.group(2)) / int(m.group(3)) if int(m.group(3)) else None
    return None


def rewrites(answer: str) -> list[str]:
    """Equivalent spellings a model might produce for one ground truth."""
    out = [answer, answer + ".", f" {answer} ", answer.replace("\\frac", "\\dfrac")]
    if answer.startswith("(") and answer.endswith(")"):
        out.append("\\left(" + answer[1:-1] + "\\right)")
    if "=" not in answer and "\\text" not in answer:
        out += [f"x = {answer}", f"\\text{{{answer}}}" if re.fullmatch(r"[\w ]+", answer) else answer]
    value = _value(answer)
    if value is not None and not re.fullmatch(r"-?\d+", answer):
        out.append(f"{value:.10g}")
    if re.fullmatch(r"\d{4,}", answer):
        out.append(f"{int(answer):,}")
    return out


def wrong_answers(answer: str, others: list[str], rng: random.Random) -> list[str]:
    wrong = rng.sample(others, 6)
    if re.fullmatch(r"-?\d+", answer):
        wrong += [str(int(answer) + 1), str(int(answer) - 1)]
    return wrong


def make_problems(truths: list[str], n: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    problems = []
    for truth in truths:
        good, bad = rewrites(truth), wrong_answers(truth, truths, rng)
        problems.append([rng.choice(good) if rng.random() < 0.55 else rng.choice(bad) for _ in range(n)])
    return problems


def votes(truths: list[str], samples: int, tmp: Path) -> bool:
    f = tmp / "votes.json"
    f.write_text(json.dumps({"truths": truths, "problems": make_problems(truths, samples, seed=0)}))
    r = run_worker(sys.executable, ["vote", str(f)], ours=True)
    ok = r["vote_s"] < VOTE_TARGET_S
    print(f"vote: {len(truths)} problems x {samples} answers, majority_vote in a fresh process: {r['vote_s']:.1f} s"
          f" (pool start-up and a cold cache included; import {r['import_s']:.1f} s not included);"
          f" winner = the truth's canonical form for {r['correct']}/{len(truths)}")
    result(f"target math_vote < {VOTE_TARGET_S:.0f} s: {'PASS' if ok else 'FAIL'} ({r['vote_s']:.1f} s)")
    return ok


# --- pathological inputs -----------------------------------------------------------------------

def patho_cases() -> list[dict[str, str]]:
    prose = "We compute the quantity step by step, checking each term carefully. "
    long_prose = (prose * (100_000 // len(prose) + 1))[:100_000]
    cases = [
        ("tower 10^{10^{10^{10}}} vs 1", "The final answer is \\( 10^{10^{10^{10}}} \\).", "1"),
        ("tower 10^{10^{10^{10}}} vs itself", "The final answer is \\( 10^{10^{10^{10}}} \\).", "10^{10^{10^{10}}}"),
        ("tower 2^{2^{2^{2^{2^{2}}}}} vs 2^{65536}", "\\boxed{2^{2^{2^{2^{2^{2}}}}}}", "2^{65536}"),
        ("tower 9^{9^{9^9}} vs 9^{9^{9^9}}+1", "\\boxed{9^{9^{9^9}}}", "9^{9^{9^9}}+1"),
        ("factorial 100000! vs 99999!", "\\boxed{100000!}", "99999!"),
        ("100k-char reply, answer at the end", long_prose + " The final answer is \\( \\frac{1}{2} \\).", "0.5"),
        ("100k-char reply, no answer", long_prose, "7"),
        ("100k-char boxed answer 1+1+...", "\\boxed{" + "+".join(["1"] * 50_000) + "}", "50000"),
        ("deep braces {{{...}}} x 10k in a box", "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}", "1"),
        ("deep parens ((...)) x 5k in a box", "\\boxed{" + "(" * 5_000 + "1" + ")" * 5_000 + "}", "1"),
        ("\\boxed{ unclosed x 50k", "\\boxed{" * 50_000, "1"),
        ("\\frac nested 300 deep", "\\boxed{" + "\\frac{1}{" * 300 + "2" + "}" * 300 + "}", "1"),
        ("\\sqrt nested 500 deep", "\\boxed{" + "\\sqrt{" * 500 + "2" + "}" * 500 + "}", "2"),
        ("long sum 1+2+...+300 (~1k chars)", "\\boxed{" + "+".join(str(i) for i in range(1, 301)) + "}", "45150"),
        ("long sum x^1+...+x^120", "\\boxed{" + "+".join(f"x^{{{i}}}" for i in range(1, 121)) + "}",
         "+".join(f"x^{{{i}}}" for i in range(120, 0, -1))),
        ("long product (x+1)(x+2)...(x+40), reordered",
         "\\boxed{" + "".join(f"(x+{i})" for i in range(1, 41)) + "}", "".join(f"(x+{i})" for i in range(40, 0, -1))),
        ("10^{1000000} vs 10^{1000000}+1", "\\boxed{10^{1000000}}", "10^{1000000}+1"),
        ("many boxes x 10k", " ".join(f"\\boxed{{{i}}}" for i in range(10_000)), "9999"),
        ("100k of $ and \\( delimiters", "The final answer is " + "$\\(" * 25_000, "1"),
    ]
    return [{"name": n, "reply": r, "gold": g} for n, r, g in cases]


def patho(tmp: Path, timeout_s: float, mv_python: Path | None) -> bool:
    """agentloop on every hostile input (the target); math-verify on the same ones when asked (context)."""
    cases = patho_cases()
    f = tmp / "patho.json"
    f.write_text(json.dumps(cases))
    ok = True
    for side, python in (("agentloop", Path(sys.executable)), ("mathverify", mv_python)):
        if python is None:
            continue
        kind = "patho" if side == "agentloop" else "patho-mv"
        cmd = [str(python), str(Path(__file__).resolve()), "--worker", kind, str(f)]
        env = dict(os.environ) if side == "agentloop" else _clean_env()
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT, env=env)
            stdout, stderr, hung = r.stdout, r.stderr, None
        except subprocess.TimeoutExpired as e:
            stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            stderr, hung = "", "?"
        rows, warmup, procs = [], None, 0
        for line in stdout.splitlines():
            if line.startswith("@@WARMUP@@"):
                warmup, procs = json.loads(line[len("@@WARMUP@@"):])
            elif line.startswith("@@CASE@@") and hung is not None:
                hung = json.loads(line[len("@@CASE@@"):])
            elif line.startswith("@@ROW@@"):
                rows.append(json.loads(line[len("@@ROW@@"):]))
        if warmup is None:
            raise CannotMeasure(f"patho worker ({side}) failed before its first case: {(stderr or stdout)[-400:]}")
        print(f"patho {side}: {len(cases)} inputs, one process after {len(WARMUP)} warm-up grades ({warmup:.1f} s,"
              f" leaving {procs} child processes: import and pool start-up are not charged to the first input)")
        for row in rows:
            cpu = "   n/a" if row.get("cpu_s") is None else f"{row['cpu_s']:6.2f}"
            print(f"  {row['s']:7.3f} s (CPU {cpu} s)  {row['name'][:48]:48s} ({row['chars']} chars) {row['outcome']}")
        if hung is not None:
            print(f"  >{timeout_s:.0f} s  {hung}: did not return; the process was killed (later inputs not run)")
            rows.append({"name": hung, "s": float("inf")})
        worst = max(rows, key=lambda x: x["s"])
        if side == "agentloop":
            ok = worst["s"] <= PATHO_TARGET_S
            cpu_worst = max((r for r in rows if r.get("cpu_s") is not None), key=lambda x: x["cpu_s"], default=None)
            result(f"patho max {worst['s']:.2f} s ({worst['name']})" + (
                f"; max CPU {cpu_worst['cpu_s']:.2f} s, all processes ({cpu_worst['name']})" if cpu_worst else ""))
            result(f"target patho each <= {PATHO_TARGET_S:.0f} s: {'PASS' if ok else 'FAIL'}")
        else:
            print(f"  (math-verify, for context only: max {worst['s']:.2f} s, {worst['name']})")
    return ok


def profile(name: str, pairs: list[dict[str, Any]], tmp: Path) -> None:
    f = tmp / "profile.json"
    f.write_text(json.dumps(pairs))
    r = run_worker(sys.executable, ["agentloop", str(f), "--profile"], ours=True)
    print(f"profile {name}: agentloop on {len(pairs)} pairs, in the grading process (pool workers run elsewhere);"
          f" under cProfile: import {r['import_s']:.2f} s + first pass {r['first_s']:.2f} s")
    print("  where the time went (seconds; cumulative rows include what they call, so they overlap):")
    for key, t in r["split"]:
        if t >= 0.005:
            print(f"    {t:7.2f} s  {key}")
    print(r["profile"])


def import_breakdown() -> None:
    imports = run_worker(sys.executable, ["imports", "-"], ours=True)
    print("fresh-interpreter import times (what the math workers load before they answer): "
          + "; ".join(f"{k} {'failed' if v is None else f'{v:.2f} s'}" for k, v in imports.items()))


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mv-venv", default=None, help="a venv with math-verify 0.9.0 (default: create one in the cache)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--rounds", type=int, default=5, help="alternating runs of each side per set")
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--only", default="compare,vote,patho", help=f"comma-separated of {','.join(SECTIONS)}")
    ap.add_argument("--sets", default="math500,mvsuite")
    ap.add_argument("--show-disagreements", type=int, default=10)
    ap.add_argument("--patho-mathverify", action="store_true", help="also time math-verify on the hostile inputs")
    ap.add_argument("--patho-timeout", type=float, default=300.0, help="seconds for all pathological inputs together")
    args = ap.parse_args()
    sections = set(args.only.split(","))
    if sections - set(SECTIONS):
        ap.error(f"unknown section(s): {', '.join(sorted(sections - set(SECTIONS)))}")
    base = data_dir(args.data_dir)
    unknown = set(args.sets.split(",")) - {"math500", "mvsuite"}
    if unknown:
        ap.error(f"unknown set(s): {', '.join(sorted(unknown))} (math500, mvsuite)")
    print(f"# data {base}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start"
          " (a shared machine slows both sides alike only on average)")
    failed = False
    try:
        for f in ("math500.jsonl", "math-verify-0.9.0-tests.jsonl"):
            if not (base / f).is_file():
                raise CannotMeasure(f"{base / f} not found; point AGENTLOOP_DATA_DIR or --data-dir at the data")
        math500 = read_jsonl(base / "math500.jsonl")
        with tempfile.TemporaryDirectory(prefix="math_vote_") as t:
            tmp = Path(t)
            sets = {"math500": lambda: math500_pairs(math500),
                    "mvsuite": lambda: mvsuite_pairs(read_jsonl(base / "math-verify-0.9.0-tests.jsonl"))}
            if "compare" in sections:
                mv_python, versions = ensure_mv(args.mv_venv)
                print(f"# math-verify: {mv_python} ({', '.join(f'{k} {v}' for k, v in versions.items())})")
                for name in args.sets.split(","):
                    ratio = compare(name, sets[name](), mv_python, args.rounds, args.show_disagreements, tmp)
                    failed |= ratio is None or ratio < RATIO_TARGET
            if "vote" in sections:
                failed |= not votes([r["answer"] for r in math500], args.samples, tmp)
            if "patho" in sections:
                mv = ensure_mv(args.mv_venv)[0] if args.patho_mathverify else None
                failed |= not patho(tmp, args.patho_timeout, mv)
            if "profile" in sections:
                for name in args.sets.split(","):
                    profile(name, sets[name](), tmp)
                import_breakdown()
    except CannotMeasure as e:
        print(f"math_vote: cannot measure: {e}", flush=True)
        return 2
    print(f"# load average {os.getloadavg()[0]:.2f} at the end")
    if SUMMARY:
        print("summary:")
        for line in SUMMARY:
            print(f"  {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
