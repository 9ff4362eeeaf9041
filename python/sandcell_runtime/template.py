"""The session template: a Python process that has already imported the data stack and
forks a new session for each request of the Rust host.

Run as `python -m sandcell_runtime.template`, with the control socket (SOCK_SEQPACKET)
on fd 3. See ARCHITECTURE.md ("Process model") for who does what after the fork.
"""

import ctypes
import gc
import importlib
import json
import os
import signal
import socket
import sys
import traceback

CONTROL_FD = 3
PR_SET_PDEATHSIG = 1


def main():
    # `python -m` put the directory it started in first on sys.path: the host's, which
    # sessions must neither import from nor see.
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]
    control = socket.socket(fileno=CONTROL_FD)
    # The host put the runtime on PYTHONPATH for us only; sessions' subprocesses
    # should not inherit it.
    os.environ.pop("PYTHONPATH", None)
    # A configured environment's package layer comes after everything of the base
    # environment, so the base's versions win wherever both have a package.
    layer = os.environ.get("SANDCELL_LAYER")
    if layer:
        sys.path.append(layer)
    modules = [m for m in os.environ.get("SANDCELL_TEMPLATE_MODULES", "").split(",") if m]
    failed = {}
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a broken optional module must not stop the template
            failed[name] = "%s: %s" % (type(exc).__name__, exc)

    from sandcell_runtime import kernel

    kernel.prepare()
    enter = _load_enter_library()
    libc = ctypes.CDLL(None, use_errno=True)

    # Ctrl-C in the host's terminal must not reach the template, and exited keepers are
    # reaped by the kernel; both dispositions are reset in each fork.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)

    # Everything allocated so far is shared by every session: keep the collector from
    # touching (and so un-sharing) those pages.
    gc.collect()
    gc.freeze()

    control.send(_encode({
        "ready": True,
        "python": "%d.%d.%d" % sys.version_info[:3],
        "pid": os.getpid(),
        "failed_modules": failed,
    }))
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(control, 1 << 20, 2)
        except InterruptedError:
            continue
        if not data:
            return  # the host is gone
        request = json.loads(data)
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            control.send(_encode({"ok": False, "error": "a spawn request needs two file descriptors"}))
            continue
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            control.send(_encode({"ok": False, "error": "cannot fork a session: %s" % exc}))
            continue
        if pid == 0:
            control.close()
            _keeper(request, fds[0], fds[1], enter, libc)  # never returns
        for fd in fds:
            os.close(fd)
        control.send(_encode({"ok": True, "keeper_pid": pid}))


def _keeper(request, session_fd, status_fd, enter, libc):
    """C1: create the namespaces, fork the session into them, report how it ends."""
    status = os.fdopen(status_fd, "w", buffering=1)
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.setsid()
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        spec = request.get("spec")
        spec_json = json.dumps(spec).encode() if spec is not None else None
        if spec_json is not None:
            _call(enter, "sandcell_isolate", spec_json)
        # The session's init reports the session's own exit on the same pipe, first.
        report_fd = os.dup(status.fileno())
        child = os.fork()
        if child == 0:
            status.close()
            _session(request, session_fd, report_fd, spec_json, enter, libc)  # never returns
        os.close(report_fd)
        os.close(session_fd)
        _report(status, {"event": "started", "pid": child})
        while True:
            try:
                _pid, wait_status = os.waitpid(child, 0)
                break
            except InterruptedError:
                continue
        if os.WIFSIGNALED(wait_status):
            _report(status, {"event": "exited", "signal": os.WTERMSIG(wait_status)})
        else:
            _report(status, {"event": "exited", "code": os.waitstatus_to_exitcode(wait_status)})
        os._exit(0)
    except BaseException as exc:
        message = str(exc) if isinstance(exc, SandboxError) else traceback.format_exc(limit=3)
        _report(status, {"event": "failed", "message": message})
        os._exit(1)


def _session(request, session_fd, report_fd, spec_json, enter, libc):
    """C2: confine ourselves, fork the session off the init that stays behind (C2 remains
    PID 1 of the namespace), then serve the host. No user code runs before confine."""
    sock = socket.socket(fileno=session_fd)
    try:
        if spec_json is not None:
            _call(enter, "sandcell_confine", spec_json)
            # The identity change in confine cleared this; the keeper is our parent.
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            _fork_off_init(enter, report_fd)
        os.close(report_fd)
        os.chdir(request["cwd"])
        os.environ.update(request.get("env") or {})
        signal.signal(signal.SIGINT, signal.default_int_handler)
        from sandcell_runtime import kernel

        kernel.serve(sock)
    except BaseException as exc:
        message = str(exc) if isinstance(exc, SandboxError) else traceback.format_exc(limit=3)
        try:
            from sandcell_runtime.protocol import Channel

            Channel(sock).send({"type": "failed", "message": message})
        finally:
            os._exit(1)
    os._exit(0)


# The signals the init passes on (sandcell_sandbox::init::FORWARDED), and SIGCHLD.
_INIT_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD}


def _fork_off_init(enter, report_fd):
    """Returns in a child that runs the session; the parent becomes the namespace's init
    (sandcell_init: reaps orphans, forwards the host's signals, reports the session's exit
    on report_fd). The signals are blocked across the fork: PID 1 would lose any that
    arrived before the init took them over."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, _INIT_SIGNALS)
    child = os.fork()
    if child != 0:
        enter.sandcell_init(child, report_fd)  # never returns
    signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _load_enter_library():
    path = os.environ.get("SANDCELL_ENTER_LIB")
    if not path:
        return None
    lib = ctypes.PyDLL(path)  # PyDLL: hold the GIL; these calls change process-wide state
    for name in ("sandcell_isolate", "sandcell_confine"):
        fn = getattr(lib, name)
        fn.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t]
        fn.restype = ctypes.c_int
    lib.sandcell_init.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.sandcell_init.restype = None
    return lib


class SandboxError(RuntimeError):
    """The sandbox library refused; its message is a sentence for the user."""


def _call(enter, name, spec_json):
    if enter is None:
        raise SandboxError("the sandbox library is not loaded (SANDCELL_ENTER_LIB is unset)")
    fn = getattr(enter, name)
    err = ctypes.create_string_buffer(4096)
    if fn(spec_json, len(spec_json), err, len(err)) != 0:
        raise SandboxError(err.value.decode("utf-8", "replace"))


def _report(stream, event):
    stream.write(json.dumps(event) + "\n")


def _encode(message):
    return json.dumps(message).encode()


if __name__ == "__main__":
    main()
