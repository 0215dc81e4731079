"""The ground layer: configs, registries, errors and the CPU kernels' pin. Imports nothing of the project."""
