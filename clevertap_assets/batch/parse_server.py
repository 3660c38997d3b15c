"""What the parse workers' forkserver imports (its preload), and nothing else imports.

multiprocessing starts every forkserver child by running the parent's `__main__` again (as
`__mp_main__`), so that functions defined there can be unpickled. In a step of a Dagster
run, that main is the `dagster` command's script, which imports all of Dagster into every
parse worker, and a script without a `if __name__ == "__main__":` guard would run its whole
load again inside every worker.
The workers run functions of this package only, so this server starts them without the
parent's main. multiprocessing keeps one forkserver per process, and in a step the parse
pool is what starts it and forks from it.
"""

from multiprocessing import spawn

import clevertap_assets.batch.parse_processes  # noqa: F401  (what the workers run)

_MAIN_KEYS = ("init_main_from_path", "init_main_from_name")
_prepare = spawn.prepare


def _prepare_without_main(data: dict) -> None:
    _prepare({key: value for key, value in data.items() if key not in _MAIN_KEYS})


spawn.prepare = _prepare_without_main
