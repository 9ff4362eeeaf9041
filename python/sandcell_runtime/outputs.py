"""Getting everything a session produces to the host, in order.

fds 1 and 2 become pipes that a daemon thread forwards as `stream` frames, and
`sys.stdout`/`sys.stderr` become line-buffered writers on those same fds, so text from
print(), C extensions and child processes shares one path and keeps its order. A write
from Python forwards both pipes before and after it, so text on one stream and text a
child process wrote on the other also keep their order. Every other frame is sent only
after the output written before it has been forwarded.

Each execution's output is held to the limits the host sends with it, the way the host
keeps it (the host enforces them whatever this side does; this spares it the traffic,
so a cell printing gigabytes returns quickly): the first half of the text limit is sent
as it comes, the last half when the execution ends, after an `output_dropped` frame
counting what lay between; a result that does not fit, or one past the count, is sent as
a small `result_dropped` frame instead of its data."""

import base64
import codecs
import collections
import contextlib
import ctypes
import io
import os
import select
import signal
import sys
import threading
import time

from .protocol import Channel

_PARTIAL_LINE_DELAY = 0.05  # seconds an unfinished line (a prompt, a progress bar) may wait
_WRITE_BUFFER_SIZE = 4096  # bytes of one unfinished line that are sent without waiting
_READ_SIZE = 64 * 1024  # at most this much output per stream frame
_SIGINT = {signal.SIGINT}
_fflush = ctypes.CDLL(None).fflush  # libc's: fflush(NULL) flushes every C stdio stream


class Outbox:
    """The session's end of the socket. Creating it takes over fds 1 and 2 and replaces
    sys.stdout and sys.stderr."""

    def __init__(self, sock):
        self._channel = Channel(sock)
        self._budget = _StreamBudget(self._channel)
        self._pipes = _CapturedFds(self._budget)
        self._writers = tuple(_line_buffered_writer(_OrderedWriter(fd, self._pipes)) for fd in (1, 2))
        sys.stdout, sys.stderr = self._writers
        self.cell_running = threading.Event()
        _start_daemon_thread(self._pipes.forward_forever)
        _start_daemon_thread(self._flush_partial_lines)

    def start_execution(self, request):
        """Output from here on counts against this execute request's limits."""
        with _sigint_held():
            self._pipes.drain()
            self._budget.start(request.get("output_limit"))
            self._results_left = request.get("results_limit")
            self._results_count_left = request.get("max_results")

    def recv(self):
        """The next request from the host, or None once it has closed the socket."""
        return self._channel.recv()

    def send(self, frame):
        """Send a frame after all output written before it."""
        with _sigint_held():
            self._flush_writers()
            _fflush(None)
            self._pipes.drain()
            if frame["type"] == "done":
                self._budget.flush()
            self._channel.send(frame)

    _results_left = None  # bytes of results still sent whole in this execution; None: no limit
    _results_count_left = None

    def send_bundle(self, frame_type, data, metadata):
        """Send a display_data or execute_result frame for a MIME bundle from IPython."""
        data = _jsonable_bundle(data)
        size = sum(len(value) for value in data.values() if isinstance(value, str))
        if self._results_count_left is not None:
            if self._results_count_left <= 0 or size > self._results_left:
                self.send({"type": "result_dropped", "bytes": size, "mimes": list(data)})
                return
            self._results_count_left -= 1
            self._results_left -= size
        self.send({"type": frame_type, "data": data, "metadata": metadata or {}})

    def _flush_writers(self):
        for writer in self._writers:
            if not writer.closed:  # user code may close sys.stdout; that must not stop the session
                writer.flush()

    def _flush_partial_lines(self):
        """Helper thread: while a cell runs, an unfinished line goes out at most ~50 ms late."""
        while True:
            self.cell_running.wait()
            time.sleep(_PARTIAL_LINE_DELAY)
            self._flush_writers()


class _CapturedFds:
    """fds 1 and 2 replaced by pipes whose read ends are forwarded as stream frames."""

    def __init__(self, budget):
        self._budget = budget
        self._lock = threading.Lock()  # one reader at a time, so text is sent in the order it was read
        self._streams = {}  # read end -> (stream name, incremental UTF-8 decoder)
        for fd, name in ((1, "stdout"), (2, "stderr")):
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            os.set_blocking(read_end, False)
            self._streams[read_end] = (name, codecs.getincrementaldecoder("utf-8")(errors="replace"))

    def forward_forever(self):
        """Helper thread: forward output as soon as it is written, even between cells."""
        poller = select.poll()
        for read_end in self._streams:
            poller.register(read_end, select.POLLIN)
        while True:
            for read_end, _ in poller.poll():
                with self._lock:
                    if self._forward(read_end) == b"":  # every write end is closed: nothing more will come
                        poller.unregister(read_end)

    def drain(self):
        """Forward everything written to the pipes so far."""
        with self._lock:
            for read_end in self._streams:
                while self._forward(read_end):
                    pass

    def _forward(self, read_end):
        """Forward one read; returns what was read: b"" at end of file, None if the pipe is empty."""
        try:
            data = os.read(read_end, _READ_SIZE)
        except BlockingIOError:
            return None
        name, decoder = self._streams[read_end]
        text = decoder.decode(data)
        if text:  # empty when the read ended inside a UTF-8 sequence
            self._budget.send(name, text)
        return data


class _StreamBudget:
    """Stream text of one execution within its limit: the head sent as it comes, the most
    recent text held back as the tail, and a count per stream of what lay between."""

    def __init__(self, channel):
        self._channel = channel
        self._lock = threading.Lock()
        self._head_left = None  # None: no limit (no execute request yet)
        self._tail = collections.deque()  # [name, text, its UTF-8 size]
        self._tail_bytes = 0
        self._tail_capacity = 0
        self._dropped = {}

    def start(self, limit):
        """Send what the previous execution (or the time since) held back; start counting anew."""
        with self._lock:
            self._flush_locked()
            if limit is None:
                self._head_left = None
            else:
                self._head_left = limit - limit // 2
                self._tail_capacity = limit // 2

    def flush(self):
        with self._lock:
            self._flush_locked()

    def send(self, name, text):
        with self._lock:
            if self._head_left is None:
                self._send(name, text)
                return
            data = text.encode("utf-8", "surrogatepass")
            if self._head_left > 0:
                head = data[: self._head_left].decode("utf-8", "ignore")  # cut on a character boundary
                self._head_left = 0 if len(data) > self._head_left else self._head_left - len(data)
                if head:
                    self._send(name, head)
                text = text[len(head):]
                data = data[len(head.encode("utf-8", "surrogatepass")):]
            if not data:
                return
            self._tail.append([name, text, len(data)])
            self._tail_bytes += len(data)
            while self._tail_bytes > self._tail_capacity:
                front = self._tail[0]
                excess = self._tail_bytes - self._tail_capacity
                if excess >= front[2]:
                    self._tail.popleft()
                    cut = front[2]
                else:
                    kept = front[1].encode("utf-8", "surrogatepass")[excess:].decode("utf-8", "ignore")
                    cut = front[2] - len(kept.encode("utf-8", "surrogatepass"))
                    front[1], front[2] = kept, front[2] - cut
                self._tail_bytes -= cut
                self._dropped[front[0]] = self._dropped.get(front[0], 0) + cut

    def _flush_locked(self):
        for name, count in self._dropped.items():
            self._channel.send({"type": "output_dropped", "name": name, "bytes": count})
        for name, text, _ in self._tail:
            self._send(name, text)
        self._tail.clear()
        self._tail_bytes = 0
        self._dropped = {}

    def _send(self, name, text):
        self._channel.send({"type": "stream", "name": name, "text": text})


class _OrderedWriter(io.FileIO):
    """Writes to a captured fd, forwarding what both pipes hold before and after."""

    def __init__(self, fd, pipes):
        super().__init__(fd, "w", closefd=False)
        self._pipes = pipes

    def write(self, data):
        with _sigint_held():
            self._pipes.drain()
            written = super().write(data)
            self._pipes.drain()
        return written


@contextlib.contextmanager
def _sigint_held():
    """SIGINT is held back meanwhile: a KeyboardInterrupt in the middle of a frame would
    corrupt the stream. An interrupt that arrived meanwhile is raised on the way out.
    The mask is restored, not cleared: a nested use (a frame sent while output is
    flushed) must not let the interrupt in before the outer one ends, and a helper
    thread (which always blocks SIGINT) must keep it blocked, or the kernel could
    deliver the interrupt there while the main thread holds it back, and Python would
    raise it in the main thread mid-frame."""
    previous = None
    try:
        # Inside the try: SIGINT must not stay blocked whatever happens. (Only the main
        # thread raises from a signal handler, and there `previous is None` unblocks.)
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGINT)
        yield
    finally:
        if previous is None or signal.SIGINT not in previous:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGINT)


def _line_buffered_writer(raw):
    """A text stream over raw that passes text on at each newline, at ~4 KiB and on flush()."""
    buffered = io.BufferedWriter(raw, _WRITE_BUFFER_SIZE)
    writer = io.TextIOWrapper(buffered, encoding="utf-8", errors="backslashreplace", line_buffering=True)
    writer._CHUNK_SIZE = _WRITE_BUFFER_SIZE  # text it holds before handing it to the buffer (8 KiB by default)
    return writer


def _jsonable_bundle(data):
    """Jupyter's convention: binary values (image/png, image/jpeg) travel as base64 text."""
    return {
        mime: base64.b64encode(value).decode("ascii") if isinstance(value, bytes) else value
        for mime, value in data.items()
    }


def _start_daemon_thread(target):
    """Start a helper thread with SIGINT blocked, so that the host's interrupt is always
    delivered to the main thread, where it stops the cell (or is ignored while idle)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGINT)
    try:
        threading.Thread(target=target, daemon=True).start()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGINT)
