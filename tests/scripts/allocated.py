"""Test trial for per-layer allocation: three convs, conv2 fragile (conv1 and conv3 have half their
filters near zero); prunes with the job config's compression keys and returns the outputs' agreement
with the dense model (1 - relative change)."""
import torch
from torch import nn

import aup


class OneFragile(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8 * 8 * 8, 10)
        with torch.no_grad():
            for conv in (self.conv1, self.conv3):
                conv.weight[4:] *= 1e-3
                conv.bias[4:] = 0

    def forward(self, x):
        for conv in (self.conv1, self.conv2, self.conv3):
            x = torch.relu(conv(x))
        return self.head(x.flatten(1))


def main():
    config = aup.BasicConfig().load(__import__("sys").argv[1])
    torch.set_num_threads(1)
    model = OneFragile()
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        dense = model(x)
    compressor = aup.create_compressor(model, config, dummy_input=x)
    compressor.compress()
    with torch.no_grad():
        change = float((model(x) - dense).norm() / dense.norm())
    aup.print_result(1.0 - change)


if __name__ == "__main__":
    main()
