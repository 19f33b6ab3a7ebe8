"""Training: the LightningModule, and fit/evaluate of one config into a run directory."""
