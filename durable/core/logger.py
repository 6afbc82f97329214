"""The replay-safe logger; kept apart because `logging` loads `threading`, which the rest of
the pure core must not."""

from __future__ import annotations

import logging
from collections.abc import Callable


class ReplaySafeLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger that stays silent while the orchestrator replays recorded steps."""

    def __init__(self, logger: logging.Logger, is_replaying: Callable[[], bool]) -> None:
        super().__init__(logger, {})
        self._is_replaying = is_replaying

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging's own name
        return not self._is_replaying() and self.logger.isEnabledFor(level)
