"""What an episode's workspace starts with, for a function task.

`solution.py` holds the task's prompt (signature and docstring) for the agent to complete, and
`test_solution.py` the suite's feedback tests, runnable with `python3 test_solution.py`. The
grading tests are never written to a workspace: they run in the job sandbox on a copy of
`solution.py` after each step.
"""

from __future__ import annotations

from agentloop.tasks.model import Task

SOLUTION = "solution.py"
VISIBLE_TESTS = "test_solution.py"


def workspace_files(task: Task) -> dict[str, str]:
    entry = task.entry_point
    if task.feedback_tests.strip():
        tests = (f"from solution import {entry}\n\n{task.feedback_tests.rstrip()}\n\n\n"
                 f"if __name__ == \"__main__\":\n    check({entry})\n    print(\"the visible tests passed\")\n")
    else:
        tests = "# This task has no visible tests.\nprint(\"no visible tests\")\n"
    return {SOLUTION: task.prompt if task.prompt.endswith("\n") else task.prompt + "\n", VISIBLE_TESTS: tests}
