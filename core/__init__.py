"""The ground layer: configs, registries and errors. Imports nothing of the project."""
