"""`python -m jaxmnist.evaluate`: see `jaxmnist.use.evaluate`."""

if __name__ == "__main__":
    from jaxmnist import machine

    machine.prepare_command()
    from jaxmnist.use.evaluate import main

    main()
