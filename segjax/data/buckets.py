"""Size buckets: the shapes that images of mixed sizes are padded up to.

Every distinct input shape compiles its own XLA program. Evaluation
(`segjax.data.pipeline.eval_dataset`) and inference
(`segjax.evaluation.modes`) pad each image at the bottom / right up to a
bucket, so a data set of mixed sizes compiles at most len(BUCKETS)**2
programs, usually far fewer. Pure Python: the TensorFlow input side and the
JAX inference side both import it.
"""

# Bucket sides in pixels; multiples of the default models' output stride.
BUCKETS = (256, 512, 768, 1024, 1536, 2048)
# A side beyond the largest bucket is rounded up to a multiple of this.
MULTIPLE = 32


def bucket_side(n, buckets=BUCKETS, multiple=MULTIPLE):
  """The smallest bucket >= n, or n rounded up to a multiple of `multiple`
  past the largest bucket (ints)."""
  fitting = [b for b in buckets if b >= n]
  return min(fitting) if fitting else -(-n // multiple) * multiple


def bucket_shape(height, width, buckets=BUCKETS, multiple=MULTIPLE):
  """(H, W) >= (height, width) to pad an image to (see `bucket_side`).

  Raises:
    ValueError naming a non-positive side, bucket or multiple.
  """
  if not buckets or any(b <= 0 for b in buckets):
    raise ValueError(f'buckets must be non-empty and positive, got {buckets!r}')
  if multiple <= 0:
    raise ValueError(f'multiple must be positive, got {multiple!r}')
  sides = []
  for name, n in (('height', height), ('width', width)):
    if n <= 0:
      raise ValueError(f'{name} must be positive, got {n!r}')
    sides.append(bucket_side(int(n), buckets, multiple))
  return tuple(sides)
