"""The session kernel: IPython's InteractiveShell, built once in the template by prepare()
and driven in each forked session by serve(), which answers the host's execute requests
with the frames described in ARCHITECTURE.md, and its completion requests between them."""

import contextlib
import io
import os
import random
import signal
import sys

import matplotlib.font_manager

from IPython.core.completer import provisionalcompleter, rectify_completions
from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.error import StdinNotImplementedError, UsageError
from IPython.core.interactiveshell import InteractiveShell
from traitlets import Type
from traitlets.config import Config

from . import netrelay, packages
from .outputs import Outbox

NO_INPUT_MESSAGE = "input() is not available: sandcell sessions have no keyboard; pass data in code or files."

# Cells run once in the template so that sessions inherit what they import and cache, instead
# of each paying for it in its first cells: the output path, tracebacks (stack_data, pygments),
# a DataFrame's HTML, an inline figure (Agg, fonts, PNG), top-level await.
# (module the cell needs, or None; cell). A cell runs only if the template preloaded its
# module, so the preload list alone decides what sessions start with.
_WARM_UP_CELLS = (
    (None, "1"),
    (None, "1 / 0"),
    ("pandas", "import pandas\npandas.DataFrame({'a': [1]})"),
    ("matplotlib.pyplot", "import matplotlib.pyplot as plt\nplt.plot([0, 1])\nplt.title('warm-up')\nplt.show()"),
    (None, "import asyncio"),  # not `await`: that would create an event loop, with open fds, to be inherited
)

_shell = None  # built by prepare() in the template, inherited by every session


def prepare():
    """Build the shell in the template, before any fork; leaves no threads and no open files."""
    global _shell
    config = Config()
    config.HistoryManager.enabled = False  # its SQLite writer thread must not exist when the template forks
    _shell = _SessionShell.instance(config=config, colors="nocolor", autoawait=True)
    _shell.enable_matplotlib("inline")
    # By name: matplotlib.figure is imported only when a cell (or the preload) imports pyplot.
    _shell.display_formatter.formatters["text/plain"].for_type_by_name("matplotlib.figure", "Figure", _figure_text)
    _warm_up(_shell)


def _figure_text(figure, printer, _cycle):
    """A figure's plain text is its title when it has one ("Figure: Monthly totals"), for
    whoever cannot see the image: the page's alt text, a model that reads no images.
    Without a title it is matplotlib's own repr."""
    title = figure.get_suptitle() or next((ax.get_title() for ax in figure.axes if ax.get_title()), "")
    printer.text(f"Figure: {title}" if title else repr(figure))


def serve(sock):
    """Serve the host on `sock` until it asks to shut down, closes the socket, or a cell calls exit()."""
    _reseed_random()
    netrelay.start()  # before any cell: the port is the relay's, not a cell's
    packages.enable(_shell)
    outbox = Outbox(sock)
    sys.stdin = _NoStdin()
    _shell.outbox = outbox
    _shell.history_manager.dir_hist[:] = [os.getcwd()]  # `_dh` and `%cd -` start here, not in the template's cwd
    session = _Session(_shell, outbox)
    signal.signal(signal.SIGINT, session.on_sigint)
    session.serve()


class _Session:
    """One session's request loop, and what an interrupt does to it."""

    def __init__(self, shell, outbox):
        self._shell = shell
        self._outbox = outbox
        self._interruptible = False  # a plain attribute: setting it cannot itself be interrupted

    def serve(self):
        self._outbox.send({"type": "ready"})
        while (request := self._outbox.recv()) is not None and request["type"] != "shutdown":
            if request["type"] == "complete":
                self._outbox.send(self._complete(request["code"], request["cursor_pos"]))
                continue
            if request["type"] != "execute":
                raise ValueError(f"unexpected request from the host: {request['type']!r}")
            self._outbox.start_execution(request)
            count = self._shell.execution_count
            succeeded = self._execute(request["code"])
            done = {"type": "done", "status": "ok" if succeeded else "error"}
            if self._shell.execution_count > count:  # IPython counts every cell but an empty one
                done["execution_count"] = count
            self._outbox.send(done)
            if self._shell.exit_now:
                return

    def _complete(self, code, cursor_pos):
        """Jupyter's complete_reply for `code` at `cursor_pos` (in code points), from IPython's
        completer, as ipykernel answers it: Jedi's completions and IPython's own (names,
        attributes of live objects, dict keys, paths, magics)."""
        reply = {"type": "complete_reply", "matches": [], "cursor_start": cursor_pos, "cursor_end": cursor_pos}
        try:
            with provisionalcompleter():
                completions = list(rectify_completions(code, self._shell.Completer.completions(code, cursor_pos)))
        except Exception:  # a completer that fails (a property that raises, odd code) offers nothing
            return reply
        if completions:
            reply.update(
                matches=[completion.text for completion in completions],
                cursor_start=completions[0].start,
                cursor_end=completions[0].end,
            )
        return reply

    def on_sigint(self, signum, frame):
        """The host's interrupt stops the running cell; while idle there is nothing to stop.
        (The traceback is cut where sandcell's frames begin, so this one is not shown.)"""
        if self._interruptible:
            raise KeyboardInterrupt

    def _execute(self, code):
        """Run one cell; True if it raised nothing."""
        self._outbox.cell_running.set()
        self._interruptible = True
        try:
            return self._shell.run_cell(code, store_history=True).success
        except KeyboardInterrupt:  # landed outside IPython's own handling, e.g. while figures were drawn
            self._shell.showtraceback()
            return False
        finally:
            self._interruptible = False
            self._outbox.cell_running.clear()


class _ResultHook(DisplayHook):
    """Sends the value of a cell's last expression as execute_result (as ipykernel's ZMQShellDisplayHook)."""

    def write_output_prompt(self):
        pass  # the frame stands in for IPython's "Out[N]:" prompt

    def write_format_data(self, format_dict, md_dict=None):
        self.shell.outbox.send_bundle("execute_result", format_dict, md_dict)

    def log_output(self, format_dict):
        pass  # IPython would keep a copy of every result in its history, for as long as the session lives


class _FramePublisher(DisplayPublisher):
    """Sends each display() as display_data (as ipykernel's ZMQDisplayPublisher). Display ids
    have no frame of their own: an update_display() arrives as one more display_data."""

    def publish(self, data, metadata=None, *_source, **_transient_and_update):
        self.shell.outbox.send_bundle("display_data", data, metadata)

    def clear_output(self, wait=False):
        pass  # no frame for it; IPython's default would write terminal escapes to stdout


class _SessionShell(InteractiveShell):
    """IPython's shell with its outputs sent as frames (as ipykernel's ZMQInteractiveShell)."""

    displayhook_class = Type(_ResultHook)
    display_pub_class = Type(_FramePublisher)
    # `!cmd` runs on the session's own fds 1 and 2 (captured like all other output) instead of
    # IPython's default pexpect pty: no pty needed in the sandbox, and plain "\n" line ends.
    system = InteractiveShell.system_raw
    outbox = None  # set by serve(); the template has no socket

    @contextlib.contextmanager
    def _tee(self, channel):
        """IPython would keep a copy of everything a cell writes to stdout and stderr in its
        history, for as long as the session lives: a cell printing gigabytes would run the
        session out of memory. The host keeps the output (bounded)."""
        yield

    def _get_exc_info(self, exc_tuple=None):
        etype, value, tb = super()._get_exc_info(exc_tuple)
        return etype, value, _cut_where_runtime_starts(tb)

    def _showtraceback(self, etype, evalue, stb):
        self.outbox.send({"type": "error", "ename": etype.__name__, "evalue": str(evalue), "traceback": stb})

    def show_usage_error(self, exc):
        """A mistyped magic is an error frame like any other, not only text on stderr."""
        self._showtraceback(type(exc), exc, [f"UsageError: {exc}"])

    def ask_exit(self):
        """Called by exit() and quit(): serve() returns after the cell, as Jupyter ends the kernel."""
        self.exit_now = True

    def enable_gui(self, gui=None):
        """Called by `%matplotlib`: inline figures need no event loop, and a session has no screen."""
        if gui not in (None, "inline"):
            raise UsageError(f"no GUI event loop in a sandcell session: use `%matplotlib inline`, not {gui!r}")


class _NoStdin(io.TextIOBase):
    """sys.stdin: nobody can type in a session, so reading fails at once instead of hanging."""

    def readable(self):
        return True

    def read(self, size=-1):
        raise StdinNotImplementedError(NO_INPUT_MESSAGE)

    readline = read


def _warm_up(shell):
    """Run _WARM_UP_CELLS, then forget them but for what they imported and cached."""
    shell.outbox = _Discard()
    for needs, cell in _WARM_UP_CELLS:
        if needs is None or needs in sys.modules:
            shell.run_cell(cell, store_history=False)
    shell.outbox = None
    shell.reset()  # a fresh namespace, history and In[1]
    # Matplotlib keeps the font files it rendered with open; a file offset shared by every
    # forked session would garble their reads.
    matplotlib.font_manager._get_font.cache_clear()


class _Discard:
    """The template's stand-in for an Outbox while warming up: nobody is listening yet."""

    def send(self, frame):
        pass

    def send_bundle(self, frame_type, data, metadata):
        pass


def _cut_where_runtime_starts(tb):
    """End the traceback where user code calls into sandcell (display(), input(), an interrupt
    landing while output is sent): the user sees their frames and their libraries', not ours."""
    entry = tb
    while entry is not None and entry.tb_next is not None:
        if _is_runtime_frame(entry.tb_next.tb_frame) and not _is_runtime_frame(entry.tb_frame):
            entry.tb_next = None
        else:
            entry = entry.tb_next
    return tb


def _is_runtime_frame(frame):
    return frame.f_globals.get("__name__", "").startswith(__package__ + ".")


def _reseed_random():
    """A fork shares the template's random state: give every session its own."""
    random.seed()
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()  # the legacy global RandomState behind np.random.rand() and friends
