#!/usr/bin/env python3
"""Writes the binary and generated files of the bad-input corpus under tests/bad_inputs/ (images,
CSV point lists, dataset folders with a broken .mat, .flo or pair list, damaged checkpoints).
The configuration files and tests/bad_inputs/cases.toml are written by hand; the test
`bad_input_corpus_is_refused_and_nothing_is_written` (tests/bad_input_corpus.rs) walks it all.

Every file is made here from nothing (no dataset image or weight is copied), deterministically.
Needs numpy, Pillow and scipy. usage: python3 tools/make_bad_inputs.py [tests/bad_inputs]
"""
import hashlib
import io
import json
import os
import struct
import sys

import numpy as np
import scipy.io
from PIL import Image


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


def png(w, h, seed=0):
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def gray_png(w, h, value):
    buf = io.BytesIO()
    Image.new("L", (w, h), value).save(buf, "PNG")
    return buf.getvalue()


def jpeg(w, h):
    x, y = np.meshgrid(np.linspace(0, 255, w), np.linspace(0, 255, h))
    rgb = np.stack([x, y, 255 - x], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def mat(points):
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"pts_coord": np.asarray(points, dtype=np.float64)}, format="5")
    return buf.getvalue()


def flo(w, h, magic=202021.25, cut=None):
    data = struct.pack("<fii", magic, w, h) + np.zeros((h, w, 2), np.float32).tobytes()
    return data if cut is None else data[:cut]


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def checkpoint(dir, config, model=b"not a burnpack record", corrupt=None, manifest=True):
    state = json.dumps({"step": 3, "best_pck": None, "best_step": None, "pck": None,
                        "config_hash": "0000000000000000", "metrics_lines": 0, "seed": 1},
                       indent=2)
    files = {"model.bpk": model, "optimizer.bin": b"not an optimizer record",
             "state.json": state.encode(), "config.toml": config.encode()}
    for name, data in files.items():
        write(os.path.join(dir, name), data)
    if manifest:
        sums = {name: sha256(data) for name, data in files.items()}
        if corrupt:
            sums[corrupt] = "0" * 64
        write(os.path.join(dir, "manifest.json"), json.dumps(sums, indent=2))


def main(root):
    # Images.
    full = jpeg(64, 48)
    write(f"{root}/images/truncated.jpg", full[: len(full) // 2])
    write(f"{root}/images/one_by_one.png", png(1, 1))
    write(f"{root}/images/not_an_image.png", "this is text, not a PNG\n")
    write(f"{root}/images/empty.jpg", b"")
    # Point lists for `align --points`.
    write(f"{root}/points/nan_inf.csv", "x,y\n10,12\nnan,inf\n")
    write(f"{root}/points/one_column.csv", "x,y\n10,12\n14\n")
    write(f"{root}/points/words.csv", "x,y\nten,twelve\n")
    # PF-WILLOW folders: a .mat that is not MATLAB, one whose pts_coord has 3 rows, keypoints
    # whose image is missing.
    willow = "pf-willow/PF-dataset/car(G)"
    write(f"{root}/willow_garbage_mat/{willow}/a.png", png(8, 8))
    write(f"{root}/willow_garbage_mat/{willow}/a.mat", "MATLAB? no.\n")
    write(f"{root}/willow_wrong_shape_mat/{willow}/a.png", png(8, 8))
    write(f"{root}/willow_wrong_shape_mat/{willow}/a.mat", mat(np.ones((3, 10))))
    write(f"{root}/willow_missing_image/{willow}/a.png", png(8, 8))
    write(f"{root}/willow_missing_image/{willow}/a.mat", mat(np.ones((2, 10)) * 4))
    write(f"{root}/willow_missing_image/{willow}/b.mat", mat(np.ones((2, 10)) * 5))
    # A PF-PASCAL pair list with a short keypoint list on line 3.
    write(f"{root}/pascal_bad_csv/pf-pascal/test_pairs_pf_pascal.csv",
          "source_image,target_image,class,XA,YA,XB,YB\n"
          "a.jpg,b.jpg,1,1;2,1;2,1;2,1;2\n"
          "a.jpg,b.jpg,1,1;2,1,1;2,1;2\n")
    # TSS pair folders: a flow with the wrong magic, a truncated flow, a bad flip_gt.txt.
    for case, flow1, flip in [("tss_bad_magic", flo(8, 8, magic=1.0), "0"),
                              ("tss_truncated_flo", flo(8, 8, cut=100), "0"),
                              ("tss_bad_flip", flo(8, 8), "maybe")]:
        pair = f"{root}/{case}/tss/FG3DCar/001_005"
        write(f"{pair}/image1.png", png(8, 8, 1))
        write(f"{pair}/image2.png", png(8, 8, 2))
        write(f"{pair}/mask1.png", gray_png(8, 8, 255))
        write(f"{pair}/mask2.png", gray_png(8, 8, 255))
        write(f"{pair}/flow1.flo", flow1)
        write(f"{pair}/flow2.flo", flo(8, 8))
        write(f"{pair}/flip_gt.txt", flip + "\n")
    # Checkpoints: no manifest, a checksum that does not match, a garbage model record, a
    # configuration with an unknown key.
    config = "[model]\nimage_size = 176\npretrained = false\n"
    checkpoint(f"{root}/checkpoints/no_manifest", config, manifest=False)
    checkpoint(f"{root}/checkpoints/checksum_mismatch", config, corrupt="model.bpk")
    checkpoint(f"{root}/checkpoints/garbage_model", config)
    checkpoint(f"{root}/checkpoints/bad_config", "[model]\nimage_sise = 176\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/bad_inputs")
