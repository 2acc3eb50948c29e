"""`python -m jaxmnist.train`: see `jaxmnist.train.command`."""

if __name__ == "__main__":
    from jaxmnist import machine

    machine.prepare_command()
    from jaxmnist.train import command

    command.main()
