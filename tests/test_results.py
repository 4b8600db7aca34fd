"""segjax.results on hand-written workdirs, and the compare_ablations notebook.

The workdirs are written here, file by file, as the trainer and segjax.sweep
write them, so every expected number is one this file wrote.
"""

import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from segjax import results

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / 'experiments' / 'notebooks' / 'compare_ablations.ipynb'
CLASSES = ('a', 'b', 'c')
STRIDES, LRS, SEEDS = (8, 16), (0.001, 0.003), (0, 1)


def _miou(os_, lr, seed, step):
  # Distinct, known values; run (16, 0.003, 1) peaks at step 10, so best()
  # and final() disagree on it.
  value = 0.5 + os_ / 100 + lr * 10 + seed * 0.013 + step / 1000
  if (os_, lr, seed) == (16, 0.003, 1) and step == 10:
    value += 0.1
  return value


def _write_run(workdir, os_=8, lr=0.001, seed=0, t0=1000.0, lines=None):
  workdir.mkdir(parents=True)
  (workdir / 'config.json').write_text(json.dumps({
      'model': {'name': 'unet', 'output_stride': os_, 'features': [16, 32]},
      'optimizer': {'learning_rate': lr}, 'seed': seed,
      'mesh': [['data', -1]]}))
  (workdir / 'run_info.json').write_text(json.dumps({
      'git_sha': 'abc', 'num_params': 1000 * os_,
      'flops_per_train_step': 1e9 * 32 / os_, 'class_names': list(CLASSES)}))
  if lines is None:
    rows = []
    for step in (10, 20):
      rows.append({'step': step, 'split': 'train', 'time': t0 + step,
                   'loss': 1.0 / step, 'learning_rate': lr})
      m = _miou(os_, lr, seed, step)
      rows.append({'step': step, 'split': 'validation', 'time': t0 + step + 1,
                   'miou': m, 'num_examples': 10,
                   **{f'iou/{c}': m + i / 100 for i, c in enumerate(CLASSES)}})
    m = _miou(os_, lr, seed, 20) - 0.002
    rows.append({'step': 20, 'split': 'test', 'time': t0 + 25, 'miou': m,
                 'num_examples': 10, 'iou/a': m, 'iou/b': m + 0.01,
                 'iou/c': None})
    lines = [json.dumps(r) for r in rows]
  (workdir / 'metrics.jsonl').write_text('\n'.join(lines) + '\n')


def _name(os_, lr, seed):
  return f'os{os_}_lr{lr}_seed{seed}'


@pytest.fixture
def sweep_root(tmp_path):
  """A sweep root: 2 output strides x 2 learning rates x 2 seeds."""
  root = tmp_path / 'sweep'
  points = []
  for i, (os_, lr, seed) in enumerate(
      (o, l, s) for o in STRIDES for l in LRS for s in SEEDS):
    name = _name(os_, lr, seed)
    _write_run(root / name, os_, lr, seed, t0=1000.0 * i)
    if seed == 0:
      (root / name / 'sweep_done.json').write_text('{}')
    points.append({'name': name, 'workdir': name, 'point': {
        'model.output_stride': os_, 'optimizer.learning_rate': lr,
        'seed': seed}})
  (root / 'sweep.json').write_text(json.dumps({'points': points}))
  return root


def test_load_runs_rows_columns_and_values(sweep_root):
  df = results.load_runs(sweep_root)
  assert len(df) == 8 * 3  # validation at 10 and 20, test at 20; no train
  assert set(df['split']) == {'validation', 'test'}
  assert 'loss' not in df
  assert list(df.columns[:6]) == ['run', 'workdir', 'split', 'step', 'time',
                                  'wall_s']
  for column in ('miou', 'iou/a', 'iou/c', 'num_examples', 'num_params',
                 'flops_per_train_step', 'config.model.output_stride',
                 'config.optimizer.learning_rate', 'point.seed',
                 'point.model.output_stride'):
    assert column in df, column
  assert set(df['run']) == {_name(o, l, s) for o in STRIDES for l in LRS
                            for s in SEEDS}
  for _, row in df.iterrows():
    os_, lr, seed = (row['point.model.output_stride'],
                     row['point.optimizer.learning_rate'], row['point.seed'])
    assert row['run'] == _name(os_, lr, seed)
    assert row['config.model.output_stride'] == os_
    assert row['config.model.features'] == (16, 32)  # a tuple: hashable
    assert row['config.mesh'] == (('data', -1),)
    assert row['num_params'] == 1000 * os_
    expected = _miou(os_, lr, seed, row['step'])
    if row['split'] == 'test':
      expected -= 0.002
      assert math.isnan(row['iou/c'])  # written as null
      # Seconds since the first metrics row (the train row at step 10).
      assert row['wall_s'] == pytest.approx(15.0)
    else:
      assert row['iou/c'] == pytest.approx(expected + 0.02)
      assert row['wall_s'] == pytest.approx(row['step'] - 10 + 1)
    assert row['miou'] == pytest.approx(expected)
  assert df[['run', 'split', 'step']].duplicated().sum() == 0


def test_paths_globs_lists_and_skipped_folders(sweep_root, tmp_path):
  by_root = results.load_runs(str(sweep_root))
  # A glob over the root finds the same points under their sweep names
  # (sweep.json, a file, is not a run).
  by_glob = results.load_runs(str(sweep_root / '*'))
  assert sorted(set(by_glob['run'])) == sorted(set(by_root['run']))
  assert 'point.seed' in by_glob
  _write_run(tmp_path / 'lone_run')
  (tmp_path / 'empty').mkdir()
  with pytest.warns(UserWarning, match='empty'):
    df = results.load_runs([tmp_path / 'lone_run', str(tmp_path / 'empty'),
                            sweep_root, str(sweep_root / _name(8, 0.001, 0))])
  assert set(df['run']) == set(by_root['run']) | {'lone_run'}
  assert len(df) == 9 * 3  # the point named twice is loaded once
  assert df.loc[df['run'] == 'lone_run', 'point.seed'].isna().all()
  train = results.load_runs(tmp_path / 'lone_run', splits='train')
  assert list(train['split']) == ['train', 'train']
  assert list(train['loss']) == pytest.approx([0.1, 0.05])
  assert list(train['wall_s']) == pytest.approx([0.0, 10.0])


def test_malformed_lines_resumes_and_old_runs(tmp_path):
  good = json.dumps({'step': 1, 'split': 'validation', 'miou': 0.5})
  _write_run(tmp_path / 'bad', lines=[good, good, '{"step": 2, "spl', good])
  with pytest.raises(ValueError, match=r'bad.metrics\.jsonl:3: malformed'):
    results.load_runs(tmp_path / 'bad')
  _write_run(tmp_path / 'notarow', lines=[good, '[1, 2]'])
  with pytest.raises(ValueError, match=r'metrics\.jsonl:2: not a metrics row'):
    results.load_runs(tmp_path / 'notarow')
  # Restarted: step 1 evaluated twice, the later row stands; no 'time' in
  # old runs: wall_s NaN. A last line without newline is being written.
  resumed = tmp_path / 'resumed'
  _write_run(resumed, lines=[good, good.replace('0.5', '0.7')])
  with (resumed / 'metrics.jsonl').open('a') as f:
    f.write('{"step": 3, "split": "valid')
  with pytest.warns(UserWarning, match='unfinished last line'):
    df = results.load_runs(resumed)
  assert list(df['miou']) == [0.7] and df['wall_s'].isna().all()


def test_final_best(sweep_root):
  df = results.load_runs(sweep_root)
  last = results.final(df, 'test')
  assert len(last) == 8 and set(last['step']) == {20}
  top = results.best(df, 'miou', 'validation').set_index('run')
  assert len(top) == 8
  assert top.loc[_name(16, 0.003, 1), 'step'] == 10
  assert top.loc[_name(8, 0.001, 0), 'step'] == 20
  low = results.best(df, 'miou', 'validation', mode='min').set_index('run')
  assert low.loc[_name(8, 0.001, 0), 'step'] == 10
  with pytest.raises(ValueError, match='no .train. rows'):
    results.final(df, 'train')


def test_summarize_and_table(sweep_root):
  df = results.load_runs(sweep_root)
  by = ['point.model.output_stride', 'point.optimizer.learning_rate']
  summary = results.summarize(results.final(df, 'test'), by, 'miou')
  assert list(summary.columns) == by + ['mean', 'std', 'count', 'sem']
  assert [tuple(k) for k in summary[by].to_numpy()] == [
      (o, l) for o in STRIDES for l in LRS]  # sorted
  text = results.table(summary, 'miou')
  assert text.splitlines()[0] == (
      '| model.output_stride | optimizer.learning_rate | miou |')
  for _, row in summary.iterrows():
    o, l = int(row[by[0]]), row[by[1]]  # iterrows makes the row float
    values = [_miou(o, l, s, 20) - 0.002 for s in SEEDS]
    assert row['mean'] == pytest.approx(np.mean(values))
    assert row['std'] == pytest.approx(np.std(values, ddof=1))
    assert row['sem'] == pytest.approx(np.std(values, ddof=1) / np.sqrt(2))
    assert row['count'] == 2
    assert (f'| {o} | {l:g} | {np.mean(values):.3f} ± '
            f'{np.std(values, ddof=1):.3f} (2) |') in text
  # split= takes the last row of that split per run.
  per_stride = results.summarize(df, 'point.model.output_stride',
                                 split='test')
  assert list(per_stride['count']) == [4, 4]
  values = [_miou(8, l, s, 20) - 0.002 for l in LRS for s in SEEDS]
  assert per_stride['std'][0] == pytest.approx(np.std(values, ddof=1))
  with pytest.raises(ValueError, match='several rows per run'):
    results.summarize(df, 'point.seed')
  one = results.summarize(results.final(df[df['run'] == _name(8, 0.001, 0)]),
                          'point.seed')
  assert one['count'][0] == 1 and math.isnan(one['std'][0])
  assert '(1)' in results.table(one, digits=2)


def test_plots(sweep_root):
  df = results.load_runs(sweep_root)
  fig = results.plot_curves(df, 'miou', 'validation',
                            by='point.model.output_stride')
  ax, = fig.axes
  assert len(ax.lines) == 8  # one per run
  assert len(ax.get_legend().get_texts()) == 2  # one entry per group
  assert {tuple(line.get_xdata()) for line in ax.lines} == {(10, 20)}
  by = ['point.model.output_stride', 'point.optimizer.learning_rate']
  ax, = results.plot_cost(df, 'miou', by=by).axes
  assert len(ax.containers) == 4  # one mean ± std point per group
  assert ax.get_xlabel() == 'flops_per_train_step'
  # iou/c is null in every test row: left out.
  ax, = results.plot_per_class(df, 'test', by='point.seed').axes
  assert len(ax.patches) == 2 * 2  # groups x classes
  assert [t.get_text() for t in ax.get_xticklabels()] == ['a', 'b']
  ax, = results.plot_per_class(df, 'validation').axes
  assert len(ax.patches) == 8 * 3  # per run
  assert [t.get_text() for t in ax.get_xticklabels()] == list(CLASSES)


def test_import_needs_neither_tensorflow_nor_jax():
  subprocess.run(
      [sys.executable, '-c', 'import sys, segjax.results; '
       "assert 'tensorflow' not in sys.modules and 'jax' not in sys.modules"],
      check=True, cwd=REPO, timeout=120)


def test_notebook_runs_on_a_sweep(sweep_root, monkeypatch):
  nbformat = pytest.importorskip('nbformat')
  nbclient = pytest.importorskip('nbclient')
  pytest.importorskip('ipykernel')
  nb = nbformat.read(NOTEBOOK, as_version=4)
  assert all(not c.get('outputs') for c in nb.cells if c.cell_type == 'code')
  monkeypatch.setenv('SEGJAX_SWEEP_ROOT', str(sweep_root))
  client = nbclient.NotebookClient(
      nb, timeout=120, kernel_name='python3',
      resources={'metadata': {'path': str(NOTEBOOK.parent)}})
  client.execute()
  outputs = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs]
  assert not [o for o in outputs if o.output_type == 'error']
  text = ''.join(o.get('text', '') for o in outputs if o.output_type == 'stream')
  assert '8 runs from' in text
  assert '| model.output_stride | optimizer.learning_rate | miou (test' in text
  assert ' ± ' in text and '(2) |' in text
  pngs = [o for o in outputs if 'image/png' in o.get('data', {})]
  assert len(pngs) >= 2
  assert os.path.exists(sweep_root / 'sweep.json')
