"""segjax's layers import one way, read from the source of every module.

  0  errors, kernels, files                   (foundation)
  1  models, losses, metrics, data, postprocess, imaging, parallel
  2  tasks
  3  evaluation
  4  training | inference                     (siblings: never each other)
  5  the command-line modules and tools       (main, evaluate, predict,
                                               export, sweep(s), results,
                                               bench)

A module may import its own package and any lower layer. Besides: `data`
imports no JAX (it is the TensorFlow input side), tasks and evaluation
import no TensorFlow, and inference imports none at module level (reading
a data split for `segjax.evaluate` imports it inside the function that
reads). Every import statement counts, those inside functions included.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1] / 'segjax'

LAYERS = {
    'errors': 0, 'kernels': 0, 'files': 0,
    'models': 1, 'losses': 1, 'metrics': 1, 'data': 1, 'postprocess': 1,
    'imaging': 1, 'parallel': 1, 'configs': 1,
    'tasks': 2,
    'evaluation': 3,
    'training': 4, 'inference': 4,
    'main': 5, 'evaluate': 5, 'predict': 5, 'export': 5, 'sweep': 5,
    'sweeps': 5, 'results': 5, 'bench': 5,
}
JAX = ('jax', 'flax', 'optax', 'orbax', 'chex')
TENSORFLOW = ('tensorflow', 'tensorflow_datasets', 'segjax.data.tf_host',
              'segjax.data.datasets', 'segjax.data.pipeline')


def _imports(path):
  """(line, imported module name, at module level) of every import."""
  tree = ast.parse(path.read_text(), str(path))
  top = {id(node) for node in tree.body}
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield node.lineno, alias.name, id(node) in top
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      yield node.lineno, node.module, id(node) in top
      for alias in node.names:  # `from segjax import tasks`.
        yield node.lineno, f'{node.module}.{alias.name}', id(node) in top


def _unit(module):
  """The layer unit of 'segjax.a.b' ('a'), or None outside segjax."""
  parts = module.split('.')
  if parts[0] != 'segjax' or len(parts) < 2:
    return None
  return parts[1]


def _modules():
  for path in sorted(ROOT.rglob('*.py')):
    rel = path.relative_to(ROOT.parent).with_suffix('')
    name = '.'.join(p for p in rel.parts if p != '__init__')
    yield path, name


def test_every_module_has_a_layer():
  units = {_unit(name) for _, name in _modules()} - {None}
  assert units <= set(LAYERS), sorted(units - set(LAYERS))


def _violations():
  found = []
  for path, name in _modules():
    unit = _unit(name)
    if unit is None:  # segjax/__init__.py
      continue
    for line, target, top_level in _imports(path):
      where = f'{path.relative_to(ROOT.parent)}:{line} imports {target}'
      other = _unit(target)
      if other is not None and other in LAYERS and other != unit:
        if LAYERS[other] > LAYERS[unit]:
          found.append(f'{where} (layer {LAYERS[other]} above '
                       f'{LAYERS[unit]})')
        elif LAYERS[other] == LAYERS[unit] and LAYERS[unit] in (0, 2, 3, 4):
          found.append(f'{where} (a sibling of the same layer)')
      if unit == 'data' and target.split('.')[0] in JAX:
        found.append(f'{where} (data imports no JAX)')
      if unit == 'data' and other in LAYERS and other not in ('data',
                                                              'errors'):
        found.append(f'{where} (data imports no JAX-side segjax package)')
      tf = any(target == t or target.startswith(t + '.') for t in TENSORFLOW)
      if tf and (unit in ('tasks', 'evaluation', 'models', 'losses',
                          'metrics', 'postprocess', 'imaging', 'parallel')
                 or (unit == 'inference' and top_level)):
        found.append(f'{where} (no TensorFlow here)')
  return found


def test_imports_follow_the_layers():
  assert not _violations(), '\n'.join(_violations())


@pytest.mark.parametrize('source,target,expected', [
    ('training/x.py', 'segjax.inference.run', 'a sibling'),
    ('tasks/x.py', 'segjax.evaluation.loop', 'above'),
    ('data/x.py', 'jax.numpy', 'data imports no JAX'),
    ('tasks/x.py', 'tensorflow', 'no TensorFlow'),
])
def test_the_check_finds_a_violation(source, target, expected, tmp_path,
                                     monkeypatch):
  # The same walk over a fake tree holding one bad import.
  fake = tmp_path / 'segjax'
  (fake / source).parent.mkdir(parents=True)
  (fake / source).write_text(f'def f():\n  import {target}\n')
  monkeypatch.setattr(__import__(__name__), 'ROOT', fake)
  assert any(expected in v for v in _violations())
