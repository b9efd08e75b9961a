"""Evaluation: metrics with bootstrap confidence intervals, threshold sweeps and operating points."""
