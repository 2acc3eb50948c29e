"""`python -m jaxmnist.export`: see `jaxmnist.use.export`."""

if __name__ == "__main__":
    from jaxmnist import machine

    machine.prepare_command()
    from jaxmnist.use.export import main

    main()
