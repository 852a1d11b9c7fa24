#!/usr/bin/env python3
"""Converts PyTorch weights to safetensors for weakalign (needs torch; run by users, not CI).

  python3 tools/convert_checkpoint.py IN.pth[.tar] OUT.safetensors

- The authors' checkpoints (`cnngeo_*.pth.tar`, `weakalign_*.pth.tar`, `best_*.pth.tar`) are
  pickles holding {'state_dict', 'args', 'optimizer', ...}: only `state_dict` is written, keys
  unchanged (`FeatureExtraction.model.*`, legacy `FeatureExtraction.vgg.*`, `FeatureRegression.*`,
  `FeatureRegression2.*`). weakalign's key map (src/weights.rs) does the renaming and reports
  any key it does not expect.
- torchvision checkpoints (`vgg16-397923af.pth`, `resnet101-5d3b4d8f.pth`) are plain state dicts.

Tensors are made contiguous (some checkpoints store transposed views).
"""
import sys

import torch
from safetensors.torch import save_file


def main(src, dst):
    obj = torch.load(src, map_location="cpu", weights_only=False)
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    tensors = {k: v.detach().contiguous() for k, v in state.items() if torch.is_tensor(v)}
    skipped = [k for k, v in state.items() if not torch.is_tensor(v)]
    save_file(tensors, dst)
    print(f"wrote {dst}: {len(tensors)} tensors" + (f", skipped non-tensors {skipped}" if skipped else ""))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
