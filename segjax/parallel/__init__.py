"""Devices and shardings: the mesh, batch and state shardings, host arrays
to global ones (JAX only)."""
