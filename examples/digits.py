"""A small CNN trained on scikit-learn's 8x8 digits twice: with convpool's layers and with torch.nn's.

    python examples/digits.py [--out DIR] [--epochs N]      (DIR defaults to examples/out/)

conv(1->16, 3x3) -> ReLU -> max-pool 2 -> conv(16->32, 3x3) -> ReLU -> max-pool 2 -> linear(128->10).
The convpool network is convpool.convert() of a copy of the torch.nn one, so both start from the
same weights, and both see the same batches in the same order. Writes DIR/digits.png (training
loss and test accuracy per epoch, both networks) and prints the accuracies.
"""
import argparse
import copy
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from torch import nn  # noqa: E402

import convpool  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "out"


def make_net():
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 16 x 4 x 4
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 32 x 2 x 2
        nn.Flatten(), nn.Linear(32 * 2 * 2, 10))


def load_data():
    """1797 digits as (N, 1, 8, 8) float32 in [0, 1]; a fixed, stratified 75/25 split."""
    digits = load_digits()
    images = torch.from_numpy(digits.images).float().unsqueeze(1) / 16
    labels = torch.from_numpy(digits.target).long()
    train_index, test_index = train_test_split(torch.arange(len(labels)).numpy(), test_size=0.25,
                                               random_state=0, stratify=labels.numpy())
    return (images[train_index], labels[train_index]), (images[test_index], labels[test_index])


def train(model, train_set, test_set, epochs, seed, batch_size=64):
    """Adam, mini-batches in a seeded order; per epoch: mean training loss, correct test answers."""
    images, labels = train_set
    order_generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    history = []
    for _ in range(epochs):
        model.train()
        total_loss = 0.0
        for batch in torch.randperm(len(labels), generator=order_generator).split(batch_size):
            loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(batch)
        model.eval()
        with torch.no_grad():
            correct = (model(test_set[0]).argmax(1) == test_set[1]).sum().item()
        history.append({"loss": total_loss / len(labels), "correct": correct})
    return history


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the PNG")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    train_set, test_set = load_data()
    torch.manual_seed(args.seed)
    stock = make_net()
    ours = convpool.convert(copy.deepcopy(stock))  # convpool.Conv2d / MaxPool2d, same weights
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # batches of 64 8x8 images: starting threads costs more than it saves
    try:
        histories = {
            "torch.nn": train(stock, train_set, test_set, args.epochs, args.seed),
            "convpool": train(ours, train_set, test_set, args.epochs, args.seed),
        }
    finally:
        torch.set_num_threads(threads)

    tested = len(test_set[1])
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = range(1, args.epochs + 1)
    for (name, history), style in zip(histories.items(), ("-", "--")):
        loss_axis.plot(epochs, [h["loss"] for h in history], style, label=name)
        accuracy_axis.plot(epochs, [100 * h["correct"] / tested for h in history], style,
                           label=name)
    loss_axis.set(xlabel="epoch", ylabel="training loss (cross-entropy)", yscale="log")
    accuracy_axis.set(xlabel="epoch", ylabel=f"test accuracy, % of {tested} digits")
    for axis in (loss_axis, accuracy_axis):
        axis.legend()
        axis.grid(alpha=0.3)
    figure.suptitle("8x8 digits: conv-pool-conv-pool-linear, convpool layers vs torch.nn layers")
    figure.tight_layout()
    path = args.out / "digits.png"
    figure.savefig(path, dpi=100)
    plt.close(figure)

    print(f"{len(train_set[1])} training digits, {tested} test digits, {args.epochs} epochs")
    for name, history in histories.items():
        final = history[-1]
        print(f"{name:9s} final training loss {final['loss']:.4f}, test accuracy "
              f"{100 * final['correct'] / tested:.2f}% ({final['correct']}/{tested})")
    print(f"wrote {path}")
    return {"histories": histories, "tested": tested, "png": path}


if __name__ == "__main__":
    main()
