"""Drop MoMo into a plain PyTorch training loop and watch its adaptive step size.

Run: python examples/quickstart.py
"""

import torch
from torch import nn

import tunefree

torch.manual_seed(0)
x = torch.randn(512, 20)
y = (x[:, :5].sum(dim=1) > 0).long()
model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 2))
optimizer = tunefree.MoMo(model.parameters(), lr=1.0)  # lr caps the adaptive step; 1.0 is the default

for step in range(1, 201):
    batch = torch.randint(0, 512, (32,))
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
    loss.backward()
    optimizer.step(loss=loss)  # MoMo needs the loss: step(closure), step(loss=...) or observe_loss()
    if step % 25 == 0:
        print(f"step {step:3d}  loss {loss.item():.4f}  tau {optimizer.stats['tau'].item():.4f}")
