#!/usr/bin/env python3
"""Reads a run's TensorBoard event files with TensorBoard's own reader and prints what it found
(used by tests/experiments.rs; needs `pip install tensorboard`).

usage: python3 tools/read_tensorboard.py RUN_DIR
"""
import os
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2


def main(run):
    for split in ("train", "valid", "info"):
        path = os.path.join(run, split)
        acc = EventAccumulator(path, size_guidance={"scalars": 0, "images": 0, "tensors": 0})
        acc.Reload()
        tags = acc.Tags()
        for tag in tags.get("scalars", []):
            events = acc.Scalars(tag)
            steps = [e.step for e in events]
            assert steps == sorted(steps) and len(set(steps)) == len(steps), f"{tag}: steps {steps}"
            print(f"scalars {split}: {tag} ({len(events)} points, last {events[-1].value:.4f} at step {steps[-1]})")
        for tag in tags.get("images", []):
            img = acc.Images(tag)[-1]
            assert img.width > 0 and img.height > 0 and img.encoded_image_string[:4] == b"\x89PNG"
            print(f"images {split}: {tag} {img.width}x{img.height}")
        for tag in tags.get("tensors", []):
            ev = acc.Tensors(tag)[-1]
            meta = acc.SummaryMetadata(tag)
            if meta.plugin_data.plugin_name == "hparams":
                data = plugin_data_pb2.HParamsPluginData.FromString(meta.plugin_data.content)
                kind = data.WhichOneof("data")
                detail = ""
                if kind == "session_start_info":
                    detail = " " + ",".join(sorted(data.session_start_info.hparams.keys()))
                    detail += f" group {data.session_start_info.group_name}"
                if kind == "session_end_info":
                    detail = f" status {data.session_end_info.status}"
                if kind == "experiment":
                    detail = " metrics " + ",".join(m.name.tag for m in data.experiment.metric_infos)
                print(f"hparams: {kind}{detail}")
            elif meta.plugin_data.plugin_name == "text":
                print(f"text {split}: {tag} ({len(ev.tensor_proto.string_val[0])} bytes)")


if __name__ == "__main__":
    main(sys.argv[1])
