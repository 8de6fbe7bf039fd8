"""Helpers shared by the test modules: generated data, composed configs, the CLI."""
