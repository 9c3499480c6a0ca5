"""User-facing errors: one line that names the file and the fix."""

from __future__ import annotations

# Rule logs mark the cause of a failure with this prefix; the report handler looks for it.
ERROR_PREFIX = "voice-train error:"


class VoiceTrainError(Exception):
    """An error the user can fix; its message is one line naming the file and the fix."""

    def __init__(self, path: object, problem: str, fix: str) -> None:
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.path}: {problem}; fix: {fix}")
