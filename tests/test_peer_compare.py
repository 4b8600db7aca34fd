"""experiments/peers/compare_camvid.py on hand-written run folders."""

import json
import pathlib
import subprocess
import sys

SCRIPT = (pathlib.Path(__file__).parents[1] / 'experiments' / 'peers' /
          'compare_camvid.py')


def _write_segjax_run(workdir, start, evals):
  workdir.mkdir()
  (workdir / 'run_info.json').write_text(json.dumps(
      {'started': '2026-11-26T07:00:00+00:00'}))
  (workdir / 'config.json').write_text(json.dumps({'batch_size': 8}))
  rows = [{'step': 10, 'split': 'train', 'time': start + 5, 'loss': 1.0}]
  rows += [{'step': s, 'split': 'validation', 'time': start + m * 60,
            'miou': v} for m, s, v in evals]
  (workdir / 'metrics.jsonl').write_text(
      ''.join(json.dumps(r) + '\n' for r in rows))


def test_comparison_picks_the_last_point_within_time_and_epochs(tmp_path):
  start = 1795676400.0  # 2026-11-26T07:00:00Z
  # segjax: evaluations at 20, 40, 58 minutes (steps 1000, 2000, 2830).
  _write_segjax_run(tmp_path / 'sj', start,
                    [(20, 1000, 0.40), (40, 2000, 0.55), (58, 2830, 0.61)])
  peer = tmp_path / 'pt'
  peer.mkdir()
  # PyTorch: 2400 steps by 60 minutes (52.3 epochs; it stops at the first
  # step past 60), then 61 minutes.
  points = [(30.0, 1200, 1200 * 8 / 367, 0.45),
            (60.01, 2400, 2400 * 8 / 367, 0.58),
            (61.0, 2440, 2440 * 8 / 367, 0.585)]
  (peer / 'metrics.jsonl').write_text(''.join(
      json.dumps({'minutes': m, 'steps': s, 'epochs': e, 'val_miou': v}) +
      '\n' for m, s, e, v in points))
  out = subprocess.run(
      [sys.executable, str(SCRIPT), '--segjax', str(tmp_path / 'sj'),
       '--peer', str(peer)], capture_output=True, text=True, check=True
  ).stdout
  lines = {line.split('|')[1].strip(): line for line in out.splitlines()
           if line.startswith('| at ')}
  at_time = lines['at 60 min']
  # segjax's last evaluation by 60 min is the 58-min one; PyTorch's the 60.
  assert '0.610 (58.0 min, 61.7 epochs)' in at_time
  assert '0.580 (60.0 min, 52.3 epochs)' in at_time
  # Equal epochs: the smaller final count is PyTorch's 53.2 (2440 steps);
  # segjax's last point within it is step 2000 (43.6 epochs).
  at_epochs = lines['at 53.2 epochs']
  assert '0.550 (40.0 min, 43.6 epochs)' in at_epochs
  assert '0.585 (61.0 min, 53.2 epochs)' in at_epochs
  rows = [line.split('|')[1].strip() for line in out.splitlines()
          if line.startswith('|')]
  assert rows.count('segjax') == 3 and rows.count('PyTorch') == 3
