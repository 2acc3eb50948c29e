"""`python -m jaxmnist.serve`: see `jaxmnist.use.serve`."""

if __name__ == "__main__":
    from jaxmnist import machine

    machine.prepare_command()
    from jaxmnist.use.serve import main

    main()
