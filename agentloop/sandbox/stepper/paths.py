"""Workspace paths: relative, inside the workdir. Shared by the server and the host's API."""

import os
import posixpath


def check(relpath):
    """-> the normalized relative path; ValueError (one line) for anything that would leave the
    workdir by its spelling: empty, absolute, a `..` component, a NUL byte."""
    if not isinstance(relpath, str) or not relpath:
        raise ValueError(f"workspace path {relpath!r}: must be a non-empty relative path")
    if "\0" in relpath:
        raise ValueError(f"workspace path {relpath!r}: contains a NUL byte")
    if relpath.startswith("/"):
        raise ValueError(f"workspace path {relpath!r}: absolute paths are refused (relative to the workdir only)")
    if ".." in relpath.split("/"):
        raise ValueError(f"workspace path {relpath!r}: `..` is refused (it could leave the workdir)")
    norm = posixpath.normpath(relpath)
    if norm in (".", ""):
        raise ValueError(f"workspace path {relpath!r}: names the workdir itself, not a file in it")
    return norm


def inside(workdir, path):
    """Whether `path`, with every symlink resolved, is inside `workdir`."""
    real = os.path.realpath(path)
    root = os.path.realpath(workdir)
    return real == root or real.startswith(root + "/")
