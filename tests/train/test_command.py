"""`python -m jaxmnist.train`'s command line: bad values are one line and exit 2."""

import pytest

from cases import one_line_error
from jaxmnist.train import command as train


def cli_error(capsys, argv):
    return one_line_error(capsys, train.main, argv)


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["--arch", "lenet"], "valid: fc19k"),
        (["--arch", "gap8k", "--epochs", "0"], "--epochs"),
        (["--arch", "gap8k", "--batch-size", "-1"], "--batch-size"),
        (["--arch", "gap8k", "--lr", "0"], "--lr"),
        (["--arch", "gap7k", "--dropout", "1.5"], "--dropout"),
        (["--arch", "gap8k", "--train-examples", "100", "--batch-size", "128"], "larger than the 100"),
    ],
)
def test_cli_rejects_bad_values(capsys, tmp_path, mnist_dir, argv, needle):
    err = cli_error(capsys, argv + ["--workdir", str(tmp_path / "w"), "--data-dir", mnist_dir])
    assert needle in err
    assert not (tmp_path / "w" / "checkpoints").exists()


def test_cli_missing_data_dir(capsys, tmp_path):
    err = cli_error(capsys, ["--arch", "gap8k", "--data-dir", str(tmp_path / "nowhere"),
                             "--workdir", str(tmp_path / "w")])
    assert "nowhere" in err
