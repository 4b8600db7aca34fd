"""Joint augmentation: ops against NumPy definitions, eager vs tf.data, DSL."""

import numpy as np
import pytest

from segjax.data import augment
from segjax.data import augment_ops
from segjax.data.tf_host import tf
from segjax.errors import ConfigError

PAD_COLOR = np.array([124, 116, 104], np.uint8)
FULL = ('scale(0.75, 1.5)|crop(28, 28)|flip_lr|rotate(20)|'
        'jitter(.2, .2, .2, .05)')
RANDOM_OPS = ['scale(0.5, 2.0)', 'crop(8, 12)', 'crop(20, 20)', 'flip_lr',
              'rotate(30)', 'jitter(0.4, 0.4, 0.4, 0.1)', FULL]
# Runs of 2+ geometric ops are fused into one warp (segjax/data/augment_warp).
FUSED = ['scale(0.5, 2.0)|crop(20, 20)|flip_lr|rotate(25)',
         'resize(20, 18)|pad(24, 24)', 'center_crop(8, 20)|rotate(15, p=0.5)',
         'crop(9, 30)|flip_lr']
ALL_OPS = RANDOM_OPS + FUSED + [
    'resize(7, 12)', 'pad(20, 20)', 'center_crop(8, 20)', 'normalize',
    FULL + '|normalize']


def _seed(k):
  return tf.constant([3, k], tf.int64)


def _random_example(h=13, w=15, seed=0):
  rng = np.random.default_rng(seed)
  return {
      'image': rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
      'labels': rng.choice(np.array([0, 2, 5, 9], np.uint8), (h, w)),
      # Ids past 2**24 would not survive a float32 round trip.
      'instances': rng.choice(np.array([0, 3, 70_000, 2**24 + 1], np.int32),
                              (h, w)),
  }


def _square_example():
  """Background class 1; a 12x14 square of class 3, instance 7, own colour."""
  image = np.empty((32, 40, 3), np.uint8)
  image[:] = (20, 120, 220)
  labels = np.ones((32, 40), np.uint8)
  instances = np.zeros((32, 40), np.int32)
  image[8:20, 12:26] = (200, 30, 60)
  labels[8:20, 12:26] = 3
  instances[8:20, 12:26] = 7
  return {'image': image, 'labels': labels, 'instances': instances}


def _apply(fn, example, seed=_seed(0)):
  out = fn({k: tf.constant(v) for k, v in example.items()}, seed)
  return {k: v.numpy() for k, v in out.items()}


def _apply_in_dataset(fn, example, seed):
  """Runs fn inside tf.data with H and W unknown, as decoded images have."""
  signature = {k: tf.TensorSpec([None, None] + list(v.shape[2:]),
                                tf.as_dtype(v.dtype))
               for k, v in example.items()}
  ds = tf.data.Dataset.from_generator(lambda: [example],
                                      output_signature=signature)
  ds = ds.map(tf.autograph.experimental.do_not_convert(lambda e: fn(e, seed)))
  return ds, next(iter(ds.as_numpy_iterator()))


def _interior(mask):
  """Pixels of `mask` whose whole 3x3 neighbourhood is in `mask`."""
  padded = np.pad(mask, 1)
  h, w = mask.shape
  return np.all([padded[i:i + h, j:j + w] for i in range(3) for j in range(3)],
                axis=0)


@pytest.mark.parametrize('spec', ALL_OPS)
def test_op_gives_the_same_output_eagerly_and_inside_tf_data(spec):
  fn = augment.build(spec)
  example = _random_example()
  for k in range(2):
    eager = _apply(fn, example, _seed(k))
    ds, graph = _apply_in_dataset(fn, example, _seed(k))
    assert eager.keys() == graph.keys() == example.keys()
    for key in example:
      np.testing.assert_array_equal(eager[key], graph[key])
      if key != 'image' or 'normalize' not in spec:
        assert eager[key].dtype == example[key].dtype
    if spec.startswith(('crop', 'pad', 'center_crop', 'resize')):
      # Batching needs the static shape even when the input's is unknown.
      h, w = eager['labels'].shape
      assert ds.element_spec['image'].shape == (h, w, 3)
      assert ds.element_spec['labels'].shape == (h, w)


@pytest.mark.parametrize('spec', ALL_OPS)
@pytest.mark.parametrize('keys', [('image',), ('image', 'labels'),
                                  ('image', 'instances')])
def test_op_handles_any_subset_of_maps_and_keeps_dtypes(spec, keys):
  example = {k: v for k, v in _random_example().items() if k in keys}
  if 'labels' in example:
    example['labels'] = example['labels'].astype(np.int32)
  example['id'] = np.int64(17)  # Other keys pass through.
  out = _apply(augment.build(spec), example, _seed(1))
  assert out.keys() == example.keys() and out['id'] == 17
  for key in keys[1:]:
    assert out[key].dtype == example[key].dtype
    assert out[key].shape == out['image'].shape[:2]


@pytest.mark.parametrize('spec', ['scale(0.5, 2.0)', 'crop(24, 24)',
                                  'crop(40, 48)', 'flip_lr', 'rotate(45)',
                                  FULL])
def test_image_and_label_maps_stay_aligned(spec):
  fn = augment.build(spec)
  seen_square = 0
  for k in range(5):
    out = _apply(fn, _square_example(), _seed(k))
    labels, image = out['labels'], out['image'].astype(int)
    assert set(np.unique(labels)) <= {1, 3, 255}
    np.testing.assert_array_equal(labels == 3, out['instances'] == 7)
    assert set(np.unique(out['instances'])) <= {0, 7}
    # Away from edges bilinear blending is gone; jitter moves colours.
    atol = 60 if 'jitter' in spec else 2
    square = _interior(labels == 3)
    background = _interior(labels == 1)
    seen_square += square.any()
    if 'jitter' not in spec:
      np.testing.assert_allclose(image[square], [[200, 30, 60]] * square.sum(),
                                 atol=atol)
      np.testing.assert_allclose(image[background],
                                 [[20, 120, 220]] * background.sum(),
                                 atol=atol)
    else:  # Colours move, but the square stays redder than the background.
      assert (image[square][:, 0] > image[square][:, 2]).all()
      assert (image[background][:, 0] < image[background][:, 2]).all()
  assert seen_square >= 3


@pytest.mark.parametrize('spec', ['scale(0.3, 3.0)', 'resize(20, 9)',
                                  'crop(20, 20)', 'center_crop(9, 20)',
                                  'pad(16, 16)', 'rotate(40)', FULL])
def test_label_maps_are_never_interpolated(spec):
  fn = augment.build(spec)
  example = _random_example()
  for k in range(4):
    out = _apply(fn, example, _seed(k))
    assert set(np.unique(out['labels'])) <= {0, 2, 5, 9, 255}
    assert set(np.unique(out['instances'])) <= {0, 3, 70_000, 2**24 + 1}


def _window(out):
  """(top, left, h, w) of the input inside a padded output."""
  rows, cols = np.nonzero(out['labels'] != 255)
  return rows.min(), cols.min(), np.ptp(rows) + 1, np.ptp(cols) + 1


def _check_padded(out, example, top, left):
  h, w = example['labels'].shape
  inside = np.zeros(out['labels'].shape, bool)
  inside[top:top + h, left:left + w] = True
  for key in example:
    np.testing.assert_array_equal(out[key][top:top + h, left:left + w],
                                  example[key])
  assert (out['labels'][~inside] == 255).all()
  assert (out['instances'][~inside] == 0).all()
  assert (out['image'][~inside] == PAD_COLOR).all()


def test_crop_larger_than_input_pads_at_a_random_place():
  example = _random_example(6, 5)
  corners = set()
  for k in range(12):
    out = _apply(augment.build('crop(10, 9)'), example, _seed(k))
    assert out['labels'].shape == (10, 9)
    top, left, h, w = _window(out)
    assert (h, w) == (6, 5)  # Intact: not scaled.
    _check_padded(out, example, top, left)
    corners.add((top, left))
  assert len(corners) > 3


def test_crop_pads_one_dimension_and_crops_the_other():
  example = _random_example(12, 5)
  for k in range(4):
    out = _apply(augment.build('crop(7, 8)'), example, _seed(k))
    top, left, h, w = _window(out)
    assert (top, h, w) == (0, 7, 5)
    rows = [r for r in range(12 - 7 + 1) if np.array_equal(
        out['labels'][:, left:left + 5], example['labels'][r:r + 7])]
    assert rows
    r = rows[0]
    np.testing.assert_array_equal(out['image'][:, left:left + 5],
                                  example['image'][r:r + 7])


def test_pad_puts_the_input_top_left_and_center_crop_centres_it():
  example = _random_example(6, 5)
  _check_padded(_apply(augment.build('pad(10, 9)'), example), example, 0, 0)
  _check_padded(_apply(augment.build('center_crop(10, 9)'), example),
                example, 2, 2)
  big = _random_example(9, 11)
  out = _apply(augment.build('center_crop(5, 4)'), big)
  np.testing.assert_array_equal(out['image'], big['image'][2:7, 3:7])
  with pytest.raises(tf.errors.InvalidArgumentError, match='larger'):
    _apply(augment.build('pad(8, 8)'), big)


@pytest.mark.parametrize('spec', RANDOM_OPS)
def test_same_seed_same_output_and_seeds_differ(spec):
  fn = augment.build(spec)
  example = _random_example()
  outs = [_apply(fn, example, _seed(k)) for k in range(6)]
  again = _apply(fn, example, _seed(0))
  for key in example:
    np.testing.assert_array_equal(outs[0][key], again[key])
  assert any(o['image'].shape != outs[0]['image'].shape or
             not np.array_equal(o['image'], outs[0]['image'])
             for o in outs[1:])


def test_int32_and_int64_seeds_agree():
  fn = augment.build(FULL)
  a = _apply(fn, _random_example(), tf.constant([3, 1], tf.int32))
  b = _apply(fn, _random_example(), tf.constant([3, 1], tf.int64))
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])


def test_flip_lr_mirrors_every_map_together():
  example = _random_example(6, 5)
  flips = 0
  for k in range(20):
    out = _apply(augment.build('flip_lr'), example, _seed(k))
    flipped = not np.array_equal(out['labels'], example['labels'])
    flips += flipped
    for key, v in example.items():
      np.testing.assert_array_equal(out[key], v[:, ::-1] if flipped else v)
  assert 0 < flips < 20
  always = _apply(augment.build('flip_lr(p=1.0)'), example)
  never = _apply(augment.build('flip_lr(0)'), example)
  for key, v in example.items():
    np.testing.assert_array_equal(always[key], v[:, ::-1])
    np.testing.assert_array_equal(never[key], v)


def test_rotate_zero_degrees_is_the_identity():
  example = _random_example()
  for k in range(3):
    out = _apply(augment.build('rotate(0)'), example, _seed(k))
    for key, v in example.items():
      np.testing.assert_array_equal(out[key], v)


@pytest.mark.parametrize('degrees, k', [(90, 1), (-90, -1), (180, 2)])
def test_rotate_by_right_angles_matches_rot90(degrees, k):
  example = _random_example(9, 9)
  out = _apply(lambda e, s: augment_ops._rotate(e, np.radians(degrees)),
               example)
  for key, v in example.items():
    np.testing.assert_array_equal(out[key], np.rot90(v, k))


def test_rotate_fills_outside_pixels_with_pad_values():
  example = _random_example(9, 9)
  out = _apply(lambda e, s: augment_ops._rotate(e, np.radians(45.)), example)
  # The corners of a square turned by 45 degrees come from outside it.
  corner = (0, 0)
  assert out['labels'][corner] == 255 and out['instances'][corner] == 0
  np.testing.assert_array_equal(out['image'][corner], PAD_COLOR)
  assert out['instances'][4, 4] == example['instances'][4, 4]


def test_jitter_changes_only_the_image():
  example = _random_example()
  for k in range(3):
    out = _apply(augment.build('jitter(0.4, 0.4, 0.4, 0.1)'), example,
                 _seed(k))
    assert out['image'].dtype == np.uint8
    assert not np.array_equal(out['image'], example['image'])
    np.testing.assert_array_equal(out['labels'], example['labels'])
    np.testing.assert_array_equal(out['instances'], example['instances'])
  for spec in ['jitter', 'jitter(0, 0, 0, 0)']:
    out = _apply(augment.build(spec), example)
    np.testing.assert_array_equal(out['image'], example['image'])


def test_jitter_brightness_multiplies_by_one_factor():
  example = _random_example()
  x = example['image'].astype(np.float64)
  for k in range(3):
    out = _apply(augment.build('jitter(brightness=0.5)'), example, _seed(k))
    y = out['image'].astype(np.float64)
    unclipped = (x > 20) & (y < 255)
    factor = np.median(y[unclipped] / x[unclipped])
    assert 0.5 <= factor <= 1.5
    np.testing.assert_allclose(y, np.clip(np.round(x * factor), 0, 255),
                               atol=1.01)


def test_normalize_matches_numpy_and_the_model_constants():
  from segjax.models import inputs  # pylint: disable=g-import-not-at-top
  assert augment_ops.IMAGENET_MEAN_255 == inputs.MEAN_RGB
  assert augment_ops.IMAGENET_STD_255 == inputs.STDDEV_RGB
  np.testing.assert_array_equal(np.round(inputs.MEAN_RGB), PAD_COLOR)
  example = _random_example()
  out = _apply(augment.build('normalize'), example)
  expected = ((example['image'].astype(np.float64) - np.array(inputs.MEAN_RGB))
              / np.array(inputs.STDDEV_RGB))
  assert out['image'].dtype == np.float32
  np.testing.assert_allclose(out['image'], expected, rtol=0, atol=1e-5)
  np.testing.assert_array_equal(out['labels'], example['labels'])
  out = _apply(augment.build('normalize(mean=(1, 2, 3), std=[2, 2, 2])'),
               example)
  np.testing.assert_allclose(
      out['image'], (example['image'] - np.array([1., 2., 3.])) / 2, atol=1e-5)


def test_spec_parsing():
  spec = 'scale(0.5, 2.0)|crop(64, 64)|flip_lr'
  assert augment._split(spec) == ['scale(0.5, 2.0)', 'crop(64, 64)', 'flip_lr']
  assert augment._split(['scale(0.5, 2.0)|crop(64, 64)', ' flip_lr ']) == [
      'scale(0.5, 2.0)', 'crop(64, 64)', 'flip_lr']
  assert augment._split("normalize(mean=(1, 2, 3), std='|')") == [
      "normalize(mean=(1, 2, 3), std='|')"]
  assert augment._parse('scale(0.5, 2.0)') == ('scale', (0.5, 2.0), {})
  assert augment._parse('flip_lr') == ('flip_lr', (), {})
  assert augment._parse('rotate(10, p=0.5)') == ('rotate', (10,), {'p': 0.5})
  example = _random_example(20, 20)
  a = _apply(augment.build(spec.replace('64', '16')), example, _seed(5))
  b = _apply(augment.build(['scale(0.5, 2.0)', 'crop(16, 16)|flip_lr']),
             example, _seed(5))
  for key in example:
    np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize('spec', ['', None, [], '  ', ' | '])
def test_empty_spec_is_the_identity(spec):
  example = _random_example()
  out = _apply(augment.build(spec), example)
  for key, v in example.items():
    np.testing.assert_array_equal(out[key], v)


@pytest.mark.parametrize('spec, text', [
    ('scale(0.5, 2)|flip_ud', 'flip_ud'),
    ('crop(64, 64', 'crop(64, 64'),
    ('crop(64, x)', 'crop(64, x)'),
    ('crop(64)', 'crop(64)'),
    ('crop(64, -1)', 'crop(64, -1)'),
    ('scale(2.0, 0.5)', 'scale(2.0, 0.5)'),
    ('flip_lr(p=2)', 'flip_lr(p=2)'),
    ('jitter(hue=0.7)', 'jitter(hue=0.7)'),
    ('rotate(10, q=1)', 'rotate(10, q=1)'),
])
def test_bad_spec_is_a_config_error_naming_the_op(spec, text):
  with pytest.raises(ConfigError) as info:
    augment.build(spec)
  message = str(info.value)
  assert repr(text) in message
  assert 'Known ops: center_crop, crop, flip_lr' in message


def test_registry_accepts_new_ops(monkeypatch):
  def invert(strength):
    def fn(example, seed):
      del seed
      return dict(example, image=strength - example['image'])
    return fn

  monkeypatch.setitem(augment.OPS, 'invert', invert)
  example = _random_example()
  out = _apply(augment.build('invert(255)|flip_lr(1.0)'), example)
  np.testing.assert_array_equal(out['image'], 255 - example['image'][:, ::-1])


@pytest.mark.parametrize('spec', [
    'resize(20, 18)|pad(24, 24)', 'center_crop(8, 20)|rotate(15, p=0.5)',
    'crop(9, 30)|flip_lr', 'scale(0.5, 2.0)|crop(20, 20)|flip_lr'])
def test_fused_geometry_moves_label_maps_exactly_as_the_ops_one_by_one(spec):
  # With one resampling op in the run, the op-by-op path (the definition)
  # and the fused warp must agree on every label and instance pixel: the
  # same draws, one composed map, the same nearest rule and fill region.
  example = _random_example(h=21, w=26)
  fused, plain = augment.build(spec), augment.build(spec, fuse=False)
  for k in range(6):
    a, b = _apply(fused, example, _seed(k)), _apply(plain, example, _seed(k))
    np.testing.assert_array_equal(a['labels'], b['labels'])
    np.testing.assert_array_equal(a['instances'], b['instances'])


@pytest.mark.parametrize('spec', [FUSED[0], FULL])
def test_fused_chain_of_resamplings_differs_only_by_rounding(spec):
  # scale then rotate resamples twice op by op (two nearest roundings), once
  # fused; on a map of 3x3-pixel blocks they may disagree only next to a
  # block edge, by at most one input pixel: 2 output pixels at scale <= 2.
  rng = np.random.default_rng(1)
  blocks = rng.choice(np.array([0, 2, 5, 9], np.uint8), (7, 9))
  example = {'image': np.zeros((21, 27, 3), np.uint8),
             'labels': np.kron(blocks, np.ones((3, 3), np.uint8))}
  for k in range(6):
    a = _apply(augment.build(spec), example, _seed(k))['labels']
    b = _apply(augment.build(spec, fuse=False), example, _seed(k))['labels']
    padded = np.pad(b, 2, constant_values=254)
    h, w = b.shape
    near = np.any([padded[i:i + h, j:j + w] == a for i in range(5)
                   for j in range(5)], axis=0)
    # At the crop window's edges the fused warp may take the input pixel
    # just beyond the window, which op by op is out of reach: skip a 2-pixel
    # ring there (the output border and next to fill).
    edge = ~_interior(_interior(b != 255))
    assert near[~edge].all()
    assert (a != b).mean() < 0.2


def test_fused_image_matches_the_ops_one_by_one_on_a_smooth_image():
  yy, xx = np.mgrid[0:40, 0:50]
  image = np.stack([2 * yy + 40, 3 * xx + 20, yy + xx + 60], -1)
  example = {'image': image.astype(np.uint8),
             'labels': np.zeros((40, 50), np.uint8)}
  spec = 'scale(1.0, 2.0)|crop(36, 44)|flip_lr|rotate(10)'
  for k in range(4):
    a = _apply(augment.build(spec), example, _seed(k))
    b = _apply(augment.build(spec, fuse=False), example, _seed(k))
    inside = _interior(a['labels'] == 0)  # Away from the filled corners.
    diff = np.abs(a['image'].astype(int) - b['image'].astype(int))[inside]
    # Interpolated once instead of twice: a level or two of rounding apart.
    assert diff.max() <= 3, diff.max()
    np.testing.assert_array_equal(a['image'][a['labels'] == 255],
                                  np.broadcast_to(PAD_COLOR, (
                                      (a['labels'] == 255).sum(), 3)))


@pytest.mark.parametrize('spec', ['resize(30, 40)|flip_lr(1.0)',
                                  'resize(30, 40)|crop(30, 40)'])
def test_fused_shrinking_run_antialiases_as_pil(spec):
  # PIL's bilinear resize (an independent implementation) filters over the
  # whole footprint when shrinking: a 1-pixel checkerboard halved becomes
  # flat grey. Bilinear sampling alone would keep a moire of 0s and 255s
  # (as the fused warp did before it prefiltered).
  from PIL import Image
  board = ((np.indices((60, 80)).sum(0) % 2) * 255).astype(np.uint8)
  rng = np.random.default_rng(0)
  image = np.stack([board, 255 - board,
                    rng.integers(0, 256, (60, 80))], -1).astype(np.uint8)
  example = {'image': image, 'labels': np.zeros((60, 80), np.uint8)}
  reference = np.asarray(Image.fromarray(image).resize((40, 30),
                                                       Image.BILINEAR))
  if 'flip' in spec:
    reference = reference[:, ::-1]
  out = _apply(augment.build(spec), example)['image'].astype(int)
  plain = _apply(augment.build(spec, fuse=False), example)['image']
  diff = np.abs(out - reference.astype(int))
  # Interior: PIL and TF differ in how the filter meets the border.
  assert diff[2:-2, 2:-2].max() <= 3, diff[2:-2, 2:-2].max()
  assert np.abs(out[..., :2] - 127.5).max() < 30  # No checkerboard left.
  np.testing.assert_allclose(out, plain, atol=2)


def test_fused_rotation_and_shrink_removes_the_checkerboard():
  board = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)
  example = {'image': np.repeat(board[..., None], 3, -1),
             'labels': np.zeros((64, 64), np.uint8)}
  spec = 'resize(32, 32)|rotate(30)|crop(32, 32)'
  out = _apply(augment.build(spec), example, _seed(2))
  inside = _interior(_interior(out['labels'] == 0))
  grey = out['image'][..., 0].astype(int)[inside]
  assert np.abs(grey - 127.5).max() < 40, np.abs(grey - 127.5).max()


def test_fused_shrink_of_a_crop_filters_only_the_box_it_reads():
  # A small crop of a shrunk large image: the prefilter resizes only the box
  # the crop reads, which must give the same pixels as resizing the whole
  # image (PIL, an independent resize) and cropping, away from the box's
  # border (the filter sees a margin there).
  from PIL import Image
  rng = np.random.default_rng(3)
  image = rng.integers(0, 256, (120, 160, 3)).astype(np.uint8)
  example = {'image': image, 'labels': np.zeros((120, 160), np.uint8)}
  out = _apply(augment.build('resize(60, 80)|crop(20, 24)'), example,
               _seed(5))
  whole = np.asarray(Image.fromarray(image).resize((80, 60), Image.BILINEAR))
  # Where the crop landed: the window whose pixels match best.
  errors = {(y, x): np.abs(whole[y:y + 20, x:x + 24].astype(int) -
                           out['image'].astype(int)).mean()
            for y in range(41) for x in range(57)}
  (y, x), best = min(errors.items(), key=lambda kv: kv[1])
  diff = np.abs(whole[y:y + 20, x:x + 24].astype(int) -
                out['image'].astype(int))
  interior = diff[1:-1, 1:-1] if y and x else diff[2:-2, 2:-2]
  assert interior.max() <= 3, (interior.max(), best)
