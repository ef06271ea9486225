"""A cat moved is still a cat: find a patch of the cat photo, pasted elsewhere, with convolutions.

    python examples/find_the_cat.py [--out DIR]      (DIR defaults to examples/out/)

Both photos (scikit-image's `chelsea` and `astronaut`) are first halved in size by a stride-2
convolution with a 2x2 averaging kernel. The cat's eye (a 3-channel patch of the cat photo) is
pasted at three places of the astronaut photo: as it is, with less contrast and brighter, and with
noise added. Normalized
cross-correlation (NCC) scores every position of the photo against the patch, with conv2d alone:
torch's and convpool's conv2d are cross-correlations, which is exactly template matching, and a
convolution gives the same answer wherever the pattern is (translation equivariance). The peaks
of the score are found with max_pool2d as non-maximum suppression. Writes DIR/find_the_cat.png
(the scene with the found boxes, and the score as a heat map) and prints the positions.
"""
import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import skimage.data  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

import convpool  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "out"

EYE_ROWS, EYE_COLS = slice(42, 74), slice(69, 105)  # the cat's left eye, 32 x 36 (half size)

# Top-left corners (row, column) in the 256 x 256 astronaut photo, and what is done to the patch.
PASTES = [
    ((20, 150), "as it is"),
    ((150, 30), "contrast x0.5, brighter"),
    ((190, 200), "noise, std 0.05"),
]
THRESHOLD = 0.8  # NCC of the best unrelated window is far below (about 0.5 here)


def half_size_photo(array):
    """(H, W, 3) uint8 -> (3, H / 2, W / 2) float64 in [0, 1]: each 2x2 block averaged, a
    convolution with stride 2 (one 2x2 kernel per channel, groups=3)."""
    photo = torch.from_numpy(array).permute(2, 0, 1).double().unsqueeze(0) / 255
    box = torch.full((3, 1, 2, 2), 0.25, dtype=photo.dtype)
    return convpool.conv2d(photo, box, stride=2, groups=3)[0]


def make_scene(patch, seed=0):
    """The astronaut photo with `patch` pasted as PASTES say; returns the scene (3, H, W)."""
    scene = half_size_photo(skimage.data.astronaut())
    generator = torch.Generator().manual_seed(seed)
    _, height, width = patch.shape
    for (top, left), how in PASTES:
        if how == "as it is":
            pasted = patch
        elif how == "contrast x0.5, brighter":
            pasted = 0.5 * patch + 0.4
        else:
            pasted = (patch + 0.05 * torch.randn(patch.shape, generator=generator,
                                                 dtype=patch.dtype)).clamp(0, 1)
        scene[:, top:top + height, left:left + width] = pasted
    return scene


def normalized_cross_correlation(image, patch):
    """NCC of `patch` (C, h, w) with every (C, h, w) window of `image` (C, H, W), as an
    (H - h + 1, W - w + 1) map indexed by the window's top-left corner. 1 where the window is
    a * patch + b with a > 0 (brightness and contrast do not matter), about 0 for unrelated content.

    NCC = sum((window - mean(window)) * (patch - mean(patch))) / (|window - mean| * |patch - mean|).
    The numerator is one convolution with the zero-mean patch (its weights sum to 0, so the window's
    mean drops out); the window's norm comes from convolutions with a kernel of ones (local sums of
    the image and of its square).
    """
    count = patch.numel()
    zero_mean = patch - patch.mean()
    image = image.unsqueeze(0)
    numerator = convpool.conv2d(image, zero_mean.unsqueeze(0))
    ones = torch.ones_like(patch).unsqueeze(0)
    window_sum = convpool.conv2d(image, ones)
    window_sum_of_squares = convpool.conv2d(image * image, ones)
    # count * variance of each window; clamped at 0 against rounding in flat regions
    window_energy = (window_sum_of_squares - window_sum * window_sum / count).clamp_min(0)
    denominator = zero_mean.norm() * window_energy.sqrt()
    flat = denominator < 1e-9 * zero_mean.norm()  # a constant window matches nothing
    score = torch.where(flat, torch.zeros_like(numerator), numerator / denominator.clamp_min(1e-300))
    return score[0, 0]


def find_peaks(score, threshold, radius):
    """Positions (row, column) where `score` is above `threshold` and is the maximum of its
    (2 * radius + 1)^2 neighbourhood, best first: max_pool2d with stride 1 computes every
    neighbourhood's maximum (non-maximum suppression)."""
    neighbourhood_max = convpool.max_pool2d(score[None, None], 2 * radius + 1, stride=1,
                                            padding=radius)[0, 0]
    peaks = (score == neighbourhood_max) & (score > threshold)
    positions = [tuple(position) for position in peaks.nonzero().tolist()]
    return sorted(positions, key=lambda position: -score[position].item())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the PNG")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    patch = half_size_photo(skimage.data.chelsea())[:, EYE_ROWS, EYE_COLS]
    scene = make_scene(patch)
    score = normalized_cross_correlation(scene, patch)
    _, height, width = patch.shape
    found = find_peaks(score, THRESHOLD, radius=min(height, width) // 2)

    figure, (left_axis, right_axis) = plt.subplots(1, 2, figsize=(12, 6))
    left_axis.imshow(scene.permute(1, 2, 0).numpy())
    left_axis.set_title("the cat's eye pasted 3 times; boxes: where NCC found it")
    for row, column in found:
        left_axis.add_patch(Rectangle((column - 0.5, row - 0.5), width, height, fill=False,
                                      edgecolor="lime", linewidth=2))
    image = right_axis.imshow(score.numpy(), cmap="magma", vmin=-1, vmax=1)
    right_axis.plot([c for _, c in found], [r for r, _ in found], "c+", markersize=20,
                    markeredgewidth=2)
    right_axis.set_title("normalized cross-correlation (top-left corner of the window)")
    figure.colorbar(image, ax=right_axis, fraction=0.046)
    for axis in (left_axis, right_axis):
        axis.axis("off")
    figure.tight_layout()
    path = args.out / "find_the_cat.png"
    figure.savefig(path, dpi=80)
    plt.close(figure)

    print(f"patch: the cat's eye, {height}x{width}x3; scene {scene.shape[1]}x{scene.shape[2]}x3")
    for (top, left), how in PASTES:
        print(f"pasted at (row, column) = ({top}, {left}): {how}")
    for row, column in found:
        print(f"found at  (row, column) = ({row}, {column}): NCC {score[row, column].item():.4f}")
    best_elsewhere = score.clone()
    for row, column in found:
        best_elsewhere[max(row - height, 0):row + height, max(column - width, 0):column + width] = -1
    print(f"best NCC away from the pastes: {best_elsewhere.max().item():.4f}")
    print(f"wrote {path}")
    return {"scene": scene, "patch": patch, "score": score, "found": found,
            "pasted": [position for position, _ in PASTES], "png": path}


if __name__ == "__main__":
    main()
