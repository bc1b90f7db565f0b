"""The checkpoint loading policy (mmkd_ext/utils/checkpoint.py): hostile files are refused at
every entry point and write nothing, real MMEngine checkpoints still resume without full pickle,
damaged files get errors that say so."""
import io
import os
import os.path as osp
import pickle
import shutil
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from conftest import KD_CFG, ROOT, STUDENT_CFG, TEACHER_CFG, tiny_cfg
from mmengine.logging import HistoryBuffer
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmengine.runner.checkpoint import CheckpointLoader

import mmkd_ext  # noqa: F401  (installs the policy into MMEngine's loaders)
from mmkd_ext.apis import build_runner
from mmkd_ext.apis.export import export_student
from mmkd_ext.distillers import Distiller
from mmkd_ext.utils.checkpoint import (TRUST_ENV, allowed_globals, load_checkpoint_file,
                                       unwrap_state_dict)

HB_MODULE, HB_NAME = 'mmengine.logging.history_buffer', 'HistoryBuffer'


class Foreign:
    """A class outside the allow-list."""

    def __init__(self):
        self.value = 3


@pytest.fixture(autouse=True)
def no_trust(monkeypatch):
    monkeypatch.delenv(TRUST_ENV, raising=False)


# --- hand-written pickles (protocol 2, what torch.save writes) -------------------------------


def op_global(module, name):
    return b'c' + f'{module}\n{name}\n'.encode()


def op_str(text):
    data = text.encode()
    return b'X' + struct.pack('<I', len(data)) + data


def op_put(i):
    return b'q' + bytes([i])


def op_get(i):
    return b'h' + bytes([i])


def op_array(arr):
    # numpy's own pickle of the array, without PROTO and STOP (its memo indices stay below 100).
    return pickle.dumps(arr, protocol=2)[2:-1]


MARK, TUPLE, TUPLE2, REDUCE, BUILD = b'(', b't', b'\x86', b'R', b'b'
EMPTY_DICT, EMPTY_TUPLE, SETITEMS, NEWOBJ = b'}', b')', b'u', b'\x81'


def write_checkpoint(path, body):
    """A torch.save zip file whose pickle is ``PROTO 2, body, STOP``."""
    buf = io.BytesIO()
    torch.save({}, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, zipfile.ZipFile(path, 'w') as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith('/data.pkl'):
                data = b'\x80\x02' + body + b'.'
            dst.writestr(info.filename, data)
    return str(path)


def bound_tofile():
    """``getattr(<uint8 array>, 'tofile')``: a bound method that writes the array to a path."""
    payload = np.frombuffer(b'written by a checkpoint', dtype=np.uint8)
    return op_global('__builtin__', 'getattr') + MARK + op_array(payload) + op_str('tofile') + \
        TUPLE + REDUCE


def history_state(**extra):
    """A HistoryBuffer's pickled state dict with its three data fields plus ``extra`` (bytes)."""
    items = op_str('max_length') + b'J' + struct.pack('<i', 10) + \
        op_str('_log_history') + op_array(np.array([1.0, 2.0])) + \
        op_str('_count_history') + op_array(np.array([1, 1]))
    for key, value in extra.items():
        items += op_str(key) + value
    return EMPTY_DICT + MARK + items + SETITEMS


def hostile_getattr_tofile(target):
    """(a) getattr reaches ``ndarray.tofile``; planted as a HistoryBuffer's instance
    ``__setstate__``, the next BUILD on the buffer calls ``tofile(target)``. The loader before
    this policy loaded it and wrote the file."""
    return (op_global(HB_MODULE, HB_NAME) + EMPTY_TUPLE + NEWOBJ + op_put(200) + EMPTY_DICT + MARK +
            op_str('__setstate__') + bound_tofile() + SETITEMS + BUILD + op_str(str(target)) +
            BUILD)


def hostile_planted_setstate(target):
    """(b) a HistoryBuffer's state plants an instance ``__setstate__`` made only of what the
    allow-list admits (HistoryBuffer.mean), and a second BUILD calls it."""
    hb = op_global(HB_MODULE, HB_NAME) + op_put(201)
    mean = op_global('__builtin__', 'getattr') + op_get(201) + op_str('mean') + TUPLE2 + REDUCE
    return (hb + EMPTY_TUPLE + NEWOBJ + op_put(200) + history_state(__setstate__=mean) + BUILD +
            op_str(str(target)) + BUILD)


def hostile_statistics_table(target):
    """(b') a HistoryBuffer's ``statistics_methods`` rebinds 'mean' to another callable in the
    class-wide table that every buffer of the process uses."""
    hb = op_global(HB_MODULE, HB_NAME) + op_put(201)
    other = op_global('__builtin__', 'getattr') + op_get(201) + op_str('max') + TUPLE2 + REDUCE
    table = EMPTY_DICT + MARK + op_str('mean') + other + SETITEMS
    return hb + EMPTY_TUPLE + NEWOBJ + history_state(statistics_methods=table) + BUILD


def hostile_prefix_method(target):
    """(c) ``HistoryBuffer.__setstate__`` only prefix-matches the allowed class name; called on a
    buffer it plants ``tofile`` as above."""
    return (op_global(HB_MODULE, HB_NAME + '.__setstate__') + MARK + op_global(HB_MODULE, HB_NAME) +
            EMPTY_TUPLE + NEWOBJ + op_put(200) + EMPTY_DICT + MARK + op_str('__setstate__') +
            bound_tofile() + SETITEMS + TUPLE + REDUCE + op_get(200) + op_str(str(target)) + BUILD)


def hostile_prefix_class(target):
    """(c) a class name that extends an allowed one (``collections.OrderedDict`` + 'X')."""
    return op_global('collections', 'OrderedDictX') + EMPTY_TUPLE + REDUCE


def hostile_prefix_descriptor(target):
    """(c) ``numpy.ndarray.tofile`` (under the allowed ``numpy.ndarray``) called directly."""
    payload = np.frombuffer(b'written by a checkpoint', dtype=np.uint8)
    return (op_global('numpy', 'ndarray.tofile') + MARK + op_array(payload) + op_str(str(target)) +
            TUPLE + REDUCE)


HOSTILE = {
    'getattr_tofile': (hostile_getattr_tofile, r"getattr\(a numpy.ndarray object, 'tofile'\)"),
    'planted_setstate': (hostile_planted_setstate, r"unknown fields \['__setstate__'\]"),
    'statistics_table': (hostile_statistics_table, r"statistics_methods may only map"),
    'prefix_method': (hostile_prefix_method,
                      r"not known to be safe: \['mmengine.logging.history_buffer.HistoryBuffer"
                      r".__setstate__'\]"),
    'prefix_class': (hostile_prefix_class, r"not known to be safe: \['collections.OrderedDictX'\]"),
    'prefix_descriptor':
    (hostile_prefix_descriptor, r"not known to be safe: \['numpy.ndarray.tofile'\]"),
}


def make_hostile(tmp_path, kind):
    """The hostile file of ``kind`` and the path it would write to."""
    target = tmp_path / 'written_by_checkpoint'
    path = write_checkpoint(tmp_path / f'{kind}.pth', HOSTILE[kind][0](target))
    return path, target, HOSTILE[kind][1]


def assert_refused(load, path, target, reason):
    HistoryBuffer()  # its __init__ fills the class-wide table with the four defaults
    table = dict(HistoryBuffer._statistics_methods)
    with pytest.raises(pickle.UnpicklingError, match=reason) as info:
        load(path)
    assert osp.basename(path) in str(info.value) and TRUST_ENV in str(info.value)
    assert not target.exists(), 'loading the checkpoint wrote a file'
    assert HistoryBuffer._statistics_methods == table, 'the class-wide table was changed'
    # The independent reference: torch's own weights-only loader refuses the file too.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    assert not target.exists()


@pytest.mark.parametrize('kind', sorted(HOSTILE))
def test_hostile_checkpoint_is_refused_and_writes_nothing(tmp_path, kind):
    path, target, reason = make_hostile(tmp_path, kind)
    assert_refused(load_checkpoint_file, path, target, reason)
    assert_refused(CheckpointLoader.load_checkpoint, path, target, reason)


def build_distiller(**kw):
    init_default_scope('mmpretrain')
    return Distiller(
        student=STUDENT_CFG,
        teacher=TEACHER_CFG,
        input_shape=(1, 8, 8),
        methods=[dict(type='KDLoss')],
        **kw)


def resume_from(tmp_path, path):
    cfg = tiny_cfg(KD_CFG, tmp_path / 'resume', n_train=32, teacher_checkpoint=None)
    build_runner(cfg, resume=path).train()


def load_from_url(monkeypatch, tmp_path, path):
    """What MMEngine does with an https URL, the download replaced by a local copy."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.setattr(torch.hub, 'download_url_to_file',
                        lambda url, dst, *a, **k: shutil.copyfile(path, dst))
    return CheckpointLoader.load_checkpoint(
        'https://example.invalid/ckpts/' + osp.basename(path), map_location='cpu')


@pytest.mark.parametrize('kind', ['getattr_tofile', 'planted_setstate'])
@pytest.mark.parametrize('entry', ['resume', 'teacher_checkpoint', 'export', 'url'])
def test_every_entry_point_refuses_a_hostile_checkpoint(tmp_path, monkeypatch, kind, entry):
    path, target, reason = make_hostile(tmp_path, kind)
    load = dict(
        resume=lambda p: resume_from(tmp_path, p),
        teacher_checkpoint=lambda p: build_distiller(teacher_checkpoint=p),
        export=lambda p: export_student(p, str(tmp_path / 'student.pth')),
        url=lambda p: load_from_url(monkeypatch, tmp_path, p))[entry]
    assert_refused(load, path, target, reason)
    assert not (tmp_path / 'student.pth').exists()


def test_export_tool_refuses_a_hostile_checkpoint(tmp_path):
    path, target, reason = make_hostile(tmp_path, 'getattr_tofile')
    env = {k: v for k, v in os.environ.items() if k != TRUST_ENV}
    proc = subprocess.run(
        [sys.executable, 'tools/export_student.py', path,
         str(tmp_path / 'student.pth')],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "getattr(a numpy.ndarray object, 'tofile')" in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert not target.exists() and not (tmp_path / 'student.pth').exists()


def assert_same(got, want, where='checkpoint'):
    """Recursive equality of two loaded checkpoints (tensors, numpy values, HistoryBuffers)."""
    assert type(got) is type(want), f'{where}: {type(got)} vs {type(want)}'
    if isinstance(want, dict):
        assert list(got) == list(want), where
        for k in want:
            assert_same(got[k], want[k], f'{where}[{k!r}]')
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f'{where}[{i}]')
    elif torch.is_tensor(want):
        assert torch.equal(got, want), where
    elif isinstance(want, HistoryBuffer):
        assert set(vars(got)) == {'max_length', '_log_history', '_count_history'}, where
        assert got.max_length == want.max_length, where
        for g, w in zip(got.data, want.data):
            assert g.dtype == w.dtype and np.array_equal(g, w), where
    elif isinstance(want, (np.ndarray, np.generic)):
        assert got.dtype == want.dtype and np.array_equal(got, want), where
    else:
        assert got == want, where


def test_real_runner_checkpoint_resumes_without_full_pickle(tmp_path, teacher_ckpt):
    work = tmp_path / 'work'
    Runner.from_cfg(tiny_cfg(KD_CFG, work, teacher_checkpoint=teacher_ckpt)).train()
    first = str(work / 'epoch_1.pth')
    # The file holds more than tensors: torch's own safe loader refuses it.
    needed = set(torch.serialization.get_unsafe_globals_in_checkpoint(first))
    assert {f'{HB_MODULE}.{HB_NAME}', 'builtins.getattr'} <= needed
    with pytest.raises(pickle.UnpicklingError):
        torch.load(first, weights_only=True)
    # Ours gives what full pickle gives, with real HistoryBuffers whose statistics work.
    ours = load_checkpoint_file(first, map_location='cpu')
    full = torch.load(first, map_location='cpu', weights_only=False)
    assert_same(ours, full)
    loss = ours['message_hub']['log_scalars']['train/loss']
    assert type(loss) is HistoryBuffer
    assert loss.mean() == pytest.approx(loss._log_history.mean())
    assert loss.statistics('current') == loss._log_history[-1]

    runner = build_runner(
        tiny_cfg(KD_CFG, tmp_path / 'second', max_epochs=2, teacher_checkpoint=teacher_ckpt),
        resume=first)
    runner.train()
    assert runner.epoch == 2 and osp.isfile(tmp_path / 'second' / 'epoch_2.pth')
    # Epoch 1's loss history came back from the file and epoch 2 was appended to it.
    per_epoch = len(runner.train_dataloader)
    history = runner.message_hub.get_scalar('train/loss')._log_history
    assert len(history) == 2 * per_epoch
    np.testing.assert_array_equal(history[:per_epoch], loss._log_history)
    # The second checkpoint loads again the same way.
    assert_same(
        load_checkpoint_file(str(tmp_path / 'second' / 'epoch_2.pth')),
        torch.load(tmp_path / 'second' / 'epoch_2.pth', weights_only=False))


def test_loading_leaves_torch_allow_list_as_it_was(teacher_ckpt):
    before = set(torch.serialization.get_safe_globals())
    load_checkpoint_file(teacher_ckpt)
    assert set(torch.serialization.get_safe_globals()) == before
    with pytest.raises(pickle.UnpicklingError):
        torch.load(teacher_ckpt, weights_only=True)


def test_numpy_1_names_load(tmp_path):
    # numpy 1 wrote 'numpy.core.multiarray'; such files must load under numpy 2 as well.
    body = pickle.dumps({'eta': np.float64(2.5), 'h': np.array([1, 2])}, protocol=2)[2:-1]
    body = body.replace(b'numpy._core.multiarray', b'numpy.core.multiarray')
    assert b'numpy.core.multiarray' in body
    got = load_checkpoint_file(write_checkpoint(tmp_path / 'np1.pth', body))
    assert got['eta'] == 2.5 and got['eta'].dtype == np.float64
    np.testing.assert_array_equal(got['h'], [1, 2])


def test_allowed_names_are_exact_and_have_no_general_getattr(tmp_path):
    names = allowed_globals()
    assert all(names[n] is not getattr for n in names)
    # 'builtins.getattr' gives HistoryBuffer's four statistics methods and nothing else.
    for obj, attr in (('numpy', 'ndarray'), (HB_MODULE, HB_NAME)):
        for name in ('tofile', '__setstate__', 'update', '__class__'):
            body = op_global('__builtin__', 'getattr') + op_global(obj, attr) + op_str(name) + \
                TUPLE2 + REDUCE
            with pytest.raises(pickle.UnpicklingError, match='getattr'):
                load_checkpoint_file(write_checkpoint(tmp_path / 'g.pth', body))


def test_trust_env_is_the_explicit_opt_in(tmp_path, monkeypatch):
    path = tmp_path / 'foreign.pth'
    torch.save({'obj': Foreign()}, path)
    with pytest.raises(pickle.UnpicklingError, match=r"test_checkpoint.Foreign'\]"):
        load_checkpoint_file(str(path))
    monkeypatch.setenv(TRUST_ENV, '1')
    assert load_checkpoint_file(str(path))['obj'].value == 3


def test_torch_without_allow_list_api_loads_tensors_only(teacher_ckpt, tmp_path, monkeypatch):
    # torch < 2.5: no safe_globals; tensors load, a Runner checkpoint needs the explicit opt-in.
    monkeypatch.delattr(torch.serialization, 'safe_globals')
    torch.save({'state_dict': {'w': torch.ones(2)}}, tmp_path / 'plain.pth')
    assert torch.equal(
        load_checkpoint_file(str(tmp_path / 'plain.pth'))['state_dict']['w'], torch.ones(2))
    with pytest.raises(pickle.UnpicklingError, match='has no allow-list API'):
        load_checkpoint_file(teacher_ckpt)
    monkeypatch.setenv(TRUST_ENV, '1')
    assert 'message_hub' in load_checkpoint_file(teacher_ckpt)


# --- damaged files ---------------------------------------------------------------------------


def damaged_files(tmp_path, teacher_ckpt):
    data = open(teacher_ckpt, 'rb').read()
    legacy = io.BytesIO()
    torch.save({'state_dict': {
        'w': torch.ones(1000)
    }},
               legacy,
               _use_new_zipfile_serialization=False)
    files = {
        'empty.pth': (b'', r'is empty \(0 bytes\)'),
        'half.pth': (data[:len(data) // 2], rf'\({len(data) // 2} bytes\) is truncated or corrupt'),
        'legacy_half.pth':
        (legacy.getvalue()[:len(legacy.getvalue()) // 2], r'bytes\) is truncated or corrupt'),
        'page.pth':
        (b'<!DOCTYPE html><html>Not Found</html>', r'is not a file written by torch.save'),
    }
    for name, (content, _) in files.items():
        (tmp_path / name).write_bytes(content)
    return {str(tmp_path / name): match for name, (_, match) in files.items()}


def test_empty_and_truncated_checkpoints_say_so(tmp_path, teacher_ckpt):
    for path, match in damaged_files(tmp_path, teacher_ckpt).items():
        for load in (load_checkpoint_file, CheckpointLoader.load_checkpoint,
                     lambda p: build_distiller(teacher_checkpoint=p)):
            with pytest.raises(RuntimeError, match=match) as info:
                load(path)
            assert repr(path) in str(info.value) and 'Download it again' in str(info.value)


def test_truncated_checkpoint_on_resume_says_so(tmp_path, teacher_ckpt):
    data = open(teacher_ckpt, 'rb').read()
    (tmp_path / 'half.pth').write_bytes(data[:len(data) // 2])
    with pytest.raises(RuntimeError, match='is truncated or corrupt'):
        resume_from(tmp_path, str(tmp_path / 'half.pth'))


# --- URLs ------------------------------------------------------------------------------------


def test_url_checkpoints_go_to_the_hub_cache_and_through_the_policy(tmp_path, monkeypatch,
                                                                    teacher_ckpt):
    calls = []
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))

    def fake_download(url, dst, *args, **kwargs):
        calls.append(url)
        shutil.copyfile(teacher_ckpt, dst)

    monkeypatch.setattr(torch.hub, 'download_url_to_file', fake_download)
    url = 'https://example.invalid/ckpts/teacher-1234.pth'
    got = CheckpointLoader.load_checkpoint(url, map_location='cpu')
    assert_same(got, torch.load(teacher_ckpt, weights_only=False))
    cached = tmp_path / 'torch_home' / 'hub' / 'checkpoints' / 'teacher-1234.pth'
    assert cached.is_file() and torch.hub.get_dir() == str(tmp_path / 'torch_home' / 'hub')
    CheckpointLoader.load_checkpoint(url)
    assert calls == [url], 'the second load must come from the cache'
    # torchvision:// resolves to a URL inside MMEngine and takes the same road.
    got = CheckpointLoader.load_checkpoint('torchvision://resnet18', map_location='cpu')
    assert calls[-1].startswith('https://') and 'resnet18' in calls[-1]
    assert 'message_hub' in got


# --- state dicts -----------------------------------------------------------------------------


def test_unwrap_state_dict():
    w = torch.ones(1)
    ckpt = {
        'meta': {},
        'model_ema': {
            'a': w
        },
        'model': {
            'module._orig_mod.a': w,
            '_orig_mod.module.b': w,
            'step': 3
        }
    }
    assert unwrap_state_dict(ckpt) == {'a': w, 'b': w}
    assert unwrap_state_dict(ckpt, keys=('model_ema', 'model')) == {'a': w}
    assert unwrap_state_dict({'a': w, 'n': 1}) == {'a': w}
    with pytest.raises(TypeError, match='must hold a dict'):
        unwrap_state_dict([w])
