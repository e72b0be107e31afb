"""The one error type a user sees: a clear line, exit code 2, never a traceback."""


class GenloomError(Exception):
    """Bad input from a user (a path, a config, a checkpoint, a prompt): shown as one line."""


def choices(valid) -> str:
    return ", ".join(sorted(str(v) for v in valid))
