"""The `write` and `read` ops: text files in the workdir, confined to it even through symlinks."""

import os
import stat

from .paths import check, inside


def write_files(workdir, files):
    """Write every file (parents created). -> {"written": n}, or {"refused": "path: why"} at the
    first file that cannot be written (the earlier ones stay written)."""
    if not isinstance(files, dict):
        raise ValueError("write: `files` must be an object of path -> text")
    for relpath, text in files.items():
        try:
            rel = check(relpath)
            if not isinstance(text, str):
                raise ValueError(f"workspace path {relpath!r}: content must be text")
            full = os.path.join(workdir, rel)
            parent = os.path.dirname(full)
            if not inside(workdir, parent):  # no step process is alive now: nothing can swap it after
                raise ValueError(f"workspace path {relpath!r}: leaves the workdir through a symlink")
            os.makedirs(parent, exist_ok=True)
            # O_NOFOLLOW: not through a symlink at the last step; O_NONBLOCK: a FIFO fails, never blocks.
            fd = os.open(full, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise ValueError(f"workspace path {relpath!r}: not a regular file")
                data = memoryview(text.encode("utf-8", "surrogatepass"))
                while data:
                    data = data[os.write(fd, data):]
            finally:
                os.close(fd)
        except (ValueError, OSError) as e:
            return {"refused": f"{relpath}: {e}" if isinstance(e, OSError) else str(e)}
    return {"written": len(files)}


def read_files(workdir, paths, limit):
    """-> (files, notes): each path's text, or None with a note saying why (missing, not a regular
    file, outside the workdir, over `limit` bytes, not UTF-8 text)."""
    files, notes = {}, {}
    for relpath in paths:
        files[relpath] = None
        try:
            full = os.path.join(workdir, check(relpath))
        except ValueError as e:
            notes[relpath] = str(e)
            continue
        if not inside(workdir, full):
            notes[relpath] = "outside the workdir (a symlink)"
            continue
        try:
            fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            notes[relpath] = "no such file"
            continue
        except OSError as e:
            notes[relpath] = f"cannot open: {e.strerror}"
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                notes[relpath] = "not a regular file"
                continue
            data = _read_up_to(fd, limit + 1)
        except OSError as e:
            notes[relpath] = f"cannot read: {e.strerror}"
            continue
        finally:
            os.close(fd)
        if len(data) > limit:
            notes[relpath] = f"over {limit} bytes ({max(st.st_size, len(data))})"
        elif b"\0" in data:
            notes[relpath] = "binary (contains NUL bytes)"
        else:
            try:
                files[relpath] = data.decode("utf-8")
            except UnicodeDecodeError:
                notes[relpath] = "not UTF-8 text"
    return files, notes


def _read_up_to(fd, n):
    parts = []
    while n > 0:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            break
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)
