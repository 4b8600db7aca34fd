"""The benchmark CLI runs and reports its figures (tiny shapes, no peer)."""

import json

from segjax.bench import __main__ as bench_main


def test_metrics_benchmark_prints_one_json_line(capsys):
  code = bench_main.main(['bench', 'metrics', '--batch', '2', '--height', '8',
                          '--width', '6', '--classes', '3', '--repeats', '2',
                          '--no-peer'])
  assert code == 0
  line = capsys.readouterr().out.strip().splitlines()[-1]
  result = json.loads(line)
  assert result['shape'] == [2, 8, 6]
  for key in ('segjax_s', 'numpy_s', 'read_s', 'numpy_over_segjax'):
    assert result[key] > 0


def test_unknown_benchmark_is_a_usage_error(capsys):
  assert bench_main.main(['bench', 'nosuch']) == 2
  assert 'usage' in capsys.readouterr().err
