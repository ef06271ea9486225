"""The examples in examples/ run (as scripts and through their main()) and show what they claim:
the classic kernels equal F.conv2d's results, the pasted cat's eye is found exactly where it was
pasted, and the convpool network learns the digits like the torch.nn one."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest
import torch
import torch.nn.functional as F

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_png(path):
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = matplotlib.image.imread(path).shape
    assert height >= 200 and width >= 400


def total_variation(image):
    return ((image[..., 1:, :] - image[..., :-1, :]).abs().sum()
            + (image[..., :, 1:] - image[..., :, :-1]).abs().sum())


def test_classic_kernels(tmp_path):
    example = load_example("classic_kernels")
    result = example.main(["--out", str(tmp_path)])
    assert_png(tmp_path / "classic_kernels.png")
    photo = result["photo"]
    assert photo.shape == (1, 3, 300, 451) and photo.dtype == torch.float64
    for name, kernel in example.KERNELS.items():
        size = kernel.shape[-1]
        expected = F.conv2d(photo, kernel.expand(3, 1, size, size), padding=size // 2, groups=3)
        torch.testing.assert_close(result["filtered"][name], expected, rtol=1e-12, atol=1e-12)
    # what the kernels are for: blur removes detail, sharpening adds it, edges vanish where flat
    blurred, sharpened = result["filtered"]["Gaussian blur 5x5"], result["filtered"]["sharpen"]
    assert total_variation(blurred) < 0.7 * total_variation(photo)
    assert total_variation(sharpened) > 1.5 * total_variation(photo)
    flat = torch.full((1, 3, 10, 10), 0.3, dtype=torch.float64)
    edges = example.apply_kernel(flat, example.KERNELS["edges"])
    assert edges[..., 1:-1, 1:-1].abs().max() < 1e-12


def direct_ncc(image, patch, row, column):
    """NCC of the window at (row, column), from its definition."""
    _, height, width = patch.shape
    window = image[:, row:row + height, column:column + width].flatten()
    window, template = window - window.mean(), patch.flatten() - patch.mean()
    return (window @ template / (window.norm() * template.norm())).item()


def test_find_the_cat(tmp_path):
    example = load_example("find_the_cat")
    result = example.main(["--out", str(tmp_path)])
    assert_png(tmp_path / "find_the_cat.png")
    found, pasted, score = result["found"], result["pasted"], result["score"]
    assert sorted(found) == sorted(pasted) == sorted([(20, 150), (150, 30), (190, 200)])
    (plain, _), (contrast, _), (noisy, _) = example.PASTES
    assert score[plain].item() > 1 - 1e-9 and score[contrast].item() > 1 - 1e-9
    assert 0.9 < score[noisy].item() < 1 - 1e-3
    # the convolution formula is NCC's definition, at the pastes and anywhere else
    scene, patch = result["scene"], result["patch"]
    generator = torch.Generator().manual_seed(0)
    rows = torch.randint(0, score.shape[0], (20,), generator=generator).tolist()
    columns = torch.randint(0, score.shape[1], (20,), generator=generator).tolist()
    for row, column in list(zip(rows, columns)) + pasted:
        assert abs(score[row, column].item() - direct_ncc(scene, patch, row, column)) < 1e-9
    # nothing else comes near: the next best window scores far below the threshold
    _, height, width = patch.shape
    elsewhere = score.clone()
    for row, column in pasted:
        elsewhere[max(row - height, 0):row + height, max(column - width, 0):column + width] = -1
    assert elsewhere.max().item() < example.THRESHOLD - 0.1


def test_digits(tmp_path):
    example = load_example("digits")
    threads = torch.get_num_threads()
    result = example.main(["--out", str(tmp_path)])
    assert torch.get_num_threads() == threads
    assert_png(tmp_path / "digits.png")
    tested = result["tested"]
    stock, ours = result["histories"]["torch.nn"], result["histories"]["convpool"]
    assert tested == 450 and len(stock) == len(ours) == 15
    assert stock[-1]["correct"] >= 0.95 * tested and ours[-1]["correct"] >= 0.95 * tested
    # Same start, same batches: the same training up to float32 rounding (sums in another order),
    # which training amplifies. Over seeds 0-5 and CPU kernels avx512/avx2/generic the first five
    # epochs' losses agreed within 1e-6 and the accuracies within one digit, every epoch.
    for epoch in range(5):
        assert ours[epoch]["loss"] == pytest.approx(stock[epoch]["loss"], rel=1e-5)
    for mine, theirs in zip(ours, stock):
        assert abs(mine["correct"] - theirs["correct"]) <= 1


@pytest.mark.parametrize("name, extra_args, expected_lines", [
    ("classic_kernels", [],
     ["Gaussian blur 5x5  kernel sum +1.000  output range [+0.010, +0.821]"]),
    ("find_the_cat", [], ["found at  (row, column) = (20, 150): NCC 1.0000",
                          "found at  (row, column) = (150, 30): NCC 1.0000"]),
    ("digits", ["--epochs", "1"], ["1347 training digits, 450 test digits, 1 epochs"]),
])
def test_example_runs_as_a_script(tmp_path, name, extra_args, expected_lines):
    out = tmp_path / "pictures"  # created by the example
    result = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), "--out", str(out),
                             *extra_args], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path, env=dict(os.environ, MPLBACKEND="Agg"))
    assert result.returncode == 0, result.stderr
    for line in expected_lines:
        assert line in result.stdout.splitlines()
    assert f"wrote {out / (name + '.png')}" in result.stdout
    assert_png(out / f"{name}.png")
