"""Quick CPU conv2d ratio check: R = torch time / convpool time, same process, alternating.

    PYTHONPATH=src python tools/cpu_conv_ratio.py [fb] [cl] [LAYER-SUBSTRING ...]

fp32, batch 8, torch.set_num_threads(2) (also while timing); `fb` adds forward+backward, `cl` uses channels_last
inputs. Prints one JSON line per layer: {"f": [torch_s, convpool_s], "fb": [...]} (best of 3
alternating torch.utils.benchmark medians). A shared machine is noisy: compare ratios, not times.
"""
import json
import sys

import torch
import torch.nn.functional as F
import torch.utils.benchmark as tb

import convpool
from convpool import _C

# name: (C_in, C_out, H=W, kernel, stride, padding)
LAYERS = {
    "r50 3x3 64@56": (64, 64, 56, 3, 1, 1),
    "r50 3x3 128@28": (128, 128, 28, 3, 1, 1),
    "r50 3x3 512@7": (512, 512, 7, 3, 1, 1),
    "vgg 3x3 64@224": (64, 64, 224, 3, 1, 1),
    "vgg 3x3 256@56": (256, 256, 56, 3, 1, 1),
    "vgg 3x3 512@14": (512, 512, 14, 3, 1, 1),
    "r50 1x1 256->64@56": (256, 64, 56, 1, 1, 0),
    "r50 1x1 64->256@56": (64, 256, 56, 1, 1, 0),
    "r50 3x3 256@14": (256, 256, 14, 3, 1, 1),
    "r50 1x1 1024->256@14": (1024, 256, 14, 1, 1, 0),
    "vgg 3x3 128@112": (128, 128, 112, 3, 1, 1),
    "vgg 3x3 512@28": (512, 512, 28, 3, 1, 1),
    "stem 7x7s2 3->64@224": (3, 64, 224, 7, 2, 3),
    "mbv2 1x1 32->192@56": (32, 192, 56, 1, 1, 0),
    "mbv2 1x1 192->32@56": (192, 32, 56, 1, 1, 0),
    "mbv2 1x1 96->576@14": (96, 576, 14, 1, 1, 0),
    "mbv2 1x1 576->96@14": (576, 96, 14, 1, 1, 0),
}


def main(argv):
    modes = ["f", "fb"] if "fb" in argv else ["f"]
    cl = "cl" in argv
    only = [a for a in argv if a not in ("fb", "cl")]
    torch.set_num_threads(2)
    n = 8
    for name, (ci, co, hw, k, s, p) in LAYERS.items():
        if only and not any(o in name for o in only):
            continue
        x = torch.randn(n, ci, hw, hw)
        w = torch.randn(co, ci, k, k) * 0.1
        b = torch.randn(co)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        result = dict(layer=name, channels_last=cl, isa=_C._cpu_isa())
        for mode in modes:
            stmts = {}
            for impl, fn in (("torch", F.conv2d), ("convpool", convpool.conv2d)):
                if mode == "f":
                    stmts[impl] = lambda fn=fn: fn(x, w, b, stride=s, padding=p)
                else:
                    xr, wr, br = (t.clone().requires_grad_() for t in (x, w, b))

                    def stmt(fn=fn, xr=xr, wr=wr, br=br):
                        y = fn(xr, wr, br, stride=s, padding=p)
                        y.backward(torch.ones_like(y))

                    stmts[impl] = stmt
            times = {"torch": [], "convpool": []}
            for _ in range(3):
                for impl in ("torch", "convpool"):
                    # Timer's num_threads defaults to 1 (it sets torch's thread count while timing).
                    timer = tb.Timer(stmt="f()", globals={"f": stmts[impl]},
                                     num_threads=torch.get_num_threads())
                    times[impl].append(timer.blocked_autorange(min_run_time=0.4).median)
            t, o = min(times["torch"]), min(times["convpool"])
            result[mode] = [t, o]
            result["R_" + mode] = round(t / o, 3)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
