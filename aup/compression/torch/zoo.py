"""Hand-written reference models and a tiny training loop for tests, examples and benchmarks.

No torchvision: the project must not depend on it, and the shrink / measure code should be tested
on the same architectural features that break real tools (residual adds with a downsample
shortcut, plain conv stacks, depthwise convs in inverted residuals).  Module names follow the
conventions users know from Auptimizer/NNI examples (``conv1``, ``bn1``, ``fc1``...) and, for
``resnet50``, torchvision's layout, so ``op_names`` written against those models work here.

``load_digits_tensors`` uses scikit-learn's bundled 8x8 digits (real data, shipped inside the
wheel, nothing downloaded at run time).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

__all__ = [
    "DigitsCNN", "resnet_small", "vgg_small", "mobilenetv2_small", "resnet50",
    "BasicBlock", "Bottleneck", "InvertedResidual", "ResNet",
    "DigitsData", "load_digits_tensors", "train_epoch", "evaluate",
]


# ----------------------------------------------------------------------------- digits CNN


class DigitsCNN(nn.Module):
    """Small CNN for 1x8x8 digits: conv-bn-relu x2, 2x2 max-pool, two fully connected layers."""

    def __init__(self, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(2 * width * 4 * 4, 64)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.pool(self.relu2(self.bn2(self.conv2(x))))
        x = torch.flatten(x, 1)
        return self.fc2(self.relu3(self.fc1(x)))


# ----------------------------------------------------------------------------- ResNets


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs and an identity or 1x1 downsample shortcut."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(*_conv_bn(inplanes, planes, 1, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """ResNet-50 bottleneck (torchvision v1.5 layout: the stride sits on the 3x3 conv)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        width = planes
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes * self.expansion:
            self.downsample = nn.Sequential(*_conv_bn(inplanes, planes * self.expansion, 1, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision-compatible ResNet skeleton (module names ``conv1``, ``layer1.0.conv1``, ``fc``)."""

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: list[int], num_classes: int = 1000,
                 in_channels: int = 3, base: int = 64, stem: str = "imagenet") -> None:
        super().__init__()
        self.inplanes = base
        if stem == "imagenet":  # 7x7/2 conv + 3x3/2 max-pool, for 224x224 inputs
            self.conv1 = nn.Conv2d(in_channels, base, 7, 2, 3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(3, 2, 1)
        else:  # 3x3/1 conv, no pool, for small inputs
            self.conv1 = nn.Conv2d(in_channels, base, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, base, layers[0], 1)
        self.layer2 = self._make_layer(block, base * 2, layers[1], 2)
        self.layer3 = self._make_layer(block, base * 4, layers[2], 2)
        self.layer4 = self._make_layer(block, base * 8, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(base * 8 * block.expansion, num_classes)

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int,
                    stride: int) -> nn.Sequential:
        layers = [block(self.inplanes, planes, stride)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet_small(num_classes: int = 10, in_channels: int = 3, base: int = 16) -> ResNet:
    """BasicBlock ResNet [1, 1, 1, 1] with a small stem, for 32x32 (or smaller) inputs."""
    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes, in_channels, base, stem="small")


def resnet50(num_classes: int = 1000) -> ResNet:
    """ResNet-50 ([3, 4, 6, 3] bottlenecks) with torchvision's layout: 25,557,032 parameters."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes)


# ----------------------------------------------------------------------------- VGG


class VGGSmall(nn.Module):
    """VGG-style plain conv stack (conv-bn-relu, max-pools) with a two-layer classifier."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3,
                 cfg: tuple[int | str, ...] = (16, "M", 32, "M", 64, 64, "M")) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.BatchNorm2d(int(v)), nn.ReLU(inplace=True)]
                cin = int(v)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(2)
        self.classifier = nn.Sequential(nn.Linear(cin * 4, 64), nn.ReLU(inplace=True), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def vgg_small(num_classes: int = 10, in_channels: int = 3) -> VGGSmall:
    """VGG-style model for 32x32 inputs (convs with biases, as in VGG)."""
    return VGGSmall(num_classes, in_channels)


# ----------------------------------------------------------------------------- MobileNetV2


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear project, residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [*_conv_bn(cin, hidden, 1), nn.ReLU6(inplace=True)]
        layers += [*_conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6(inplace=True),
                   *_conv_bn(hidden, cout, 1)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2Small(nn.Module):
    """A narrow MobileNetV2 (same block structure, fewer and thinner stages)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3,
                 setting: tuple[tuple[int, int, int, int], ...] = ((1, 8, 1, 1), (4, 12, 2, 2), (4, 16, 2, 2)),
                 stem: int = 8, last: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Sequential(*_conv_bn(in_channels, stem, 3, 1), nn.ReLU6(inplace=True))]
        cin = stem
        for t, c, n, s in setting:  # expansion, channels, repeats, first stride
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(nn.Sequential(*_conv_bn(cin, last, 1), nn.ReLU6(inplace=True)))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def mobilenetv2_small(num_classes: int = 10, in_channels: int = 3) -> MobileNetV2Small:
    """MobileNetV2-style model (inverted residuals with depthwise convs) for 32x32 inputs."""
    return MobileNetV2Small(num_classes, in_channels)


# ----------------------------------------------------------------------------- digits data and loops


class DigitsData(NamedTuple):
    x_train: torch.Tensor  # (N, 1, 8, 8) float32 in [0, 1]
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_digits_tensors(seed: int = 0, test_fraction: float = 0.25) -> DigitsData:
    """scikit-learn's 1,797 bundled 8x8 digits as tensors, split reproducibly by ``seed``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(len(y) * test_fraction))
    test, train = perm[:n_test], perm[n_test:]
    return DigitsData(x[train], y[train], x[test], y[test])


def train_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
                batch_size: int = 64, seed: int | None = None, callback=None, loss_hook=None) -> float:
    """One epoch of cross-entropy training over shuffled mini-batches; returns the mean loss.

    ``callback(model)`` runs after every optimizer step (e.g. a compressor's ``step()``);
    ``loss_hook(outputs, loss, inputs)`` returns the loss to minimise instead of the label loss
    (e.g. a compressor's ``distill_loss``).
    """
    model.train()
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    perm = torch.randperm(len(y), generator=gen)
    total = 0.0
    loss_fn = nn.CrossEntropyLoss()
    for start in range(0, len(y), batch_size):
        idx = perm[start:start + batch_size]
        optimizer.zero_grad()
        outputs = model(x[idx])
        loss = loss_fn(outputs, y[idx])
        if loss_hook is not None:
            loss = loss_hook(outputs, loss, x[idx])
        loss.backward()
        optimizer.step()
        if callback is not None:
            callback(model)
        total += float(loss.detach()) * len(idx)
    return total / len(y)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy in eval mode (the training flag is restored afterwards)."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(y), batch_size):
        correct += int((model(x[start:start + batch_size]).argmax(1) == y[start:start + batch_size]).sum())
    model.train(was_training)
    return correct / len(y) if len(y) else 0.0
