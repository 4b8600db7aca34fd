"""Input pipeline benchmark: augmentation throughput and train-step stalls.

`python -m segjax.bench input [--crop 512 1024] [--batch 2] ...` prints one
JSON line with:
  augment_img_per_s_1_thread   augmented crops/s with tf.data on one thread
                               (the "per core" figure)
  augment_img_per_s            the same on all threads (`--threads`, default
                               all cores)
  step_s, wait_s, wait_fraction
                               a jitted train step fed by the pipeline, both
                               running at once: time per step, time per step
                               spent waiting for the next batch, and their
                               ratio (0 = the input never stalls the step)

Source images: `--source synthetic` (default) is a set of 1024x2048 images
(Cityscapes' size) of smooth colour fields with a label map of blocks,
decoded and held in memory as the pipeline's cache holds them;
`--source camvid --manual-dir DIR` reads CamVid through the real pipeline
(360x480, resized once to `--camvid-size`, 720x960 by default; `0 0`
keeps 360x480). `--preprocess` is applied once per source image too, as
`config.data.train_preprocess` is before the trainer's cache.
Augmentation: `--augment`, default scale 0.5-2.0, crop, flip, rotate 10
degrees and colour jitter, which is the most expensive recipe segjax ships.
"""

import argparse
import json
import os
import time

import numpy as np

from segjax.data import augment
from segjax.data.tf_host import tf

DEFAULT_AUGMENT = ('scale(0.5, 2.0)|crop({h}, {w})|flip_lr|rotate(10)|'
                   'jitter(0.2, 0.2, 0.2, 0.02)')


def _synthetic_examples(num, height=1024, width=2048, seed=0):
  """`num` decoded examples: smooth images, labels of 64x64 blocks (19 ids)."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
  images, labels = [], []
  for _ in range(num):
    a, b, c = rng.uniform(0.002, 0.02, 3)
    image = np.stack([np.sin(a * yy + b * xx), np.cos(b * yy - c * xx),
                      np.sin(c * (xx + yy))], -1)
    images.append(((image + 1) * 127.5).astype(np.uint8))
    blocks = rng.integers(0, 19, (height // 64, width // 64), dtype=np.uint8)
    labels.append(np.kron(blocks, np.ones((64, 64), np.uint8)))
  return {'image': np.stack(images), 'labels': np.stack(labels)}


def _source(args):
  """An infinite tf.data.Dataset of (key, decoded example)."""
  if args.source == 'camvid':
    from segjax.data import datasets  # pylint: disable=g-import-not-at-top
    builder = datasets.get_builder('camvid', args.data_dir,
                                   manual_dir=args.manual_dir)
    spec = datasets.get_spec('camvid')
    ds = builder.as_dataset(split='train').map(spec.standardize)
    if any(args.camvid_size):
      ds = ds.map(augment.build_deterministic(
          'resize({}, {})'.format(*args.camvid_size), '--camvid-size'))
  else:
    ds = tf.data.Dataset.from_tensor_slices(_synthetic_examples(args.images))
  prepare = augment.build_deterministic(args.preprocess, '--preprocess')
  if prepare is not None:
    ds = ds.map(prepare)
  # Everything above runs once per source image, as before the trainer's
  # cache; `--augment` runs on every visit.
  return ds.cache().repeat().enumerate()


def _dataset(args, threads):
  transform = augment.build(args.augment, fuse=not args.no_fuse)

  def one(k, example):
    seed = tf.stack([tf.constant(0, tf.int64), k])
    out = transform(example, seed)
    return {'image': out['image'], 'labels': tf.cast(out['labels'], tf.int32)}

  ds = _source(args).map(one, num_parallel_calls=threads)
  ds = ds.batch(args.batch, drop_remainder=True).prefetch(2)
  options = tf.data.Options()
  options.threading.private_threadpool_size = threads
  options.threading.max_intra_op_parallelism = 1
  return ds.with_options(options)


def augment_rate(args, threads, seconds):
  """Augmented images per second over `seconds`, after a warm-up."""
  it = iter(_dataset(args, threads))
  for _ in range(3):
    next(it)
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    next(it)
    count += args.batch
  return count / (time.perf_counter() - start)


def step_wait(args):
  """(seconds per step, seconds waiting for input per step) of a train step
  fed by the pipeline, both running."""
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  from segjax import losses, models  # pylint: disable=g-import-not-at-top
  from segjax.parallel import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  from segjax.training import state as state_lib  # pylint: disable=g-import-not-at-top
  from segjax.training import steps as steps_lib  # pylint: disable=g-import-not-at-top

  model = models.build(args.model, num_classes=19, backbone=args.backbone)
  tx = optax.adamw(1e-3)
  loss_fn = losses.build_loss({'cross_entropy': 1.0}, ignore_index=255)
  mesh = sharding_lib.make_mesh()
  state, _ = state_lib.create_train_state(
      model, tx, tuple(args.crop) + (3,), jax.random.PRNGKey(0), mesh)
  step = jax.jit(steps_lib.make_train_step(model, tx, loss_fn, lambda s: 0.0),
                 donate_argnums=0)
  it = _dataset(args, args.threads).as_numpy_iterator()
  state, metrics = step(state, next(it))  # Compile.
  jax.block_until_ready(metrics)
  wait = 0.0
  start = time.perf_counter()
  for _ in range(args.steps):
    t = time.perf_counter()
    batch = next(it)
    wait += time.perf_counter() - t
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
  total = time.perf_counter() - start
  return total / args.steps, wait / args.steps


def main(argv):
  parser = argparse.ArgumentParser(prog='python -m segjax.bench input')
  parser.add_argument('--crop', type=int, nargs=2, default=(512, 1024))
  parser.add_argument('--augment', default=None,
                      help='augmentation spec; default: ' + DEFAULT_AUGMENT)
  parser.add_argument('--no-fuse', action='store_true',
                      help='apply geometric ops one by one (for comparison)')
  parser.add_argument('--source', choices=('synthetic', 'camvid'),
                      default='synthetic')
  parser.add_argument('--manual-dir', default=None)
  parser.add_argument('--camvid-size', type=int, nargs=2, default=(720, 960),
                      help='CamVid images are resized to this once (0 0: '
                      'their own 360x480)')
  parser.add_argument('--preprocess', default='',
                      help='seedless spec applied once per source image, '
                      'as config.data.train_preprocess')
  parser.add_argument('--data-dir', default=None)
  parser.add_argument('--images', type=int, default=8,
                      help='distinct synthetic images')
  parser.add_argument('--batch', type=int, default=2)
  parser.add_argument('--threads', type=int, default=os.cpu_count())
  parser.add_argument('--seconds', type=float, default=10.0)
  parser.add_argument('--model', default='deeplabv3plus')
  parser.add_argument('--backbone', default='resnet18')
  parser.add_argument('--steps', type=int, default=5,
                      help='train steps timed (0 skips the stall test)')
  args = parser.parse_args(argv)
  h, w = args.crop
  args.augment = args.augment or DEFAULT_AUGMENT.format(h=h, w=w)
  result = {
      'benchmark': 'input', 'source': args.source, 'crop': [h, w],
      'preprocess': args.preprocess, 'augment': args.augment,
      'fused': not args.no_fuse, 'batch': args.batch, 'threads': args.threads,
      'cpu_count': os.cpu_count(),
      'augment_img_per_s_1_thread': augment_rate(args, 1, args.seconds),
      'augment_img_per_s': augment_rate(args, args.threads, args.seconds),
  }
  if args.steps:
    step_s, wait_s = step_wait(args)
    result.update({'model': f'{args.model}/{args.backbone}',
                   'step_s': step_s, 'wait_s': wait_s,
                   'wait_fraction': wait_s / step_s})
  print(json.dumps(result), flush=True)
  return 0
