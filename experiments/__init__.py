"""Experiments: one small module each, runnable with `python -m experiments.<name>`."""
