"""`python -m jaxmnist.predict`: see `jaxmnist.use.predict`."""

if __name__ == "__main__":
    from jaxmnist import machine

    machine.prepare_command()
    from jaxmnist.use.predict import main

    main()
