"""PNG artefacts of a run: learning curves and the misclassified test digits."""

from __future__ import annotations

import numpy as np

from jaxmnist.files import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> None:
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))


def curves(history: list[dict], path: str, seeds=(0,)) -> None:
    plt = _pyplot()
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))

    def series(key):
        return np.array([np.atleast_1d(r[key]) for r in history])  # (epochs, K)

    for key, ax, style in (
        ("train_loss", ax_loss, "-"),
        ("test_loss", ax_loss, "--"),
        ("train_accuracy", ax_acc, "-"),
        ("val_accuracy", ax_acc, ":"),
        ("test_accuracy", ax_acc, "--"),
    ):
        if key not in history[0]:
            continue
        values = series(key)
        for i in range(values.shape[1]):
            label = key.replace("_", " ") + (f" (seed {seeds[i]})" if values.shape[1] > 1 else "")
            ax.plot(epochs, values[:, i], style, label=label)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_title("NLL loss")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_title("accuracy (%)")
    ax_acc.set_ylim(97.5, 100)
    ax_acc.axhline(99.4, color="grey", lw=0.8)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    _save(fig, path)
    plt.close(fig)


def misclassified(images, labels, predictions, path: str, limit: int = 64) -> None:
    plt = _pyplot()
    wrong = np.flatnonzero(np.asarray(predictions) != np.asarray(labels))[:limit]
    cols = 8
    rows = max(1, int(np.ceil(len(wrong) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.2, rows * 1.4))
    axes = np.atleast_1d(axes).reshape(-1)
    for ax in axes:
        ax.axis("off")
    for ax, i in zip(axes, wrong):
        ax.imshow(np.asarray(images[i])[..., 0], cmap="gray_r")
        ax.set_title(f"#{i} {labels[i]}->{predictions[i]}", fontsize=7)
    fig.suptitle(f"{int(np.sum(np.asarray(predictions) != np.asarray(labels)))} misclassified test digits "
                 f"(first {len(wrong)}; true->predicted)", fontsize=9)
    _save(fig, path)
    plt.close(fig)
