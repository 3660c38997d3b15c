"""What the parse workers' forkserver imports (its preload), and nothing else imports.

multiprocessing starts every forkserver child by running the parent's `__main__` again (as
`__mp_main__`); in a Dagster step that is the `dagster` command, which would import all of
Dagster into every worker (and an unguarded script would run again there). The workers run
this package's functions only, so this server starts them without the parent's main. There is
one forkserver per process; in a step the parse pool starts it.
"""

from multiprocessing import spawn

import clevertap_assets.batch.parse_processes  # noqa: F401  (what the workers run)

_MAIN_KEYS = ("init_main_from_path", "init_main_from_name")
_prepare = spawn.prepare


def _prepare_without_main(data: dict) -> None:
    _prepare({key: value for key, value in data.items() if key not in _MAIN_KEYS})


spawn.prepare = _prepare_without_main
