"""Suite-wide settings."""

import torch

# The test models are tiny: intra-op threads only add contention on a small shared machine.
torch.set_num_threads(1)
