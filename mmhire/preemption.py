"""No lost work: a checkpoint of the current iteration on SIGTERM or the
first SIGINT, checkpoints written atomically, an epoch-based run resumed
mid-epoch that skips what the epoch had consumed, and the random state
saved and restored after the skip, so that a resumed run continues exactly
as the interrupted one would have.

``tools/train.py`` sets all of this up (``enable(cfg)``); nothing here
changes a run that is never interrupted.
"""
import os
import os.path as osp
import random
import signal
import tempfile

import numpy as np
import torch
from mmengine.dist import all_gather_object, all_reduce, get_rank
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS, LOOPS
from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop

from mmhire.errors import MMHireError

# Exit status of a preempted run: EX_TEMPFAIL, "try again later".
PREEMPTED_EXIT = 75
ATOMIC_BACKEND = 'mmhire_atomic'


class Preempted(MMHireError):
    """The run stopped on a signal after saving its current iteration."""


class AtomicLocalBackend(LocalBackend):
    """Local files written to a temporary file in the same directory and
    renamed into place: a kill or a full disk during the write never leaves
    a truncated file under the target's name, and the old file stays until
    the new one is complete. The file's mode follows the umask, as
    ``torch.save``'s would."""

    def put(self, obj, filepath):
        directory = osp.dirname(osp.abspath(filepath))
        os.makedirs(directory, exist_ok=True)
        fd, partial = tempfile.mkstemp(
            dir=directory, prefix=f'.{osp.basename(filepath)}.',
            suffix='.partial')
        try:
            # mkstemp makes the file 0600; a checkpoint gets the mode that
            # torch.save would give it (the process's umask applied).
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)
            with os.fdopen(fd, 'wb') as f:
                f.write(obj)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, filepath)
        except BaseException:
            if osp.exists(partial):
                os.remove(partial)
            raise


register_backend(ATOMIC_BACKEND, AtomicLocalBackend, force=True)


def random_state():
    """This process's random generators, as plain tensors and tuples (so
    that ``weights_only`` loading reads them)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = dict(torch=torch.get_rng_state(), python=random.getstate(),
                 numpy=(kind, torch.from_numpy(keys.astype(np.int64)), pos,
                        has_gauss, gauss))
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_random_state(state):
    torch.set_rng_state(state['torch'])
    version, internal, gauss_next = state['python']
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, gauss = state['numpy']
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos,
                         has_gauss, gauss))
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


@HOOKS.register_module()
class PreemptionHook(Hook):
    """SIGTERM or the first SIGINT: finish the iteration in flight, save a
    checkpoint of it (every rank agrees on which) with every rank's random
    state, say where, stop with ``Preempted``. A second SIGINT stops at
    once. Resuming from such a checkpoint restores the random state right
    before the first iteration."""

    priority = 'LOWEST'  # after the other hooks have seen the iteration

    def __init__(self):
        self.received = None
        self.previous = {}
        self.random_states = None  # to save with the checkpoint
        self.resume_at = None  # (iteration, random state) to restore

    def before_train(self, runner):
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.previous[signum] = signal.signal(signum, self._on_signal)

    def after_train(self, runner):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _on_signal(self, signum, frame):
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
        print(f'mmhire: {signal.Signals(signum).name} received; finishing '
              'this iteration and saving a checkpoint (another Ctrl-C stops '
              'at once)', flush=True)

    def before_save_checkpoint(self, runner, checkpoint):
        if self.random_states is not None:
            checkpoint['rng_states'] = self.random_states

    def after_load_checkpoint(self, runner, checkpoint):
        states = checkpoint.get('rng_states')
        if states and len(states) > get_rank():
            self.resume_at = checkpoint['meta']['iter'], states[get_rank()]

    def restore_random_state(self, runner):
        """When resuming (not when loading weights to start anew): the
        random state saved with the checkpoint. The resuming loops call
        this after skipping the consumed batches, which draw on the
        same generators, and before reading the next; otherwise it happens
        before the first iteration."""
        if self.resume_at is not None:
            iteration, state = self.resume_at
            if runner.iter == iteration:
                set_random_state(state)
            self.resume_at = None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.restore_random_state(runner)

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None):
        flag = torch.tensor([float(self.received is not None)])
        all_reduce(flag, op='max')  # every rank stops at the same iteration
        if not flag.item():
            return
        iteration = runner.iter + 1
        filename = f'iter_{iteration}_preempted.pth'
        self.random_states = all_gather_object(random_state())
        runner.save_checkpoint(runner.work_dir, filename, by_epoch=False,
                               backend_args=dict(backend=ATOMIC_BACKEND))
        path = osp.join(runner.work_dir, filename)
        if get_rank() == 0:
            AtomicLocalBackend().put(path.encode(),
                                     osp.join(runner.work_dir,
                                              'last_checkpoint'))
        message = (f'preempted: saved iteration {iteration} to {path}; '
                   'run the same command with --resume to continue')
        print_log(message, logger='current')
        raise Preempted(message)


def _restore_random_state(runner):
    for hook in runner.hooks:
        if isinstance(hook, PreemptionHook):
            hook.restore_random_state(runner)


class _ThenCall:
    """An iterator that calls ``callback`` right after its first ``count``
    items have been taken."""

    def __init__(self, iterator, count, callback):
        self.iterator, self.count, self.callback = iterator, count, callback

    def __iter__(self):
        return self

    def __next__(self):
        item = next(self.iterator)
        self.count -= 1
        if self.count == 0:
            self.callback()
        return item


@LOOPS.register_module()
class ResumableIterBasedTrainLoop(IterBasedTrainLoop):
    """mmengine's iteration-based loop (which skips, on resuming, the
    batches the run had consumed), restoring the saved random state right
    after that skip, before the next batch is read."""

    def run(self):
        if self._iter > 0:
            self.dataloader_iterator = _ThenCall(
                self.dataloader_iterator, self._iter,
                lambda: _restore_random_state(self.runner))
        return super().run()


@LOOPS.register_module()
class ResumableEpochBasedTrainLoop(EpochBasedTrainLoop):
    """mmengine's epoch-based loop, except that a run resumed from a
    checkpoint saved inside an epoch skips the batches that the epoch had
    consumed (the same sampler seed and epoch give the same order), instead
    of training the epoch again from its start. The skipped batches are
    read and dropped, as mmengine's iteration-based loop does."""

    def run(self):
        sampler = getattr(self.dataloader, 'sampler', None)
        if getattr(sampler, 'seed', None) not in (None, self.runner.seed):
            # A config without a seed draws a new one for the sampler of
            # the resumed run; the order must be the interrupted run's.
            sampler.seed = self.runner.seed
        return super().run()

    def run_epoch(self):
        done = self._iter - self._epoch * len(self.dataloader)
        if done <= 0:
            return super().run_epoch()
        print_log(f'mmhire: resuming inside epoch {self._epoch + 1}: '
                  f'skipping the {done} batches it had consumed',
                  logger='current')
        if done > len(self.dataloader):
            raise MMHireError(
                f'the checkpoint was saved after {done} batches of epoch '
                f'{self._epoch + 1}, which has {len(self.dataloader)} here: '
                'resume with the batch size and number of processes of the '
                'interrupted run.')
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        batches = iter(self.dataloader)
        for _ in range(done):
            next(batches)
        _restore_random_state(self.runner)  # before the next batch is read
        for idx, data_batch in enumerate(batches, start=done):
            self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1


def enable(cfg):
    """Set a training config up for all of the above: atomic checkpoints,
    the resuming loops, the preemption hook."""
    checkpoint = cfg.get('default_hooks', {}).get('checkpoint')
    if checkpoint is not None and not checkpoint.get('backend_args'):
        checkpoint['backend_args'] = dict(backend=ATOMIC_BACKEND)
    loop = cfg.get('train_cfg', {}).get('type')
    if loop in ('EpochBasedTrainLoop', 'IterBasedTrainLoop'):
        cfg.train_cfg.type = f'Resumable{loop}'
    cfg.custom_hooks = [*cfg.get('custom_hooks', []),
                        dict(type='PreemptionHook')]
