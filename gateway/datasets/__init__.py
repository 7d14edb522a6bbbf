"""Datasets at rest: envelope encryption, publishing, lifecycle, mounts for the engine."""
