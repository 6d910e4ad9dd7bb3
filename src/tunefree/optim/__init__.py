"""tunefree optimizers (torch.optim.Optimizer subclasses) and the shared core they stand on."""
