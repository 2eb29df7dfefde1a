"""`python -m kwsdeploy ...` (what `torchrun -m kwsdeploy train ...` runs on every rank): the CLI."""

from kwsdeploy.cli.main import main

if __name__ == "__main__":
    main()
