"""`%pip` in a session. With a package index (the host sets SANDCELL_PACKAGES and pip's
own variables: PIP_TARGET, PIP_INDEX_URL, PIP_PROXY), packages go into the session's own
layer in its working directory, at the end of sys.path, and are importable at once;
without one, `%pip` says how to configure one. The shared environment is never written.
`install` is the same install for sandcell's `install_packages`."""

import importlib
import os
import shlex
import subprocess
import sys

NO_INDEX = (
    "No package index is configured: start sandcell with --pip-index URL "
    "(an index in PyPI's simple format) to let %pip install packages."
)

# The session's package layer, once `enable` found an index.
_layer = None


class InstallFailed(Exception):
    """pip could not install what `install` was asked for (its output says why)."""


def enable(shell):
    """Set up `%pip` for this session (called once, after the fork)."""
    global _layer
    target = os.environ.get("SANDCELL_PACKAGES")
    if not target:
        # `!pip install` then fails at once instead of retrying an index it cannot reach.
        os.environ["PIP_NO_INDEX"] = "1"
        shell.register_magic_function(_no_index, "line", "pip")
        return
    _layer = target
    sys.path.append(target)

    def pip(line):
        _pip(shlex.split(line))

    shell.register_magic_function(pip, "line", "pip")
    # `!pip install` too: the import system looks at the layer again after every cell.
    shell.events.register("post_run_cell", lambda result: importlib.invalidate_caches())


def install(requirements):
    """`pip install` of `requirements` (names with extras and version specifiers, checked
    by the host) into the layer, as `%pip install` does; raises when pip fails, so that
    the execution's status says so."""
    if _layer is None:
        raise InstallFailed(NO_INDEX)
    status = _pip(["install", *requirements])
    if status != 0:
        raise InstallFailed(f"pip install exited with status {status}; its output above says why.")


def _pip(args):
    """Runs pip with `args` into the layer; returns its exit status."""
    os.makedirs(_layer, exist_ok=True)
    try:
        # A process of its own on the session's stdout and stderr (not shell.system,
        # which swallows an interrupt): sandcell's interrupt, or its stop at the disk
        # quota, ends the cell.
        return subprocess.run([sys.executable, "-m", "pip", *args], check=False).returncode
    finally:
        importlib.invalidate_caches()


def _no_index(line):
    print(NO_INDEX)
