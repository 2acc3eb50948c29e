"""`python -m jaxmnist.summary`: see `jaxmnist.nets.summary`."""

if __name__ == "__main__":
    from jaxmnist import machine

    machine.prepare_command()
    from jaxmnist.nets.summary import main

    main()
