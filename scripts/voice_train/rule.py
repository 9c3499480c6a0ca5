"""Run a rule's body with its log wired up and user errors reported in one line."""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable, Iterable

from .errors import ERROR_PREFIX, VoiceTrainError
from .fsutil import remove_stale_temps

# Messages to this logger go to the rule's log and, one line each, to the console.
CONSOLE_LOGGER = "voice_train.console"


def run_rule(log_path: str, body: Callable[[], None], outputs: Iterable[str] = ()) -> None:
    """Call ``body`` with stderr and logging sent to ``log_path``; exit 1 on failure.

    First, temp files that an earlier, hard-killed run of this job left beside ``outputs``
    are removed (Snakemake removes the incomplete outputs themselves).

    A ``VoiceTrainError`` becomes one line, ``voice-train error: <file>: <problem>; fix:
    <fix>``, written to the log (where the report handler finds it) and to the console.
    Any other exception logs its traceback and the same kind of line.
    """
    console = sys.stderr
    with open(log_path, "w", buffering=1, encoding="utf-8") as log_file:
        sys.stderr = log_file
        logging.basicConfig(
            stream=log_file, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True
        )
        # Milestones (e.g. training's validation steps) also go to the console, one line each.
        to_console = logging.StreamHandler(console)
        to_console.setFormatter(logging.Formatter("voice-train: %(message)s"))
        console_logger = logging.getLogger(CONSOLE_LOGGER)
        console_logger.handlers = [to_console]
        try:
            for output in outputs:
                for leftover in remove_stale_temps(output):
                    logging.info("removed %s, left by an interrupted run", leftover)
            body()
        except VoiceTrainError as exc:
            line = f"{ERROR_PREFIX} {exc}"
        except Exception as exc:  # noqa: BLE001 - any crash must still end in one clear line
            traceback.print_exc(file=log_file)
            line = f"{ERROR_PREFIX} unexpected {type(exc).__name__}: {exc} (traceback in {log_path})"
        else:
            return
        finally:
            sys.stderr = console
        print(line, file=log_file)
    print(line, file=console)
    sys.exit(1)
