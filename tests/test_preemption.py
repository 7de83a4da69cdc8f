"""No lost work: SIGTERM saves the current iteration and exits 75, --resume
continues exactly where the run stopped (one process mid-epoch, two gloo
processes mid-schedule), checkpoints are written atomically, and an
unreadable checkpoint is one clear line from every entry point."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, refused, run_tool

from mmhire.checkpoint import CheckpointError, check_readable
from mmhire.preemption import PREEMPTED_EXIT, AtomicLocalBackend

DET = str(ROOT / 'configs/detection/demo/mask_rcnn_hire_tiny_synthetic.py')
SEG = str(ROOT / 'configs/segmentation/demo/fpn_hire_tiny_synthetic.py')
# 24 images in batches of 2: one epoch of 12 iterations; no validation.
DET_OPTIONS = ['--cfg-options', 'train_cfg.max_epochs=1',
               'train_dataloader.batch_size=2', 'train_cfg.val_begin=100',
               'default_hooks.logger.interval=1']
SEG_OPTIONS = ['--cfg-options', 'train_cfg.max_iters=10',
               'train_cfg.val_interval=100', 'train_dataloader.batch_size=2',
               'default_hooks.checkpoint.interval=100',
               'default_hooks.logger.interval=1']
SAVED = r'preempted: saved iteration (\d+) to (\S+);'


def preempt(args, cwd, after, env=None, timeout=300):
    """Run a tool until a line matches ``after``, then SIGTERM its whole
    process group (as Slurm and Ctrl-C reach every process); returns the
    output and the exit status."""
    script = str(ROOT / args[0])
    command = ['bash', script] if script.endswith('.sh') \
        else [sys.executable, script]
    process = subprocess.Popen(
        command + list(args[1:]), cwd=cwd, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, 'PYTHON': sys.executable, **(env or {})})
    lines = []
    for line in process.stdout:
        lines.append(line)
        if re.search(after, line):
            os.killpg(process.pid, signal.SIGTERM)
            break
    rest, _ = process.communicate(timeout=timeout)
    return ''.join(lines) + rest, process.returncode


def iterations(output, pattern):
    return [int(i) for i in re.findall(pattern, output)]


def load(path):
    return torch.load(path, weights_only=True, map_location='cpu')


def assert_same_run(whole, resumed):
    """The same final iteration, learning rate and weights (bit for bit:
    the resumed run restores the random state the preempted one had)."""
    assert whole['meta']['iter'] == resumed['meta']['iter']
    assert whole['optimizer']['param_groups'][0]['lr'] == \
        resumed['optimizer']['param_groups'][0]['lr']
    assert whole['state_dict'].keys() == resumed['state_dict'].keys()
    for key, value in whole['state_dict'].items():
        assert torch.equal(value, resumed['state_dict'][key]), key


@pytest.fixture(scope='module')
def preempted_detection(small_coco):
    """An uninterrupted one-epoch run, and the same run stopped by SIGTERM
    after its fourth iteration and resumed."""
    train = ['tools/train.py', DET, *DET_OPTIONS]
    whole = run_tool([*train[:2], '--work-dir', 'work_dirs/whole',
                      *train[2:]], cwd=small_coco)
    cut = [*train[:2], '--work-dir', 'work_dirs/cut', *train[2:]]
    stopped, status = preempt(cut, small_coco,
                              r'Epoch\(train\) \[1\]\[\s*4/12\]')
    last = (small_coco / 'work_dirs/cut/last_checkpoint').read_text()
    resumed = run_tool([*cut, '--resume'], cwd=small_coco)
    return dict(cwd=small_coco, cut=cut, whole=whole.stdout, last=last,
                stopped=stopped, status=status, resumed=resumed.stdout)


def test_sigterm_mid_epoch_saves_and_resume_continues_exactly(
        preempted_detection):
    run = preempted_detection
    assert run['status'] == PREEMPTED_EXIT, run['stopped'][-3000:]
    assert 'SIGTERM received; finishing this iteration' in run['stopped']
    assert 'Traceback' not in run['stopped']
    saved, path = re.search(SAVED, run['stopped']).groups()
    saved = int(saved)
    checkpoint = load(path)
    assert 4 <= saved < 12 and checkpoint['meta']['iter'] == saved
    assert run['last'] == path  # what --resume without a path takes
    assert len(checkpoint['rng_states']) == 1  # one per process

    pattern = r'Epoch\(train\) \[1\]\[\s*(\d+)/12\]'
    assert f'skipping the {saved} batches it had consumed' in run['resumed']
    # No iteration twice, none left out: 12 iterations of 2 images, as the
    # uninterrupted run.
    assert iterations(run['stopped'], pattern) == list(range(1, saved + 1))
    assert iterations(run['resumed'], pattern) == list(range(saved + 1, 13))
    assert iterations(run['whole'], pattern) == list(range(1, 13))
    assert_same_run(load(run['cwd'] / 'work_dirs/whole/epoch_1.pth'),
                    load(run['cwd'] / 'work_dirs/cut/epoch_1.pth'))


def test_a_truncated_checkpoint_is_one_line_and_resume_falls_back(
        preempted_detection, tmp_path):
    run = preempted_detection
    work_dir = tmp_path / 'work_dir'
    shutil.copytree(run['cwd'] / 'work_dirs/cut', work_dir)
    newest = work_dir / 'epoch_1.pth'
    (work_dir / 'last_checkpoint').write_text(str(newest))
    data = newest.read_bytes()
    newest.write_bytes(data[:len(data) // 2])
    preempted = next(work_dir.glob('iter_*_preempted.pth'))
    os.utime(preempted)  # copytree set times; the preempted one is older
    os.utime(newest, (preempted.stat().st_mtime + 1, ) * 2)

    resumed = run_tool(['tools/train.py', DET, '--work-dir', str(work_dir),
                        *DET_OPTIONS[:-1], '--resume'], cwd=run['cwd'])
    output = resumed.stdout + resumed.stderr
    assert f'not resuming from {newest}: it is truncated' in output
    assert f'resumed epoch: 0, iter: {preempted.name.split("_")[1]}' in output
    assert 'Traceback' not in output

    newest.write_bytes(data[:len(data) // 2])  # the resumed run rewrote it
    for tool in (['tools/test.py', DET, str(newest)],
                 ['tools/train.py', DET, '--resume', str(newest)]):
        _, last = refused(tool, run['cwd'])
        assert last == (
            f"error: cannot read checkpoint '{newest}': it is truncated, or "
            'not a file written by torch.save (no archive directory at its '
            'end). Use another checkpoint (an earlier one of the run, or the '
            'file again from where it came).')


def test_two_process_sigterm_mid_schedule_resumes_exactly(small_ade):
    train = ['tools/dist_train.sh', SEG, '2']
    whole = run_tool([*train, '--work-dir', 'work_dirs/whole', *SEG_OPTIONS],
                     cwd=small_ade, env=dict(PORT='29621'))
    cut = [*train, '--work-dir', 'work_dirs/cut', *SEG_OPTIONS]
    stopped, status = preempt(cut, small_ade, r'Iter\(train\) \[\s*3/10\]',
                              env=dict(PORT='29622'))
    assert status == PREEMPTED_EXIT, stopped[-3000:]
    # Both processes stop at the same iteration, and rank 0 saves it.
    assert stopped.count('SIGTERM received') >= 2
    (saved, path), = set(re.findall(SAVED, stopped))
    saved = int(saved)
    assert 3 <= saved < 10 and load(path)['meta']['iter'] == saved
    assert len(load(path)['rng_states']) == 2
    resumed = run_tool([*cut, '--resume'], cwd=small_ade,
                       env=dict(PORT='29623'))
    pattern = r'Iter\(train\) \[\s*(\d+)/10\]'
    assert iterations(resumed.stdout, pattern) == list(range(saved + 1, 11))
    assert iterations(whole.stdout, pattern) == list(range(1, 11))
    assert_same_run(load(small_ade / 'work_dirs/whole/iter_10.pth'),
                    load(small_ade / 'work_dirs/cut/iter_10.pth'))


def test_a_failed_write_leaves_the_old_checkpoint_and_no_partial_file(
        tmp_path, monkeypatch):
    from mmengine.runner import save_checkpoint
    target = tmp_path / 'epoch_1.pth'
    save_checkpoint({'state_dict': {'w': torch.ones(3)}}, str(target),
                    backend_args=dict(backend='mmhire_atomic'))
    before = target.read_bytes()

    real_fdopen = os.fdopen

    class DiskFull:
        """A file that takes half of what it is given, then fails."""

        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[:len(data) // 2])
            raise OSError(28, 'No space left on device')

    monkeypatch.setattr('mmhire.preemption.os.fdopen',
                        lambda *a, **k: DiskFull(real_fdopen(*a, **k)))
    with pytest.raises(OSError, match='No space left'):
        save_checkpoint({'state_dict': {'w': torch.zeros(1000)}},
                        str(target), backend_args=dict(backend='mmhire_atomic'))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ['epoch_1.pth']
    monkeypatch.undo()
    AtomicLocalBackend().put(b'x', tmp_path / 'sub' / 'new.pth')  # makes dirs
    assert (tmp_path / 'sub' / 'new.pth').read_bytes() == b'x'


@pytest.mark.parametrize('content,why', [
    (b'', 'it is empty (0 bytes)'),
    (b'hello, not a checkpoint\n',
     'it is truncated, or not a file written by torch.save'),
])
def test_unreadable_files_are_named_everywhere(tmp_path, content, why):
    path = tmp_path / 'bad.pth'
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=re.escape(
            f"cannot read checkpoint '{path}': {why}")):
        check_readable(path)
    from mmhire.models import ConvMLP
    backbone = ConvMLP('small', init_cfg=dict(type='Pretrained',
                                              checkpoint=str(path)))
    with pytest.raises(CheckpointError, match=re.escape(why)):
        backbone.init_weights()
    converted, _ = refused(['tools/convert_checkpoint.py', str(path),
                            str(tmp_path / 'out.pth')], tmp_path)
    assert why in converted.stderr


def start_until_locked(work_dir, cwd, options=SEG_OPTIONS):
    """A training into ``work_dir`` started in its own session, once it
    holds the work dir's lock."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / 'tools/train.py'), SEG, '--work-dir',
         work_dir, *options], cwd=cwd, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lock = cwd / work_dir / '.mmhire.lock'
    for _ in range(1200):
        if lock.is_file() and f'pid {process.pid} ' in lock.read_text():
            return process
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.1)
    raise AssertionError('the run never took its lock')


def test_a_second_training_into_a_busy_work_dir_stops_at_once(small_ade):
    first = start_until_locked('work_dirs/busy', small_ade)
    os.killpg(first.pid, signal.SIGSTOP)  # busy for as long as we like
    try:
        started = time.monotonic()
        _, last = refused(['tools/train.py', SEG, '--work-dir',
                           'work_dirs/busy', *SEG_OPTIONS,
                           'optim_wrapper.optimizer.lr=0.5'], small_ade)
        took = time.monotonic() - started
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    output, _ = first.communicate(timeout=300)
    assert last.startswith(
        f'error: work dir {small_ade / "work_dirs/busy"} is in use by '
        f'another training (pid {first.pid} on ')
    assert took < 30, took
    assert first.returncode == 0, output[-3000:]
    work_dir = small_ade / 'work_dirs/busy'
    assert (work_dir / 'iter_10.pth').is_file()
    assert not (work_dir / '.mmhire.lock').exists()
    assert len([p for p in work_dir.iterdir() if p.is_dir()]) == 1  # one log
    assert 'lr=0.5' not in (work_dir / 'fpn_hire_tiny_synthetic.py'
                            ).read_text()


def test_the_lock_of_a_killed_training_is_taken_over(small_ade):
    first = start_until_locked('work_dirs/killed', small_ade)
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate(timeout=60)
    options = [*SEG_OPTIONS[:-1], 'train_cfg.max_iters=1',
               'default_hooks.checkpoint.interval=1']
    second = run_tool(['tools/train.py', SEG, '--work-dir',
                       'work_dirs/killed', *options], cwd=small_ade)
    assert 'took over the work dir lock of a run that ended without ' \
        f'releasing it (pid {first.pid} on ' in second.stdout + second.stderr
    assert (small_ade / 'work_dirs/killed/iter_1.pth').is_file()
    assert not (small_ade / 'work_dirs/killed/.mmhire.lock').exists()
