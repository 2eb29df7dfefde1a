"""`python -m kwsdeploy ...` (what `torchrun -m kwsdeploy train ...` runs on every rank): the CLI."""

import os
import sys

from kwsdeploy.cli.main import main


def run() -> None:
    """The CLI; a rank of torchrun that fails leaves at once with its status (2 for bad input), so that
    gloo's threads cannot abort it at interpreter exit ('terminate called without an active exception',
    -6) and turn the run's exit status into 1."""
    if "LOCAL_RANK" not in os.environ:
        main()
        return
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code:
            if not isinstance(exc.code, (int, type(None))):
                print(exc.code, file=sys.stderr)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        raise


if __name__ == "__main__":
    run()
