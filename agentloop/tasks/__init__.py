"""Tasks: the Task model, loaders for HumanEval-style data, suite definitions, reply → program."""
