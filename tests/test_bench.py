"""The benchmark CLI runs and reports its figures (tiny shapes, no peer)."""

import json
import pathlib

import jax
import jax.numpy as jnp

from segjax.bench import __main__ as bench_main
from segjax.bench import models as bench_models
from segjax.models import conv


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


def test_models_benchmark_counts_parameters_and_flops():
  row = bench_models.measure('fcn32s', {'backbone': 'resnet18'}, 2, 64)
  # ResNet-18 without classifier (11,176,512) + a 1x1 512 -> 2 classifier.
  assert row['params'] == 11_176_512 + 512 * 2 + 2
  assert row['forward_gflops'] > 0


def test_memory_benchmark_shows_what_fsdp_and_spatial_axes_save(capsys):
  # 256x256: at 128x128 the activations are too small a part of the
  # temporaries for the spatial split to show (0.0885 vs 0.0895 GiB).
  common = ['bench', 'memory', '--backbone', 'resnet18', '--output-stride',
            '16', '--size', '256', '256']
  # 8 images on 8 devices, 1 per device: plain vs FSDP-sharded state.
  assert bench_main.main(common + ['--batch', '8', '--mesh', 'data=8',
                                   '--mesh', 'data=4,fsdp=2']) == 0
  # 2 images on 8 devices, each split over 4: a quarter image per device.
  assert bench_main.main(common + ['--batch', '2', '--mesh',
                                   'data=2,spatial=4']) == 0
  plain, fsdp, spatial = [json.loads(l) for l in
                          capsys.readouterr().out.splitlines()]
  assert plain['devices'] == 8 and plain['params'] > 0
  assert fsdp['arguments_gib'] < 0.75 * plain['arguments_gib']
  assert spatial['temporaries_gib'] < plain['temporaries_gib']


def test_train_step_benchmark_reports_speed_flops_and_memory(capsys):
  assert bench_main.main(['bench', 'train_step', '--model', 'unet',
                          '--batch', '2', '--size', '32', '--classes', '3',
                          '--steps', '1']) == 0
  result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  for key in ('s_per_step', 'img_per_s', 'flops_per_step',
              'achieved_flops_per_s', 'peak_flops_per_s', 'params',
              'peak_memory_bytes', 'fwd_flops_per_image', 'mfu'):
    assert result[key] > 0, key
  assert result['img_per_s'] == 2 / result['s_per_step']
  assert 'peer' not in result  # Only with --peer.


def test_forward_flops_counts_a_convolution():
  # 2 x multiply-adds of a 3x3 'SAME' conv, 3 -> 8 channels, on 16 x 20
  # pixels, plus its bias adds: the formula, not XLA, is the reference.
  # Taps that fall in the zero padding are not counted: along a side of n
  # pixels the 3 taps land inside 3n - 2 times.
  model = conv.Conv(8, (3, 3), padding='SAME')
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                             jnp.zeros((1, 16, 20, 3)))
  want = 2 * (3 * 16 - 2) * (3 * 20 - 2) * 3 * 8 + 16 * 20 * 8
  got = bench_models.forward_flops(model, variables, 16, 20)
  assert abs(got - want) <= 0.02 * want, (got, want)


def test_latency_benchmark_times_jitted_and_exported_functions(capsys):
  config = pathlib.Path(__file__).parents[1] / 'experiments' / 'shapes_unet.py'
  assert bench_main.main(['bench', 'latency', '--config',
                          f'{config}:tiny', '--height', '40',
                          '--width', '24', '--repeats', '2']) == 0
  result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert result['model_input'] == [40, 24]
  assert result['latency_ms'] > 0 and result['exported_latency_ms'] > 0


def test_profile_benchmark_sums_op_time_by_category(capsys):
  assert bench_main.main(['bench', 'profile', '--model', 'unet', '--batch',
                          '2', '--size', '32', '--classes', '3', '--top',
                          '5']) == 0
  result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  categories = result['categories']
  assert result['op_seconds'] > 0 and 'conv' in categories
  assert abs(sum(c['share'] for c in categories.values()) - 1) < 1e-6
  assert sum(c['ops'] for c in categories.values()) >= len(result['top'])
  assert len(result['top']) == 5
  assert all(row['category'] in categories for row in result['top'])
  seconds = [row['seconds'] for row in result['top']]
  assert seconds == sorted(seconds, reverse=True)


def test_eval_benchmark_slides_windows_with_flip(capsys):
  config = pathlib.Path(__file__).parents[1] / 'experiments' / (
      'cityscapes_deeplabv3plus.py')
  assert bench_main.main(['bench', 'eval', '--config', str(config),
                          '--backbone', 'resnet18', '--height', '64',
                          '--width', '96', '--window', '32', '64',
                          '--stride', '32', '32', '--repeats', '1']) == 0
  result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert result['windows_per_pass'] == 4  # Rows 0, 32; columns 0, 32.
  assert result['inference']['mode'] == 'slide'
  assert result['inference']['flip'] is True
  assert result['s_per_image'] > 0 and 'peer' not in result


def test_options_benchmark_reports_a_failing_variant():
  from segjax.bench import options  # pylint: disable=g-import-not-at-top
  result = options.run_variant({'XLA_FLAGS': '--xla_no_such_flag=true'}, [],
                               ['--model', 'unet', '--size', '16'], 1)
  assert 'error' in result


def test_report_writes_the_table_between_its_markers(tmp_path):
  from segjax.bench import report  # pylint: disable=g-import-not-at-top
  doc = tmp_path / 'performance.md'
  doc.write_text(f'# Performance\n\nBefore.\n\n{report.START}\nold\n'
                 f'{report.END}\n\nAfter.\n')
  train = {'backbone': 'resnet50', 'output_stride': 16, 'batch': 8,
           'height': 256, 'width': 256, 'dtype': 'float32',
           's_per_step': 4.0, 'img_per_s': 2.0,
           'achieved_flops_per_s': 1e11, 'achieved_fraction_of_peak': 0.5,
           'peak_flops_per_s': 2e11, 'img_per_s_vs_peer': 1.25,
           'peer': {'s_per_step': 5.0, 'img_per_s': 1.6}}
  metrics = {'shape': [8, 512, 1024], 'classes': 19, 'segjax_s': 0.005,
             'numpy_s': 0.03, 'peer_s': 0.3, 'peer_over_segjax': 60.0}
  results = [('train_step', train), ('metrics', metrics),
             ('eval', {'error': 'exit 1: boom'})]
  report.write(str(doc), report.table(results, None, dict(report.BENCHES)))
  text = doc.read_text()
  assert text.startswith('# Performance\n\nBefore.') and 'After.' in text
  assert 'old' not in text and text.count(report.START) == 1
  assert '| 1.25x img/s |' in text and '| 60x |' in text
  assert 'failed: exit 1: boom' in text
  assert '`python -m segjax.bench train_step --peer`' in text


def test_input_benchmark_reports_rates_with_a_preprocess(capsys):
  common = ['bench', 'input', '--crop', '16', '16', '--augment',
            'crop(16, 16)|flip_lr', '--images', '2', '--seconds', '0.2',
            '--steps', '0', '--threads', '1']
  assert bench_main.main(common + ['--preprocess', 'resize(24, 32)']) == 0
  result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert result['preprocess'] == 'resize(24, 32)'
  assert result['augment_img_per_s_1_thread'] > 0
  # A random op cannot run once per image: a one-line usage error.
  assert bench_main.main(common + ['--preprocess', 'flip_lr']) == 2
  assert '--preprocess' in capsys.readouterr().err
