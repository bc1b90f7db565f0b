"""From a distillation work_dir to a downstream run: pick its checkpoint, export the student,
and build the command that fine-tunes it with a downstream config (tools/finetune_student.py)."""
import glob
import os
import os.path as osp
import re
import sys
from typing import List, Optional, Sequence

from mmkd_ext.utils.config import load_config

#: where the downstream configs of configs/downstream/ take the exported student
DEFAULT_CHECKPOINT_KEY = 'model.backbone.init_cfg.checkpoint'


def find_checkpoint(work_dir: str) -> str:
    """The checkpoint of a distillation run to export from its ``work_dir``.

    In order: the best checkpoint (``best_*.pth``, written by ``CheckpointHook(save_best=...)``; the
    newest when there are several), the file named in ``last_checkpoint`` (MMEngine writes it
    after every save), then the ``epoch_N.pth`` / ``iter_N.pth`` with the largest N.

    Args:
        work_dir (str): the ``--work-dir`` of the distillation run.

    Returns:
        str: path of the checkpoint.
    """
    if not osp.isdir(work_dir):
        raise FileNotFoundError(f'Distillation work_dir {work_dir!r} does not exist (give the '
                                f'--work-dir of the tools/train.py run).')
    best = sorted(glob.glob(osp.join(work_dir, 'best_*.pth')), key=osp.getmtime)
    if best:
        return best[-1]
    last = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(last):
        with open(last) as f:
            path = f.read().strip()
        # MMEngine records the path it saved to; the work_dir may have moved since.
        for candidate in (path, osp.join(work_dir, osp.basename(path))):
            if candidate and osp.isfile(candidate):
                return candidate
    numbered = []
    for path in glob.glob(osp.join(work_dir, '*.pth')):
        found = re.fullmatch(r'(epoch|iter)_(\d+)\.pth', osp.basename(path))
        if found:
            numbered.append((int(found.group(2)), path))
    if numbered:
        return max(numbered)[1]
    raise FileNotFoundError(
        f'No checkpoint in {work_dir!r}: expected best_*.pth, a last_checkpoint file, or '
        f'epoch_N.pth / iter_N.pth. Give the file with --checkpoint.')


def check_checkpoint_key(config: str, key: str) -> None:
    """Raise when ``config`` has no entry ``key`` (dotted, e.g. the default
    ``model.backbone.init_cfg.checkpoint``) to receive the exported student."""
    node = load_config(config).to_dict()
    for part in key.split('.'):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(
                f'{config} has no {key!r} to take the exported student. Its backbone needs '
                f"init_cfg=dict(type='Pretrained', checkpoint=..., prefix='backbone.') (as the "
                f'configs in configs/downstream/), or name the entry that takes it with '
                f'--checkpoint-key (e.g. load_from).')
        node = node[part]


def train_command(config: str,
                  student: str,
                  gpus: int = 1,
                  checkpoint_key: str = DEFAULT_CHECKPOINT_KEY,
                  cfg_options: Sequence[str] = (),
                  train_args: Sequence[str] = (),
                  tools_dir: Optional[str] = None) -> List[str]:
    """The command that fine-tunes ``student`` with ``config``.

    Args:
        config (str): the downstream config.
        student (str): the exported student checkpoint.
        gpus (int): 1 runs ``tools/train.py`` with this Python; more run ``tools/dist_train.sh``
            with that many processes. Defaults to 1.
        checkpoint_key (str): config entry set to ``student``. Defaults to
            ``model.backbone.init_cfg.checkpoint``.
        cfg_options (Sequence[str]): further ``key=value`` overrides. Defaults to ().
        train_args (Sequence[str]): further tools/train.py arguments (``--work-dir``,
            ``--amp``, ...). Defaults to ().
        tools_dir (str, optional): folder of train.py and dist_train.sh. Defaults to the
            ``tools/`` beside the package (a checkout; installed copies are in ``.mim/tools``).

    Returns:
        list[str]: the argv to run.
    """
    if gpus < 1:
        raise ValueError(f'--gpus must be at least 1, got {gpus}.')
    if tools_dir is None:
        package = osp.dirname(osp.dirname(osp.abspath(__file__)))
        tools_dir = osp.join(package, '.mim', 'tools')
        if not osp.isdir(tools_dir):
            tools_dir = osp.join(osp.dirname(package), 'tools')
    options = ['--cfg-options', f'{checkpoint_key}={student}', *cfg_options]
    if gpus == 1:
        return [sys.executable, osp.join(tools_dir, 'train.py'), config, *options, *train_args]
    return ['bash', osp.join(tools_dir, 'dist_train.sh'), config, str(gpus), *options, *train_args]


def student_path(checkpoint: str, out: Optional[str] = None) -> str:
    """Where the student of ``checkpoint`` is exported: ``out``, or ``student_<name>.pth`` beside
    the checkpoint."""
    if out:
        os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
        return out
    return osp.join(osp.dirname(checkpoint), 'student_' + osp.basename(checkpoint))
