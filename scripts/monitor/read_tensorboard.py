#!/usr/bin/env python3
"""Read a TensorBoard log folder with TensorBoard's own reader and print its scalars.

    python3 scripts/monitor/read_tensorboard.py LOGDIR [--expect TAG STEP VALUE]...

Checks that dspp's TensorBoard monitor (core/monitor/tensorboard.cpp) writes files TensorBoard
reads: EventAccumulator parses the TFRecord framing (with its CRC checks) and the Event
protobufs. Prints one line per scalar, "tag step value". With --expect, exits 1 unless every
expected (tag, step, value) is there (values compared as float32). Needs `pip install tensorboard`
(only this script; dspp itself does not use Python).
"""
import argparse
import struct
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("logdir")
    ap.add_argument("--expect", nargs=3, action="append", default=[], metavar=("TAG", "STEP", "VALUE"))
    a = ap.parse_args()
    acc = EventAccumulator(a.logdir, size_guidance={"scalars": 0})
    acc.Reload()
    got = {}
    for tag in sorted(acc.Tags()["scalars"]):
        for e in acc.Scalars(tag):
            print(f"{tag} {e.step} {e.value!r}")
            got.setdefault(tag, {})[e.step] = e.value
    missing = []
    for tag, step, value in a.expect:
        v = got.get(tag, {}).get(int(step))
        if v is None or f32(v) != f32(float(value)):
            missing.append(f"{tag} {step} {value} (read {v})")
    if missing:
        print("not as expected:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 1
    if a.expect:
        print(f"all {len(a.expect)} expected scalars read back")
    return 0


if __name__ == "__main__":
    sys.exit(main())
