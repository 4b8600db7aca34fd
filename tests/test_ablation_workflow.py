"""The ablation workflow end to end on real (tiny) runs: a 2 x 2 sweep of
experiments/ablations/shapes_loss.py, loaded with segjax.results, compared
by the notebook."""

import pathlib

import pytest

from segjax import results
from segjax import sweeps

# Its module-scoped fixtures build once, on one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group('ablation_workflow')

REPO = pathlib.Path(__file__).resolve().parents[1]
ABLATION = str(REPO / 'experiments' / 'ablations' / 'shapes_loss.py') + ':tiny'
NOTEBOOK = REPO / 'experiments' / 'notebooks' / 'compare_ablations.ipynb'


@pytest.fixture(scope='module')
def sweep_root(tfds_dir, tmp_path_factory):
  root = tmp_path_factory.mktemp('shapes_loss')
  overrides = [f'--config.data.data_dir={tfds_dir}',
               '--config.num_train_steps=4', '--config.eval_every_steps=4',
               '--config.checkpoint_every_steps=4', '--config.log_every_steps=2',
               '--config.num_images_to_save=0']
  summary = sweeps.run(ABLATION, root, overrides)
  assert [after for _, _, after in summary] == ['done'] * 4
  return root


def test_sweep_loads_into_one_row_per_run_split_and_eval(sweep_root):
  df = results.load_runs(sweep_root)
  # 4 runs x (validation during training, test at the end), at step 4.
  assert len(df) == 8 and set(df['split']) == {'validation', 'test'}
  assert set(df['step']) == {4}
  test = results.final(df, 'test')
  assert sorted(test['point.loss.dice']) == [0.0, 0.0, 1.0, 1.0]
  assert sorted(test['point.seed']) == [0, 0, 1, 1]
  for column in ('run', 'step', 'miou', 'iou/circle', 'config.model.features',
                 'num_params', 'flops_per_train_step', 'wall_s'):
    assert column in df.columns, column
  summary = results.summarize(df, by=['point.loss.dice'], metric='miou',
                              split='test')
  assert list(summary['count']) == [2, 2]
  assert '± ' in results.table(summary, 'miou')


def test_notebook_compares_the_sweep(sweep_root, monkeypatch):
  nbformat = pytest.importorskip('nbformat')
  nbclient = pytest.importorskip('nbclient')
  pytest.importorskip('ipykernel')
  nb = nbformat.read(NOTEBOOK, as_version=4)
  monkeypatch.setenv('SEGJAX_SWEEP_ROOT', str(sweep_root))
  client = nbclient.NotebookClient(
      nb, timeout=180, kernel_name='python3',
      resources={'metadata': {'path': str(NOTEBOOK.parent)}})
  client.execute()
  outputs = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs]
  assert not [o for o in outputs if o.output_type == 'error']
  text = ''.join(o.get('text', '') for o in outputs
                 if o.output_type == 'stream')
  assert 'loss.dice' in text and ' ± ' in text
  assert len([o for o in outputs if 'image/png' in o.get('data', {})]) >= 2
