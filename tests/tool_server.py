"""Runs the tools/ scripts for the tests without paying for their imports
each time: this process imports torch, mmengine, mmdet, mmseg and mmhire
once, then forks a child per run, which starts the script as ``python
SCRIPT ARGS`` would (``__main__``, argv, the script's folder first on the
path, its own working directory, environment, stdin, stdout and stderr)
and ends as the interpreter does: exit status, ``sys.exit('message')`` on
stderr, a trace for an uncaught exception, atexit handlers. About 8 s of
imports per tool run on two cores, a tenth of the suite.

One request per line on stdin (JSON: script, args, cwd, env, stdout,
stderr file paths); the answers on stdout: the child's pid, then its exit
status (negative: the signal that ended it)."""
import atexit
import importlib
import io
import json
import os
import runpy
import sys
import threading
import traceback

import torch  # noqa: F401

import mmhire.checks  # noqa: F401
import mmhire.engine  # noqa: F401

# What the default scopes of mmdet and mmseg import (their registries'
# contents); nothing is registered or scoped here.
for _library in ('mmdet', 'mmseg'):
    for _part in ('datasets', 'engine', 'evaluation', 'models',
                  'visualization'):
        importlib.import_module(f'{_library}.{_part}')


def _exit_status(code):
    """What the interpreter does with ``sys.exit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _child(request):
    os.chdir(request['cwd'])
    os.environ.clear()
    os.environ.update(request['env'])
    for fd, path, mode in ((0, os.devnull, os.O_RDONLY),
                           (1, request['stdout'], os.O_WRONLY | os.O_CREAT),
                           (2, request['stderr'], os.O_WRONLY | os.O_CREAT)):
        target = os.open(path, mode, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, 'r', closefd=False))
    sys.stdout = io.TextIOWrapper(io.FileIO(1, 'w', closefd=False))
    sys.stderr = io.TextIOWrapper(io.FileIO(2, 'w', closefd=False),
                                  line_buffering=True,
                                  errors='backslashreplace')
    script = request['script']
    sys.argv = [script, *request['args']]
    sys.path[0] = os.path.dirname(script)
    try:
        runpy.run_path(script, run_name='__main__')
        status = 0
    except SystemExit as e:
        status = _exit_status(e.code)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        status = 1
    try:  # the interpreter's shutdown: threads, atexit, buffers
        threading._shutdown()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        traceback.print_exc()
        status = status or 1
    os._exit(status)


def main():
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        print(pid, flush=True)
        _, wait_status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(wait_status), flush=True)


if __name__ == '__main__':
    main()
