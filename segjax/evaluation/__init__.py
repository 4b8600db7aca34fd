"""Evaluation shared by the trainer and `python -m segjax.evaluate`.

  modes.py  jitted inference modes: whole image, sliding window,
            multi-scale and flip averaging
  loop.py   one pass over a split: sharded, padded batches masked,
            task statistics summed, scored once
"""
