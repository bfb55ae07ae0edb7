"""mabench: how much real speedup do concurrent LLM agents get, and where does it go?"""

from functools import cache


@cache
def _version() -> str:
    # importlib.metadata costs a rule script ~15 ms to import: only when the version is read
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mabench")
    except PackageNotFoundError:  # running from a source tree without installation
        return "0.0.0+unknown"


def __getattr__(name: str) -> str:
    if name == "__version__":
        return _version()
    raise AttributeError(f"module 'mabench' has no attribute {name!r}")
