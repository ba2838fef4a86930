"""The ``phitune`` command line: ``main`` (commands and parser) in :mod:`service.cli.main`,
printing helpers in :mod:`service.cli.format`, schedule plots in :mod:`service.cli.schedules`,
the local demo in :mod:`service.cli.demo`."""

from service.cli.main import main

__all__ = ["main"]
