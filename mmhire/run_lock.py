"""One training per work dir at a time.

Two trainings into one work dir interleave their logs and checkpoints and
leave a config that no checkpoint came from. ``claim_work_dir`` takes an
``flock`` on ``WORK_DIR/.mmhire.lock`` for the life of the process (rank 0
only): the kernel releases it however the process ends, SIGKILL included,
so a lock left by a dead run is simply taken over. The file names the run
that holds it, for the message a second run stops with.
"""
import atexit
import fcntl
import logging
import os
import os.path as osp
import socket
import sys
import time

from mmengine.logging import print_log

from mmhire.errors import MMHireError

LOCK_NAME = '.mmhire.lock'
_held = {}  # work dir -> (descriptor, lock path), in this process


def _is_rank_zero():
    return os.environ.get('RANK', os.environ.get('SLURM_PROCID', '0')) == '0'


def _lock(path):
    """A descriptor of ``path`` locked by this process, or ``(None, what
    the holder wrote)``: it retries when the file it locked was removed
    meanwhile by a run that ended."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 1024).decode(errors='replace').strip()
            os.close(fd)
            return None, holder
        try:
            if osp.samestat(os.fstat(fd), os.stat(path)):
                return fd, os.read(fd, 1024).decode(errors='replace').strip()
        except FileNotFoundError:
            pass
        os.close(fd)


def claim_work_dir(work_dir):
    """Hold ``work_dir`` for this run until the process exits; a run that
    holds it already stops this one with a line naming it."""
    work_dir = osp.abspath(work_dir)
    if not _is_rank_zero() or work_dir in _held:
        return
    os.makedirs(work_dir, exist_ok=True)
    path = osp.join(work_dir, LOCK_NAME)
    fd, holder = _lock(path)
    if fd is None:
        raise MMHireError(
            f'work dir {work_dir} is in use by another training '
            f'({holder or "its lock file is being written"}); wait for it to '
            'end, or give this run another --work-dir.')
    if holder:
        print_log(f'mmhire: took over the work dir lock of a run that ended '
                  f'without releasing it ({holder})', logger='current',
                  level=logging.WARNING)
    os.ftruncate(fd, 0)
    os.pwrite(fd, (f'pid {os.getpid()} on {socket.gethostname()}, since '
                   f'{time.strftime("%Y-%m-%d %H:%M:%S")}: '
                   f'{" ".join(sys.argv)}').encode(), 0)
    _held[work_dir] = fd, path
    atexit.register(release_work_dir, work_dir)


def release_work_dir(work_dir):
    """Remove the lock file, then let the lock go (a run waiting on the old
    file sees it removed and locks a new one)."""
    fd, path = _held.pop(osp.abspath(work_dir), (None, None))
    if fd is None:
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    os.close(fd)
