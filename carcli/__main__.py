"""`python -m carcli` (and `torchrun -m carcli`) runs the carseg command line."""

from carcli.cli.app import main

if __name__ == "__main__":
    main()
