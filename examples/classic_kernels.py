"""The lecture's classic kernels, applied with convpool.conv2d to a photo of a cat.

    python examples/classic_kernels.py [--out DIR]      (DIR defaults to examples/out/)

Writes DIR/classic_kernels.png: the photo (scikit-image's `chelsea`, shipped with the package),
blurred by the 5x5 Gaussian, sharpened and edge-detected, side by side. Each color channel is
filtered on its own: one 1-channel filter per channel, groups=3.
"""
import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import skimage.data  # noqa: E402
import torch  # noqa: E402

import convpool  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "out"

KERNELS = {
    # Weights sum to 1: flat regions keep their brightness, detail is averaged away.
    "Gaussian blur 5x5": torch.tensor([[1, 4, 7, 4, 1],
                                       [4, 16, 26, 16, 4],
                                       [7, 26, 41, 26, 7],
                                       [4, 16, 26, 16, 4],
                                       [1, 4, 7, 4, 1]], dtype=torch.float64) / 273,
    # The pixel plus its difference from the 4 neighbours: sum 1, differences amplified.
    "sharpen": torch.tensor([[0, -1, 0],
                             [-1, 5, -1],
                             [0, -1, 0]], dtype=torch.float64),
    # Sum 0: flat regions go to 0, only changes (edges) remain.
    "edges": torch.tensor([[-1, -1, -1],
                           [-1, 8, -1],
                           [-1, -1, -1]], dtype=torch.float64),
}


def load_photo():
    """The cat as a (1, 3, H, W) float64 tensor with values in [0, 1]."""
    return torch.from_numpy(skimage.data.chelsea()).permute(2, 0, 1).unsqueeze(0).double() / 255


def channel_weight(kernel, channels):
    """conv2d's weight for filtering each of `channels` channels with `kernel` on its own:
    (channels, 1, k, k), used with groups=channels."""
    return kernel.expand(channels, 1, *kernel.shape).contiguous()


def apply_kernel(photo, kernel):
    """`photo` filtered channel by channel; padding="same" keeps its size (zeros outside)."""
    channels = photo.shape[1]
    weight = channel_weight(kernel.to(photo.dtype), channels)
    return convpool.conv2d(photo, weight, padding="same", groups=channels)


def to_image(tensor):
    """(1, 3, H, W) -> (H, W, 3) for matplotlib, clipped to the displayable [0, 1]."""
    return tensor[0].permute(1, 2, 0).clamp(0, 1).numpy()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the PNG")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    photo = load_photo()
    filtered = {name: apply_kernel(photo, kernel) for name, kernel in KERNELS.items()}

    panels = [("photo", photo)] + [
        # Edges are signed; their magnitude is what shows them.
        (name, result.abs() if name == "edges" else result) for name, result in filtered.items()]
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6))
    for axis, (name, image) in zip(axes, panels):
        axis.imshow(to_image(image))
        axis.set_title(name)
        axis.axis("off")
    figure.tight_layout()
    path = args.out / "classic_kernels.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)

    _, _, height, width = photo.shape
    print(f"photo {height}x{width}, 3 channels (groups=3, one filter per channel)")
    for name, result in filtered.items():
        print(f"{name:18s} kernel sum {KERNELS[name].sum().item():+.3f}  "
              f"output range [{result.min().item():+.3f}, {result.max().item():+.3f}]")
    print(f"wrote {path}")
    return {"photo": photo, "filtered": filtered, "png": path}


if __name__ == "__main__":
    main()
