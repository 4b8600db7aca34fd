"""Compare finished runs from their workdirs: load, summarize, tabulate, plot.

Reads only what the trainer writes (config.json, run_info.json,
metrics.jsonl) and segjax.sweep's sweep.json, with pandas (and matplotlib for
the plots), from local folders or Cloud Storage (gs://, through etils.epath):
importing it imports neither JAX nor TensorFlow, so it works on a laptop
with a copy of the workdirs.

  from segjax import results
  df = results.load_runs('runs/ablations/shapes_output_stride')  # sweep root
  test = results.final(df, 'test')                     # last test row per run
  summary = results.summarize(test, by='point.model.output_stride')
  print(results.table(summary))                        # mean ± std (n) cells
  results.plot_curves(df, 'miou', 'validation', by='point.model.output_stride')
  results.plot_cost(df, 'miou', by='point.model.output_stride')
  results.plot_per_class(df, 'test', by='point.model.output_stride')

load_runs' frame has one row per (run, split, step) and the columns
  run, workdir, split, step, time, wall_s,  metrics (miou, iou/<class>, pq, ...),
  config.<dotted.path>...,  num_params, flops_per_train_step, git_sha,
  point.<field>...  (runs of a sweep: the fields its sweep.json sets).
"""

import difflib
import glob as globlib
import json
import math
import os
import re
import warnings

from etils import epath
import numpy as np
import pandas as pd

from segjax import files

_BASE = ('run', 'workdir', 'split', 'step', 'time', 'wall_s')
_INFO = ('num_params', 'flops_per_train_step', 'git_sha')
_STATS = ('mean', 'std', 'count', 'sem')


def _hashable(value):
  # JSON lists become tuples so that config and point columns can be
  # grouped by and compared.
  if isinstance(value, list):
    return tuple(_hashable(v) for v in value)
  if isinstance(value, dict):
    return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
  return value


def _flatten(tree, prefix):
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict) and value:
      out.update(_flatten(value, f'{prefix}.{key}'))
    else:
      out[f'{prefix}.{key}'] = _hashable(value)
  return out


# Paths: local ones through os.path (symbolic links resolved, so one run
# named two ways is read once), URIs (gs://...) through epath as they are.


def _join(folder, name):
  return (str(epath.Path(folder) / name) if files.is_uri(folder)
          else os.path.join(folder, name))


def _real(path):
  if files.is_uri(path):
    return str(path).rstrip('/')
  return os.path.realpath(path)


def _parent(path):
  if files.is_uri(path):
    return str(epath.Path(path).parent)
  return os.path.dirname(path)


def _name(path):
  if files.is_uri(path):
    return epath.Path(path).name
  return os.path.basename(os.path.normpath(path))


def _glob(pattern):
  """Sorted matches of a glob; a URI's from its first part with a wildcard
  on (epath globs below a folder)."""
  if not files.is_uri(pattern):
    return sorted(globlib.glob(pattern))
  parts = pattern.split('/')
  first = next(i for i, part in enumerate(parts) if globlib.has_magic(part))
  base = epath.Path('/'.join(parts[:first]))
  return sorted(str(p) for p in base.glob('/'.join(parts[first:])))


def _read_json(path):
  path = epath.Path(path)
  if not path.exists():
    return {}
  try:
    return json.loads(path.read_text(encoding='utf-8'))
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}:{e.lineno}: malformed JSON ({e.msg})') from None


def _read_metrics(path):
  """The rows of a metrics.jsonl, nulls (non-finite values) as NaN."""
  lines = epath.Path(path).read_text(encoding='utf-8').split('\n')
  rows = []
  for lineno, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      if lineno == len(lines):
        # No newline after it: the trainer is writing it right now.
        warnings.warn(f'{path}:{lineno}: skipped an unfinished last line')
        continue
      raise ValueError(f'{path}:{lineno}: malformed JSON ({e.msg}): '
                       f'{line[:80]!r}') from None
    if not isinstance(row, dict) or 'step' not in row or 'split' not in row:
      raise ValueError(f'{path}:{lineno}: not a metrics row (a JSON object '
                       f'with "step" and "split"): {line[:80]!r}')
    rows.append({k: math.nan if v is None else _hashable(v)
                 for k, v in row.items()})
  return rows


def _sweep_points(root):
  """{real path: (workdir, name, point fields)} of a sweep root's points."""
  points = {}
  for i, p in enumerate(_read_json(_join(root, 'sweep.json'))
                        .get('points', [])):
    name = p.get('name', f'point{i}')
    workdir = p.get('workdir') or name
    # A relative workdir is relative to the sweep root or to where the sweep
    # ran; the root may also have been copied elsewhere since.
    candidates = [_join(root, workdir), workdir,
                  _join(root, _name(workdir))]
    workdir = next((c for c in candidates if epath.Path(c).is_dir()),
                   candidates[0])
    points[_real(workdir)] = (workdir, name, p.get('point', {}))
  return points


def _expand(paths):
  """The run folders named by paths (folders, globs, sweep roots), in order."""
  if isinstance(paths, (str, os.PathLike)):
    paths = [paths]
  folders = []
  for path in map(os.fspath, paths):
    matches = _glob(path) if globlib.has_magic(path) else [path]
    for match in matches or [path]:
      if epath.Path(_join(match, 'sweep.json')).is_file():
        folders.extend(w for w, _, _ in _sweep_points(match).values())
      elif epath.Path(match).is_dir():
        folders.append(match)
      elif not epath.Path(match).exists():
        warnings.warn(f'{match}: no such folder')
      # Files a glob matched (sweep.json, logs) are not runs: left out.
  return folders


def load_runs(paths, splits=None):
  """One row per (run, split, step) of the runs' metrics.jsonl files.

  paths: a workdir, a glob ('runs/sweep/*'), a sweep root (its points), or a
  list of these. splits: split name(s) to keep; None: every eval split, as
  train rows only come when asked for ('train'). Columns: the module
  docstring's; 'run' is the sweep point's name for a sweep's runs, else the
  folder's; 'wall_s' is NaN for runs written without 'time'.
  """
  if isinstance(splits, str):
    splits = [splits]
  records, seen, names, sweeps = [], set(), {}, {}
  for folder in _expand(paths):
    real = _real(folder)
    if real in seen:  # Named twice (a glob and a sweep root, say).
      continue
    seen.add(real)
    metrics_path = _join(folder, 'metrics.jsonl')
    if not epath.Path(metrics_path).is_file():
      warnings.warn(f'{folder}: no metrics.jsonl, skipped')
      continue
    # A run inside a sweep root is named and described by its sweep point,
    # however it was found (the root, a glob, or its own path).
    parent = _parent(real)
    if parent not in sweeps:
      has_sweep = epath.Path(_join(parent, 'sweep.json')).is_file()
      sweeps[parent] = _sweep_points(parent) if has_sweep else {}
    _, name, point = sweeps[parent].get(real, (None, _name(folder), {}))
    names.setdefault(name, []).append(real)
    info = _read_json(_join(folder, 'run_info.json'))
    fixed = _flatten(_read_json(_join(folder, 'config.json')), 'config')
    fixed.update({k: info.get(k, math.nan) for k in _INFO})
    fixed.update(_flatten(point, 'point'))
    rows = _read_metrics(metrics_path)
    start = pd.Series([r.get('time') for r in rows], dtype=float).min()
    # A resumed run repeats the steps after its last checkpoint, and a
    # finished run restarted re-evaluates: the latest row of a (split, step)
    # is the one that stands.
    latest = {}
    for r in rows:
      if (r['split'] in splits) if splits else r['split'] != 'train':
        latest[(r['split'], r['step'])] = r
    if not latest:
      warnings.warn(f'{folder}: no rows of splits {splits or "(eval)"}')
    for key in sorted(latest):
      r, time = latest[key], latest[key].get('time', math.nan)
      records.append({'run': name, 'workdir': folder, 'split': key[0],
                      'step': key[1], 'time': time, 'wall_s': time - start,
                      **{k: v for k, v in r.items()
                         if k not in ('step', 'split', 'time')}, **fixed})
  if not records:
    return pd.DataFrame(columns=list(_BASE))
  # Two runs with the same folder name (seed0 of two sweeps) are told apart
  # by their parent folder.
  for r in records:
    if len(names[r['run']]) > 1:
      parent = _parent(_real(r['workdir']))
      r['run'] = f'{_name(parent)}/{r["run"]}'
  df = pd.DataFrame.from_records(records)
  return df[sorted(df.columns, key=lambda c: (  # base, metrics, config, ...
      0 if c in _BASE else 4 if c.startswith('point.') else 3 if c in _INFO
      else 2 if c.startswith('config.') else 1))]


def _run_key(df):
  # Workdirs are unique where names need not be (a frame built by hand).
  return 'workdir' if 'workdir' in df else 'run'


def _need(df, *columns):
  for c in columns:
    if c not in df:
      near = difflib.get_close_matches(c, map(str, df.columns), n=5)
      raise ValueError(f'no column {c!r}; close ones: {near}')


def _split_rows(df, split):
  rows = df[df['split'] == split]
  if rows.empty:
    raise ValueError(f'no {split!r} rows; splits: {sorted(set(df["split"]))}')
  return rows


def final(df, split='test'):
  """The last-step row of `split` per run (same columns as df)."""
  rows = _split_rows(df, split).sort_values('step', kind='stable')
  return rows.drop_duplicates(_run_key(rows), keep='last').sort_index()


def best(df, metric='miou', split='validation', mode='max'):
  """The row of `split` with the best `metric` per run (earliest on ties)."""
  if mode not in ('max', 'min'):
    raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
  _need(df, metric)
  rows = _split_rows(df, split)
  rows = rows[rows[metric].notna()].sort_values(
      [metric, 'step'], ascending=[mode == 'min', True], kind='stable')
  return rows.drop_duplicates(_run_key(rows), keep='first').sort_index()


def _as_list(by):
  return [by] if isinstance(by, str) else list(by or [])


def summarize(df, by=None, metric='miou', split=None):
  """mean, std (ddof=1), count and sem of `metric` over runs, per group.

  df holds one row per run (final() or best()); with split= the last row of
  that split per run is taken. Returns the `by` columns and 'mean', 'std',
  'count', 'sem', sorted by group; a group of one run has std NaN.
  """
  df, by = final(df, split) if split is not None else df, _as_list(by)
  _need(df, metric, *by)
  if df[_run_key(df)].duplicated().any():
    raise ValueError('several rows per run: pass final(df, split), '
                     'best(df, ...) or split=')
  out = df.assign(_all='all').groupby(by or ['_all'], sort=False,
                                      dropna=False)[metric].agg(
                                          ['mean', 'std', 'count'])
  out = out.reset_index().drop(columns=['_all'], errors='ignore')
  out['sem'] = out['std'] / np.sqrt(out['count'])
  try:
    out = out.sort_values(by, kind='stable', ignore_index=True) if by else out
  except TypeError:  # Mixed types in a group column: left in run order.
    pass
  out.attrs['metric'] = metric
  return out


def _short(column):
  return re.sub(r'^(point|config)\.', '', column)


def _fmt(value):
  return f'{value:g}' if isinstance(value, float) else str(value).replace(
      '|', '\\|')


def table(summary, metric=None, digits=3):
  """A markdown table: the group columns and 'mean ± std (n)' cells.

  A group of one run shows 'mean (1)'. Prefixes 'point.' and 'config.' are
  left out of the headers.
  """
  metric = metric or summary.attrs.get('metric', 'value')
  by = [c for c in summary.columns if c not in _STATS]
  lines = ['| ' + ' | '.join([_short(c) for c in by] + [metric]) + ' |',
           '|' + '---|' * (len(by) + 1)]
  for row in summary.to_dict('records'):  # Keeps each column's type.
    cell = f'{row["mean"]:.{digits}f}'
    if np.isfinite(row['std']):
      cell += f' ± {row["std"]:.{digits}f}'
    cell += f' ({int(row["count"])})'
    lines.append('| ' + ' | '.join([_fmt(row[c]) for c in by] + [cell])
                 + ' |')
  return '\n'.join(lines)


def _figure(ax, figsize):
  # A Figure outside pyplot: nothing global to close, and no double display
  # in notebooks (with %matplotlib inline, a returned Figure shows itself).
  if ax is not None:
    return ax.figure, ax
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  fig = Figure(figsize=figsize, layout='constrained')
  return fig, fig.add_subplot()


def _finish(ax, legend_outside=False, **labels):
  ax.set(**labels)
  ax.grid(alpha=0.3)
  ax.legend(fontsize='small', **(  # Bars fill the axes: legend beside them.
      dict(loc='upper left', bbox_to_anchor=(1, 1)) if legend_outside else {}))
  return ax.figure


def _groups(df, by):
  """(label, rows) per group of `by` (per run if None), in sorted order."""
  by = _as_list(by) or ['run']
  _need(df, *by)
  try:
    groups = list(df.groupby(by, sort=True, dropna=False))
  except TypeError:
    groups = list(df.groupby(by, sort=False, dropna=False))
  for key, rows in groups:
    if by == ['run']:
      yield str(key[0]), rows
    else:
      yield ', '.join(f'{_short(c)}={_fmt(v)}' for c, v in zip(by, key)), rows


def plot_curves(df, metric='miou', split='validation', by=None, x='step',
                ax=None):
  """`metric` against x ('step' or 'wall_s'): one line per run, one colour
  (and legend entry) per group of `by` (per run if None)."""
  rows = _split_rows(df, split)
  _need(rows, metric, x)
  _, ax = _figure(ax, (7, 4.5))
  for i, (label, group) in enumerate(_groups(rows, by)):
    for j, (_, run) in enumerate(group.groupby(_run_key(group), sort=False)):
      run = run.sort_values(x)
      ax.plot(run[x], run[metric], color=f'C{i % 10}', marker='.',
              label=label if j == 0 else None)
  return _finish(ax, xlabel=x, ylabel=metric, title=f'{metric} ({split})')


def plot_cost(df, metric='miou', cost='flops_per_train_step', split='test',
              by=None, ax=None):
  """Mean ± std over runs of `metric` (last `split` row) against `cost`
  (any column: 'flops_per_train_step', 'num_params', 'wall_s'), one point
  per group of `by` (per run if None)."""
  rows = final(df, split)
  _need(rows, metric, cost)
  missing = rows[cost].isna()
  if missing.any():  # Older runs have no FLOPs count.
    warnings.warn(f'no {cost}, left out: {sorted(rows["run"][missing])}')
    rows = rows[~missing]
  if rows.empty:
    raise ValueError(f'no run has {cost!r}')
  _, ax = _figure(ax, (6, 4.5))
  for i, (label, group) in enumerate(_groups(rows, by)):
    std, cost_std = group[metric].std(), group[cost].std()
    ax.errorbar(group[cost].mean(), group[metric].mean(),
                yerr=std if np.isfinite(std) else None,
                xerr=cost_std if np.isfinite(cost_std) and cost_std else None,
                fmt='o', capsize=3, color=f'C{i % 10}', label=label)
  if rows[cost].min() > 0 and rows[cost].max() > 10 * rows[cost].min():
    ax.set_xscale('log')
  return _finish(ax, xlabel=cost, ylabel=f'{metric} ({split}, mean ± std)')


def plot_per_class(df, split='test', prefix='iou/', by=None, ax=None):
  """Grouped bars of the per-class columns '<prefix><class>' (last `split`
  row per run): one bar per class per group of `by` (per run if None), the
  group's mean with its std as error bar."""
  rows = final(df, split)
  columns = [c for c in rows.columns
             if c.startswith(prefix) and rows[c].notna().any()]
  if not columns:
    raise ValueError(f'no {prefix}<class> columns in the {split!r} rows')
  groups = list(_groups(rows, by))
  width = 0.8 / len(groups)
  x = np.arange(len(columns))
  _, ax = _figure(ax, (min(20, 4 + 0.3 * len(columns) * (len(groups) + 1)),
                       4.5))
  for i, (label, group) in enumerate(groups):
    values = group[columns].astype(float)
    std = values.std().to_numpy() if len(values) > 1 else None
    ax.bar(x - 0.4 + width * (i + 0.5), values.mean().to_numpy(), width,
           yerr=std, capsize=2, color=f'C{i % 10}', label=label)
  many = len(columns) > 8  # Long class lists: slanted names.
  ax.set_xticks(x, [c[len(prefix):] for c in columns],
                rotation=45 if many else 0, ha='right' if many else 'center')
  return _finish(ax, True, ylabel=f'{prefix.rstrip("/")} ({split})')
