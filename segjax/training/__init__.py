"""Training: state, sharded steps, checkpoints and the train/eval loop.

The entry point is `segjax.training.train.train_and_evaluate(config, workdir)`
(run from the command line by `python -m segjax.main`).
"""
