#!/usr/bin/env python3
"""Test trial: Auptimizer's Examples/compression/mnist_pytorch/mnist_amc.py, same shape and calls; MNIST and
torch.hub's MobileNetV2 replaced by scikit-learn's digits (upsampled, RGB) and a small MobileNetV2."""
import argparse
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torch.optim.lr_scheduler import StepLR

import aup
from aup.compression.torch.zoo import load_digits_tensors, mobilenetv2_small


class LogSoftmax(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return F.log_softmax(self.net(x), dim=1)


def test(model, device, test_loader):
    model.eval()
    test_loss = 0
    correct = 0
    with torch.no_grad():
        for data, target in test_loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction='sum').item()
            pred = output.argmax(dim=1, keepdim=True)
            correct += pred.eq(target.view_as(pred)).sum().item()
    test_loss /= len(test_loader.dataset)
    print('Test set: Average loss: {:.4f}, Accuracy: {}/{}'.format(test_loss, correct, len(test_loader.dataset)))
    return test_loss, correct / len(test_loader.dataset)


def main(config):
    parser = argparse.ArgumentParser(description='PyTorch MNIST Example')
    parser.add_argument('--batch-size', type=int, default=64)
    parser.add_argument('--lr', type=float, default=1.0)
    parser.add_argument('--gamma', type=float, default=0.7)
    parser.add_argument('--seed', type=int, default=1)
    args, _ = parser.parse_known_args()
    torch.manual_seed(args.seed)
    device = torch.device("cpu")
    data = load_digits_tensors()
    rgb = lambda x: F.interpolate(x, size=28).repeat(1, 3, 1, 1)  # noqa: E731
    dataset1 = torch.utils.data.TensorDataset(rgb(data.x_train), data.y_train)
    dataset2 = torch.utils.data.TensorDataset(rgb(data.x_test), data.y_test)
    train_loader = torch.utils.data.DataLoader(dataset1, batch_size=args.batch_size)
    test_loader = torch.utils.data.DataLoader(dataset2, batch_size=args.batch_size)

    model = LogSoftmax(mobilenetv2_small()).to(device)  # torch.hub.load(..., 'mobilenet_v2', pretrained=True)
    optimizer = optim.Adadelta(model.parameters(), lr=args.lr)
    scheduler = StepLR(optimizer, step_size=1, gamma=args.gamma)
    _, test_acc = test(model, device, test_loader)

    def evaluator(val_loader, model):
        _, test_acc = test(model, device, val_loader)
        return test_acc

    compressor = aup.compression.create_compressor(
        model, config, evaluator=evaluator, val_loader=test_loader,
        flops_ratio=0.5, model_type="mobilenetv2", n_calibration_batches=1,
        n_points_per_layer=1, warmup=1, hidden1=32, hidden2=32,
        train_episode=1, max_episode_length=1)
    compressor.compress()

    flops, _, _ = compressor.count_flops_params((1, 3, 28, 28))
    print("test_acc={} flops={}".format(test_acc, flops))

    if "save_model" in config and config["save_model"]:
        compressor.export_model(
            model_path="mnist_compressed.pth",
            mask_path="mnist_compressed_mask.pth",
            save_best_only=True,
            folder_name=config["folder_name"])

    aup.print_result((test_acc - 1.) / np.log(flops))


if __name__ == '__main__':
    config = aup.BasicConfig().load(sys.argv[1])
    main(config)
