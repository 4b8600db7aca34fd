"""segjax: JAX/Flax image segmentation (semantic, instance, panoptic).

Entry point: `python -m segjax.main` (segjax/main.py), whose logic is
`segjax.training.train.train_and_evaluate(config, workdir)`. Importing this
package imports nothing heavy; `segjax.metrics`, `segjax.losses` and
`segjax.models` never import TensorFlow.
"""

__version__ = '0.1.0'
