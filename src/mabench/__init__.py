"""mabench: how much real speedup do concurrent LLM agents get, and where does it go?"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mabench")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
