"""``python -m sgdsai_cli`` and the ``sgdsai`` command.

A SIGINT or SIGTERM that comes while the command line is being imported is recorded here (not a
``KeyboardInterrupt`` traceback from inside an import) and handed to ``cli.main``, which stops at
once with 130 or 143.
"""

import signal

_early: list[int] = []


def _record(signum, frame) -> None:
    _early.append(signum)


def main() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _record)
    from sgdsai_cli.cli import main as cli_main

    cli_main(early_signal=_early[0] if _early else None)


if __name__ == "__main__":
    main()
