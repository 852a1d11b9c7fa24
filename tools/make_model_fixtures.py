#!/usr/bin/env python3
"""Writes tests/fixtures/models.safetensors: PyTorch outputs of every backbone, both regression
heads and the two-stage model, for tests/models.rs (run by hand, never by CI).

Weights are not stored. Every parameter comes from `weight_values(key, shape, index)`, a formula of
the tensor's position in the state dict that tests/models.rs evaluates identically; the fixture
stores each model's key list (metadata, JSON) so the Rust side can write a torchvision-named (or
weakalign-named) safetensors file with the same values and load it through its real importer.
EfficientNet-Lite0 is checked with its real ImageNet weights (`make weights`), so its fixture holds
logits and features of the real network.

Models mirror the references: torchvision vgg16().features[:24] and resnet101 children[:7]
(weakalign FeatureExtraction), weakalign FeatureRegression (conv 7, BN, ReLU, conv 5, BN, ReLU,
linear) and TwoStageCNNGeometric (affine warp of the source with align_corners=True).
EfficientNet-Lite0 is written from the architecture (TF SAME padding, ReLU6, BN eps 1e-3).

usage: python3 tools/make_model_fixtures.py [path/to/efficientnet-lite0.pth]
"""
import json
import math
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file

sys.path.insert(0, __import__('os').path.dirname(__file__))
from make_golden import correlation, l2norm  # noqa: E402  (one definition of the reference ops)

torch.set_grad_enabled(False)


def wave(n, seed):
    i = np.arange(n, dtype=np.float64)
    return np.sin(0.7071 * i + seed) * np.cos(0.1234 * i)


def weight_values(key, shape, index):
    """Deterministic parameter values (tests/models.rs: `weight_values`)."""
    n = int(np.prod(shape)) if len(shape) else 1
    w = wave(n, 0.37 * index)
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "running_var":
        v = 1.0 + 0.5 * np.abs(w)
    elif leaf == "running_mean" or leaf == "bias":
        v = 0.1 * w
    elif leaf == "weight" and len(shape) == 1:  # BatchNorm gamma
        v = 0.5 + 0.1 * w
    else:  # conv / linear weights: He-like scale (wave has std ≈ 0.5)
        fan_in = int(np.prod(shape[1:]))
        v = 2.0 * math.sqrt(2.0 / fan_in) * w
    return torch.tensor(v.astype(np.float32).reshape(shape))


def fill(module):
    """Fills every state-dict entry except num_batches_tracked; returns the key list."""
    sd = module.state_dict()
    keys = [k for k in sd if not k.endswith("num_batches_tracked")]
    new = {k: weight_values(k, list(sd[k].shape), i) for i, k in enumerate(keys)}
    module.load_state_dict(new, strict=False)
    return [[k, list(sd[k].shape)] for k in keys]


def image(shape, seed):
    return torch.tensor(wave(int(np.prod(shape)), seed).astype(np.float32).reshape(shape))


# --- EfficientNet-Lite0 ------------------------------------------------------------------------
class SameConv(nn.Conv2d):
    def forward(self, x):
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        s = self.stride[0]
        ph = max((math.ceil(ih / s) - 1) * s + kh - ih, 0)
        pw = max((math.ceil(iw / s) - 1) * s + kw - iw, 0)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, None, self.stride, 0, 1, self.groups)


class MBConv(nn.Module):
    def __init__(self, k, s, e, cin, cout):
        super().__init__()
        mid = cin * e
        if e != 1:
            self._expand_conv = SameConv(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=1e-3)
        self.e = e
        self._depthwise_conv = SameConv(mid, mid, k, stride=s, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=1e-3)
        self._project_conv = SameConv(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=1e-3)
        self.skip = s == 1 and cin == cout

    def forward(self, x):
        y = x
        if self.e != 1:
            y = F.relu6(self._bn0(self._expand_conv(y)))
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]


class EfficientNetLite0(nn.Module):
    def __init__(self):
        super().__init__()
        self._conv_stem = SameConv(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=1e-3)
        blocks = []
        for r, k, s, e, cin, cout in STAGES:
            for i in range(r):
                blocks.append(MBConv(k, s if i == 0 else 1, e, cin if i == 0 else cout, cout))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=1e-3)
        self._fc = nn.Linear(1280, 1000)

    def features(self, x, upto=11):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for b in self._blocks[:upto]:
            x = b(x)
        return x

    def forward(self, x):
        x = self.features(x, 16)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


# --- weakalign models --------------------------------------------------------------------------
class FeatureRegression(nn.Module):
    def __init__(self, out, grid=15):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(grid * grid, 128, 7), nn.BatchNorm2d(128), nn.ReLU(),
                                  nn.Conv2d(128, 64, 5), nn.BatchNorm2d(64), nn.ReLU())
        self.linear = nn.Linear(64 * 5 * 5, out)

    def forward(self, x):
        return self.linear(self.conv(x).reshape(x.shape[0], -1))


class FeatureExtraction(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)


class TwoStage(nn.Module):
    def __init__(self, fe):
        super().__init__()
        self.FeatureExtraction = FeatureExtraction(fe)
        self.FeatureRegression = FeatureRegression(6)
        self.FeatureRegression2 = FeatureRegression(18)

    def corr(self, a, b):
        return l2norm(F.relu(correlation(l2norm(a), l2norm(b))))

    def forward(self, src, tgt):
        f_src, f_tgt = self.FeatureExtraction(src), self.FeatureExtraction(tgt)
        theta_aff = self.FeatureRegression(self.corr(f_src, f_tgt))
        grid = F.affine_grid(theta_aff.view(-1, 2, 3), src.shape, align_corners=True)
        warped = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        theta_tps = self.FeatureRegression2(self.corr(self.FeatureExtraction(warped), f_tgt))
        return theta_aff, theta_tps


def vgg_fe():
    return nn.Sequential(*list(torchvision.models.vgg16().features.children())[:24])


def resnet_fe():
    r = torchvision.models.resnet101()
    return nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1, r.layer2, r.layer3)


def main():
    tensors, meta = {}, {}

    def put(name, t):
        tensors[name] = t.detach().contiguous().to(torch.float32)

    # Backbones with formula weights in torchvision layout, small inputs.
    vgg = torchvision.models.vgg16().eval()
    meta["vgg16.keys"] = json.dumps(fill(vgg))
    x = image([1, 3, 48, 48], 0.4)
    put("vgg16.output", vgg.features[:24](x))
    res = torchvision.models.resnet101().eval()
    meta["resnet101.keys"] = json.dumps(fill(res))
    x = image([1, 3, 48, 48], 0.6)
    put("resnet101.output", nn.Sequential(*list(res.children())[:7])(x))

    # Regression heads on a 15×15 correlation.
    for name, out in [("regression_affine", 6), ("regression_tps", 18)]:
        head = FeatureRegression(out).eval()
        meta[f"{name}.keys"] = json.dumps(fill(head))
        put(f"{name}.output", head(image([2, 225, 15, 15], 1.1 if out == 6 else 1.3)))

    # The two-stage model with a VGG backbone at 240×240, weakalign key names.
    model = TwoStage(vgg_fe()).eval()
    meta["two_stage_vgg16.keys"] = json.dumps(fill(model))
    src, tgt = image([1, 3, 240, 240], 0.2), image([1, 3, 240, 240], 0.9)
    theta_aff, theta_tps = model(src, tgt)
    put("two_stage_vgg16.theta_aff", theta_aff)
    put("two_stage_vgg16.theta_tps", theta_tps)

    # Key list of an official ResNet-101 two-stage checkpoint (for the key-map test).
    meta["two_stage_resnet101.keys"] = json.dumps(
        [[k, list(v.shape)] for k, v in TwoStage(resnet_fe()).state_dict().items()])

    # EfficientNet-Lite0 with its real weights.
    if len(sys.argv) > 1:
        net = EfficientNetLite0().eval()
        sd = torch.load(sys.argv[1], map_location="cpu")
        missing, unexpected = net.load_state_dict(sd, strict=True), None
        x = image([1, 3, 224, 224], 0.8)
        put("efficientnet_lite0.logits", net(x))
        put("efficientnet_lite0.features", net.features(image([1, 3, 64, 64], 0.5)))
        meta["efficientnet_lite0.source"] = sys.argv[1].rsplit("/", 1)[-1]

    meta["torch"] = torch.__version__
    meta["torchvision"] = torchvision.__version__
    path = "tests/fixtures/models.safetensors"
    save_file(tensors, path, metadata=meta)
    import os
    print(f"wrote {path}: {len(tensors)} tensors, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
