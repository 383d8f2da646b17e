"""Test trial shaped like Auptimizer's compression examples: the compressor is a local of ``main()``
and the script never exports, so it is gone when the trial ends. AUP_TEST_SIZE_CASE:
``"none"`` creates no aup compressor at all; ``"broken"`` leaves a compressor that cannot be measured."""
import os
import sys

import torch
from torch import nn

import aup


def main(config):
    case = os.environ.get("AUP_TEST_SIZE_CASE", "")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    if case != "none":
        compressor = aup.compression.create_compressor(model, config)
        compressor.compress()
        model(torch.zeros(2, 1, 8, 8))
        if case == "broken":
            compressor.model = None  # nothing left to measure
    aup.print_result(0.5)


if __name__ == "__main__":
    main(aup.BasicConfig().load(sys.argv[1]))
