"""Hyper-parameter search with Optuna: the one layer that imports it.

``space`` parses and checks search-space files, ``pruning`` holds the Lightning callback
that reports validation metrics to a trial, ``storage`` opens Optuna's RDB storage and
recovers trials of dead workers, ``study`` runs workers and the ``recsys tune`` command,
``report`` writes the trials CSV, the plots and the best config.
"""
