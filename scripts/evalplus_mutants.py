"""Make a fixture of one mutant per HumanEval+ or MBPP+ task and evalplus 0.3.1's own verdicts
(base and plus) on the reference and the mutant of every task. Not run in CI; the fixtures it
writes are what tests/test_humanevalplus_evalplus.py and tests/test_mbppplus.py check agentloop's
grading against.

    python3 -m venv /tmp/evalplus-venv && /tmp/evalplus-venv/bin/pip install evalplus==0.3.1
    /tmp/evalplus-venv/bin/python scripts/evalplus_mutants.py --dataset humaneval \\
        --data ../shared/data/humanevalplus-v0.1.10-native.jsonl.gz --runs 2 --parallel 2 \\
        --out tests/fixtures/humanevalplus_mutants.jsonl.gz
    /tmp/evalplus-venv/bin/python scripts/evalplus_mutants.py --dataset mbpp \\
        --data ../shared/data/mbppplus-v0.2.0.jsonl.gz --runs 2 --parallel 2 \\
        --out tests/fixtures/mbppplus_mutants.jsonl.gz

Stdlib + evalplus only (it runs in evalplus's venv, not agentloop's). evalplus reads the data
(its native format) through HUMANEVAL_OVERRIDE_PATH or MBPP_OVERRIDE_PATH, set here to --data
before evalplus is imported; its expected-output cache lives in ~/.cache/evalplus (keyed by the
file's md5). `--mutants-only` writes the mutants without running evalplus (verdicts null), to
check that a fixture's mutants are reproduced.

The program that is mutated, and graded as an evalplus `solution` (a whole module, as is), is
the reference: `canonical_solution` for MBPP+ (a whole module there), `prompt +
canonical_solution` for HumanEval+ (so helpers defined in the prompt, e.g. HumanEval/38's
`encode_cyclic`, are mutation sites too).

Mutants are deterministic: the reference is parsed, one site of one kind is changed, and the
module is unparsed. Kinds: the first tried is the task's position in the file modulo 4 in this
list, then the others in order, `return` last: `compare`
(< <=, > >=, == !=, in / not in, is / is not flipped), `constant` (an int literal + 1),
`arith` (+ -, * +, / *, // *, % //), `return` (the entry point's first returned value becomes
None); the site is sha256(task_id) modulo the number of sites. The three MBPP+ tasks whose
references return re.Match objects (Mbpp/737, 787, 794) always get the `return` mutant: `return
None` is the mutant OriginFmt's unasserted test lets through. A mutant may behave exactly like
the reference; the fixture then says so through evalplus's verdict.

evalplus runs --runs times on the same samples (reference first, mutant second, per task);
`stable` is false for a task whose verdicts (reference or mutant) differ between runs
(timing-sensitive tasks on a loaded machine: evalplus's limit is max(1 s, 4 x the reference's
time) per input, wall clock). The fixture's verdicts are those of the first run.

Rows: first {"meta": {...}}, then per task {"task_id", "mutation", "mutant", "reference":
[base, plus], "mutant_status": [base, plus], "stable": bool} with evalplus's statuses
("pass" | "fail" | "timeout").
"""

from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

OVERRIDE = {"humaneval": "HUMANEVAL_OVERRIDE_PATH", "mbpp": "MBPP_OVERRIDE_PATH"}
KINDS = ("compare", "constant", "arith", "return")
NOT_NONE = {"Mbpp/737", "Mbpp/787", "Mbpp/794"}
COMPARE_FLIP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
                ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
ARITH_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Add, ast.Div: ast.Mult, ast.FloorDiv: ast.Mult,
              ast.Mod: ast.FloorDiv}


def sites(tree: ast.Module, kind: str, entry_point: str) -> list[tuple[ast.AST, int]]:
    """(node, index within the node) of every place a mutation of `kind` applies, in source order."""
    found: list[tuple[ast.AST, int]] = []
    if kind == "return":
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == entry_point:
                found += [(n, 0) for n in ast.walk(node) if isinstance(n, ast.Return) and n.value is not None
                          and not (isinstance(n.value, ast.Constant) and n.value.value is None)]
        return found[:1]
    for node in ast.walk(tree):
        if kind == "compare" and isinstance(node, ast.Compare):
            found += [(node, i) for i, op in enumerate(node.ops) if type(op) in COMPARE_FLIP]
        elif kind == "constant" and isinstance(node, ast.Constant) and type(node.value) is int:  # noqa: SIM114 - one branch per kind
            found.append((node, 0))
        elif kind == "arith" and isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in ARITH_SWAP:
            found.append((node, 0))
    return sorted(found, key=lambda s: (getattr(s[0], "lineno", 0), getattr(s[0], "col_offset", 0), s[1]))


def describe(node: ast.AST, index: int, kind: str) -> str:
    line = getattr(node, "lineno", "?")
    if kind == "compare":
        op = node.ops[index]
        return f"compare: {ast.unparse(ast.Compare(ast.Name('a'), [op], [ast.Name('b')]))} flipped (line {line})"
    if kind == "constant":
        return f"constant: {node.value} -> {node.value + 1} (line {line})"
    if kind == "arith":
        return f"arith: {type(node.op).__name__} -> {ARITH_SWAP[type(node.op)].__name__} (line {line})"
    return f"return: None instead of `{ast.unparse(node.value)[:60]}` (line {line})"


def apply(node: ast.AST, index: int, kind: str) -> None:
    if kind == "compare":
        node.ops[index] = COMPARE_FLIP[type(node.ops[index])]()
    elif kind == "constant":
        node.value = node.value + 1
    elif kind == "arith":
        node.op = ARITH_SWAP[type(node.op)]()
    else:
        node.value = ast.Constant(None)


def mutate(task_id: str, position: int, code: str, entry_point: str) -> tuple[str, str]:
    """(mutant source, what was changed)."""
    tree = ast.parse(code)
    first = "return" if task_id in NOT_NONE else KINDS[position % 4]
    order = [first] + [k for k in KINDS if k not in (first, "return")] + ["return"]
    pick = int(hashlib.sha256(task_id.encode()).hexdigest(), 16)
    for kind in order:
        found = sites(tree, kind, entry_point)
        if found:
            node, index = found[pick % len(found)]
            what = describe(node, index, kind)
            apply(node, index, kind)
            return ast.unparse(ast.fix_missing_locations(tree)) + "\n", what
    # no site of any kind: the entry point returns None at once
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == entry_point:
            node.body.insert(0, ast.Return(ast.Constant(None)))
    return ast.unparse(ast.fix_missing_locations(tree)) + "\n", "return: None before the body"


def reference(dataset: str, row: dict) -> str:
    """The reference as a whole program (what evalplus runs for `prompt + canonical_solution`)."""
    return row["prompt"] + row["canonical_solution"] if dataset == "humaneval" else row["canonical_solution"]


def read_rows(path: Path) -> list[dict]:
    with gzip.open(path, "rt") if path.suffix == ".gz" else open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def run_evalplus(dataset: str, samples: Path, parallel: int) -> dict[str, list[dict]]:
    from evalplus.evaluate import evaluate

    evaluate(dataset=dataset, samples=str(samples), parallel=parallel)
    with open(str(samples).replace(".jsonl", "_eval_results.json")) as f:
        return json.load(f)["eval"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", choices=("humaneval", "mbpp"), required=True)
    ap.add_argument("--data", type=Path, required=True,
                    help="evalplus's native file: HumanEvalPlus v0.1.10 or MbppPlus v0.2.0 (.jsonl.gz)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--mutants-only", action="store_true", help="write the mutants, do not run evalplus")
    args = ap.parse_args()
    os.environ[OVERRIDE[args.dataset]] = str(args.data.resolve())
    rows = read_rows(args.data)
    mutants = {}
    for position, row in enumerate(rows):
        mutants[row["task_id"]] = mutate(row["task_id"], position, reference(args.dataset, row), row["entry_point"])
    if args.mutants_only:
        write(args.out, {"dataset": args.dataset, "mutants_only": True}, rows, mutants, [])
        return
    import evalplus
    import numpy

    if evalplus.__version__ != "0.3.1":
        sys.exit(f"evalplus 0.3.1 expected, found {evalplus.__version__}")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            samples = Path(tmp) / f"run{run}" / "samples.jsonl"
            samples.parent.mkdir()
            with open(samples, "w") as f:
                for row in rows:
                    f.write(json.dumps({"task_id": row["task_id"], "solution": reference(args.dataset, row)}) + "\n")
                    f.write(json.dumps({"task_id": row["task_id"], "solution": mutants[row["task_id"]][0]}) + "\n")
            started = time.time()
            runs.append(run_evalplus(args.dataset, samples, args.parallel))
            print(f"run {run}: {time.time() - started:.0f} s", file=sys.stderr)
    meta = {"dataset": args.dataset, "evalplus": evalplus.__version__, "numpy": numpy.__version__,
            "python": platform.python_version(), "data_sha256": hashlib.sha256(args.data.read_bytes()).hexdigest(),
            "runs": args.runs, "parallel": args.parallel, "cpus": os.cpu_count(), "made": time.strftime("%Y-%m-%d")}
    write(args.out, meta, rows, mutants, runs)


def write(out: Path, meta: dict, rows: list[dict], mutants: dict[str, tuple[str, str]], runs: list[dict]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(out, "wt") as f:
        f.write(json.dumps({"meta": meta}) + "\n")
        for row in rows:
            tid = row["task_id"]
            per_run = [[(r["base_status"], r["plus_status"]) for r in run[tid]] for run in runs]
            ref_status, mutant = per_run[0] if per_run else (None, None)
            f.write(json.dumps({
                "task_id": tid, "mutation": mutants[tid][1], "mutant": mutants[tid][0],
                "reference": ref_status and list(ref_status), "mutant_status": mutant and list(mutant),
                "stable": all(p == per_run[0] for p in per_run),
            }) + "\n")
    print(f"wrote {out} ({out.stat().st_size} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
