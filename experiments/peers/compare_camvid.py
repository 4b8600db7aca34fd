r"""segjax's CamVid CPU run beside the PyTorch reference: the README's rows.

Reads a segjax workdir (run_info.json + metrics.jsonl of
`python -m segjax.main --config experiments/camvid_unet.py:cpu ...`) and the
metrics.jsonl of `experiments/peers/smp_camvid_train.py --out DIR`, and
prints, as Markdown, every validation point of both (minutes, steps, epochs,
mIoU) and the two comparisons of issue 15: at equal wall-clock time (each
run's last evaluation within `--minutes`) and at equal epochs (each run's
last evaluation within the smaller of the two final epoch counts).

Minutes are not measured alike, and the difference favours PyTorch: the
reference counts training time only (data loading and evaluations
excluded), segjax's rows count wall time from the run's start (data set
loading, compilation and evaluations included). Standard library only.

  python experiments/peers/compare_camvid.py --segjax runs/camvid_unet_cpu \
      --peer runs/smp_camvid_unet_r18
"""

import argparse
import datetime
import json
import pathlib

CAMVID_TRAIN_IMAGES = 367


def _rows(path, whole=False):
  """JSON lines of `path` (or, `whole`, its one JSON object in a list)."""
  try:
    with open(path) as f:
      if whole:
        return [json.load(f)]
      return [json.loads(line) for line in f if line.strip()]
  except (OSError, json.JSONDecodeError) as e:
    raise SystemExit(f'{path}: cannot read metrics ({e}).') from e


def segjax_curve(workdir):
  """[(minutes since start, step, epochs, val mIoU)] of a segjax workdir."""
  workdir = pathlib.Path(workdir)
  info, = _rows(workdir / 'run_info.json', whole=True)
  config, = _rows(workdir / 'config.json', whole=True)
  start = datetime.datetime.fromisoformat(info['started']).timestamp()
  batch = config['batch_size']
  curve = []
  for row in _rows(workdir / 'metrics.jsonl'):
    if row.get('split') == 'validation' and 'miou' in row:
      curve.append(((row['time'] - start) / 60, row['step'],
                    row['step'] * batch / CAMVID_TRAIN_IMAGES, row['miou']))
  if not curve:
    raise SystemExit(f'{workdir}/metrics.jsonl: no validation rows.')
  return curve


def peer_curve(out_dir):
  """The same from the PyTorch reference's OUT/metrics.jsonl."""
  path = pathlib.Path(out_dir) / 'metrics.jsonl'
  return [(r['minutes'], r['steps'], r['epochs'], r['val_miou'])
          for r in _rows(path)]


def last_within(curve, index, limit, slack=0.0):
  """The last point whose field `index` is <= limit + slack (None if none)."""
  points = [p for p in curve if p[index] <= limit + slack + 1e-9]
  return points[-1] if points else None


def main():
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--segjax', required=True, help='segjax workdir')
  ap.add_argument('--peer', required=True,
                  help='smp_camvid_train.py --out folder')
  ap.add_argument('--minutes', type=float, default=60.0)
  a = ap.parse_args()
  curves = {'segjax': segjax_curve(a.segjax), 'PyTorch': peer_curve(a.peer)}
  print('| run | minutes | steps | epochs | val mIoU |\n|---|---|---|---|---|')
  for name, curve in curves.items():
    for minutes, step, epochs, miou in curve:
      print(f'| {name} | {minutes:.1f} | {step} | {epochs:.1f} | '
            f'{miou:.3f} |')
  epochs = min(c[-1][2] for c in curves.values())
  print('\n| comparison | segjax | PyTorch |\n|---|---|---|')
  # The reference stops at the first step past --minutes, so its last row
  # is a second or so over: 0.1 minute of slack.
  for label, index, limit, slack in (
      (f'at {a.minutes:g} min', 0, a.minutes, 0.1),
      (f'at {epochs:.1f} epochs', 2, epochs, 0.0)):
    cells = []
    for curve in curves.values():
      p = last_within(curve, index, limit, slack)
      cells.append('no evaluation' if p is None else
                   f'{p[3]:.3f} ({p[0]:.1f} min, {p[2]:.1f} epochs)')
    print(f'| {label} | {cells[0]} | {cells[1]} |')


if __name__ == '__main__':
  main()
