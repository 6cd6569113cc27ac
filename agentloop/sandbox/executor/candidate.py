"""The untrusted side of a job: a plain program (`sandbox exec`), or the candidate module of a
graded job serving the tests' calls. Neither holds anything that could write a `passed`."""

from .child import (
    HARNESS_EXIT,
    _exit,
    candidate_setup,
    enter_child,
    exit_status,
    finish,
    flush_std,
    format_exception,
    fresh_main_module,
    report_exception,
)
from .framing import BlobReader, write_blob
from .values import ValueWriter, dumps_value, loads_args, loads_value


def plain_child(program, secret, job_dir, out_w, err_w, res_w):
    """Plain job: the whole program in one process; exit 0 plus the secret written after the
    code returned is a pass. Never returns."""
    import os

    try:
        enter_child((out_w, err_w, res_w), job_dir)
        candidate_setup()
        module = fresh_main_module("<candidate>", program)
    except BaseException:
        try:
            os.write(3, b"H" + secret.encode() + b"\n")
        finally:
            _exit(HARNESS_EXIT)
    token = secret.encode() + b"\n"
    del secret
    try:
        exec(compile(program, "<candidate>", "exec"), module.__dict__)
    except SystemExit as e:
        status = exit_status(e.code)
        _exit(flush_std() or status)
    except BaseException as e:
        report_exception(e)
        flush_std()
        _exit(1)
    finish(token)


def candidate_child(source, job_dir, out_w, err_w, rpc):
    """Graded job, candidate side: import the candidate module, then serve calls from the tests.
    Holds no secret and no result channel, so whatever it does it cannot write a verdict. Once the
    candidate's code has run, any failure here is the candidate's doing: exit status 1."""
    try:
        enter_child((out_w, err_w, rpc), job_dir)
        candidate_setup()
        module = fresh_main_module("<candidate>", source)
    except BaseException:
        _exit(HARNESS_EXIT)
    try:
        serve_candidate(source, module.__dict__, 3)
    finally:
        _exit(1)


def serve_candidate(source, namespace, rpc):
    try:
        exec(compile(source, "<candidate>", "exec"), namespace)
        hello = ("ok", exported(namespace))
    except BaseException as e:
        hello = ("exc", remote_exception(e))
    flush_std()
    write_blob(rpc, dumps_value(hello))
    if hello[0] == "exc":
        return
    reader, writer = BlobReader(rpc), ValueWriter()
    while True:
        try:
            request = reader.read_blob()
        except EOFError:
            _exit(flush_std())
        try:
            name, args, kwargs = loads_args(request, namespace)
            reply = writer.dumps(("ok", namespace[name](*args, **kwargs)))
        except BaseException as e:
            reply = writer.dumps(("exc", remote_exception(e)))
        flush_std()
        write_blob(rpc, reply)


def exported(namespace):
    """What the tests may use from the candidate module: its functions (as names) and the values
    that will unpickle on the tests' side."""
    functions, values = [], []
    for name, value in list(namespace.items()):
        if name.startswith("__") or type(value).__name__ == "module":
            continue
        if callable(value):
            functions.append(name)
            continue
        try:
            loads_value(dumps_value(value))
        except BaseException:
            continue
        values.append((name, value))
    return functions, values


def remote_exception(e):
    try:
        tb = format_exception(e)[-4000:]
        msg = str(e)[:2000]
    except BaseException:
        tb, msg = "", "<unprintable>"
    return [type(e).__name__, msg, tb]
