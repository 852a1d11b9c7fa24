#!/usr/bin/env python3
"""The authors' model in `make bench`: their TwoStageCNNGeometric and weak loss (WeakInlierCount +
TwoStageWeakInlierCount, as train_weak.py combines them), timed as tools/bench_pytorch.py times
our replica: forward, and one weak training step (forward, loss, backward, Adam), medians of
BENCH_RUNS runs (default 5) after one warm-up, batch 8 × 3 × 240 × 240, random weights.

Needs WEAKALIGN_REF = a checkout of github.com/ignacio-rocco/weakalign (not part of this project;
nothing of it is copied here), torch, torchvision, numpy and scipy. Their code asks torchvision
for ImageNet weights (`pretrained=True`); no download works here and timing does not depend on
the weights, so the constructors are called without weights; see also the one adaptation in main(). Their backbones are VGG-16 and
ResNet-101 (no EfficientNet). Writes BENCH_OUT (default target/bench/authors.json).
"""
import os
import sys

import torch
import torchvision

sys.path.insert(0, os.path.dirname(__file__))
from bench_pytorch import report, timed  # noqa: E402  (same timing and report as the replica)

torch.set_grad_enabled(True)  # the replica's helpers switch autograd off when imported

REF = os.environ.get("WEAKALIGN_REF", "")
B, S = int(os.environ.get("BENCH_BATCH", "8")), 240
OUT = os.environ.get("BENCH_OUT", "target/bench/authors.json")


def without_weights(build):
    """torchvision constructor that ignores `pretrained` (no download here)."""
    return lambda pretrained=False, **kw: build(weights=None, **kw)


def main():
    if not REF or not os.path.isdir(os.path.join(REF, "model")):
        print("WEAKALIGN_REF is not a checkout of ignacio-rocco/weakalign; skipping the authors' model",
              file=sys.stderr)
        return
    torchvision.models.vgg16 = without_weights(torchvision.models.vgg16)
    torchvision.models.resnet101 = without_weights(torchvision.models.resnet101)
    sys.path.insert(0, REF)
    import model.cnn_geometric_model as ref  # noqa: E402
    from model.loss import TwoStageWeakInlierCount, WeakInlierCount  # noqa: E402

    # Their FeatureRegression `view`s the conv output; on PyTorch >= 2 the convolution of their
    # transposed correlation comes back channels-last and `view` fails. A contiguous copy of the
    # correlation ([8, 225, 15, 15], negligible time) is the one adaptation.
    correlation = ref.FeatureCorrelation.forward
    ref.FeatureCorrelation.forward = lambda self, a, b: correlation(self, a, b).contiguous()
    TwoStageCNNGeometric = ref.TwoStageCNNGeometric

    torch.manual_seed(0)
    results = []
    for name, cnn in [("vgg16", "vgg"), ("resnet101", "resnet101")]:
        model = TwoStageCNNGeometric(use_cuda=False, return_correlation=True, train_fe=True,
                                     feature_extraction_cnn=cnn).eval()
        batch = {"source_image": torch.randn(B, 3, S, S), "target_image": torch.randn(B, 3, S, S)}
        with torch.no_grad():
            fwd, fwd_samples = timed(lambda: model(batch))
        print(f"{name}: authors' two-stage forward {fwd:.3f} s", file=sys.stderr)

        # train_weak.py's defaults (options.py): normalized inlier counts, no dilation, TPS
        # regularization 0.2, offset 227/210.
        loss_args = dict(use_cuda=False, normalize_inlier_count=True, dilation_filter=0,
                         tps_reg_factor=0.2)
        aff = WeakInlierCount(geometric_model="affine", **loss_args)
        comp = TwoStageWeakInlierCount(**loss_args)
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-8)

        def step():
            theta_aff, theta_aff_tps, corr_aff, _ = model(batch)
            score = aff(matches=corr_aff, theta=theta_aff) + comp(
                matches=corr_aff, theta_aff=theta_aff, theta_aff_tps=theta_aff_tps)
            loss = torch.mean(-score)
            opt.zero_grad()
            loss.backward()
            opt.step()

        train, train_samples = timed(step)
        print(f"{name}: authors' weak training step {train:.3f} s", file=sys.stderr)
        results.append({"backbone": name, "forward_s": fwd, "forward_samples": fwd_samples,
                        "train_step_s": train, "train_step_samples": train_samples})
    report(results, f"authors' code (PyTorch {torch.__version__} CPU)", OUT)

if __name__ == "__main__":
    main()
