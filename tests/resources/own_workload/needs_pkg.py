"""An entry whose module imports a package the workload's Python does not have."""

import tinyconv_helpers_not_installed  # noqa: F401


def build(settings):
    raise AssertionError("never reached")
