"""Non-neural baselines behind the neural models' scoring contract: left-padded (B, L)
histories in, (B, V) scores out with the PAD column at -inf. Fitted on training events only."""
