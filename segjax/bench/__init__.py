"""Benchmarks: `python -m segjax.bench <what> [options]`, one JSON line each.

Speed targets live here, never in timed tests. Each benchmark runs segjax and
its reference points (NumPy, and the PyTorch peers when their virtual
environment exists, see ../shared/bench/README.md) side by side in one
process or one run, because absolute times on shared machines drift.

  metrics   confusion matrix of [B, H, W] label maps (segjax/bench/metrics.py)
  models    parameters and forward FLOPs of the model zoo (models.py)
  input     augmentation throughput and train-step input stalls (input.py)
  latency   batch-1 inference latency of an experiment's serving function,
            jitted and exported (latency.py)
  train_step  train-step speed on synthetic arrays vs the machine's matrix
            product and (--peer) the SMP peer (train_step.py)
  memory    per-device memory of a train step under data / FSDP / spatial
            meshes, compiled but not run (memory.py)
"""
