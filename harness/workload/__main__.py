"""``python -m harness.workload --spec SPEC.json --out DIR [--data-dir DIR]``.

Everything that must happen before torch is imported happens here, with the standard library
alone: PYTHONHASHSEED (re-executing this interpreter when it differs, since Python reads it only
at start-up), CUBLAS_WORKSPACE_CONFIG and the OpenMP/MKL thread counts.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path

from harness.contract import RunSpec, run_environment
from harness.contract.record import RunError, failed_record, write_record

#: Exit codes: 0 ok, 1 the run failed (run.json says why), 2 the spec could not be used.
EXIT_OK, EXIT_FAILED, EXIT_BAD_SPEC = 0, 1, 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m harness.workload", description=__doc__)
    parser.add_argument("--spec", required=True, help="spec.json written by the host")
    parser.add_argument("--out", required=True, help="folder for run.json, losses.npy, events")
    parser.add_argument(
        "--data-dir",
        default=None,
        help="MNIST folder (default: HARNESS_MNIST_DIR, else the verified download)",
    )
    return parser.parse_args(argv)


def numerics_env(spec: RunSpec, environ: dict[str, str]) -> dict[str, str]:
    """The environment this run must start torch with."""
    env = dict(environ)
    env.update(run_environment(spec))
    return env


def _bad_spec_record(out: Path, exc: Exception) -> None:
    """A failed run record for a spec that could not even be read (stdlib only)."""
    error = RunError(
        type=type(exc).__name__,
        message=str(exc),
        traceback="".join(traceback.format_exception(exc)),
    )
    write_record(out, failed_record({}, error, written_by="workload"))


def _configure_logging() -> None:
    progress = logging.getLogger("harness.workload.progress")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    progress.addHandler(handler)
    progress.setLevel(logging.INFO)
    progress.propagate = False
    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("harness").setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        spec = RunSpec.load(args.spec)
    except (OSError, ValueError, TypeError) as exc:
        _bad_spec_record(out, exc)
        print(f"cannot use spec {args.spec}: {exc}", file=sys.stderr)
        return EXIT_BAD_SPEC

    env = numerics_env(spec, dict(os.environ))
    if os.environ.get("PYTHONHASHSEED") != env["PYTHONHASHSEED"]:
        # Python reads PYTHONHASHSEED only at start-up: start again with it (argv list, no shell).
        argv_list = [sys.executable, "-m", "harness.workload", *sys.argv[1:]]
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, argv_list, env)
    os.environ.update(env)

    _configure_logging()
    from harness.workload.runner import run

    return run(spec, out, args.data_dir)


if __name__ == "__main__":
    sys.exit(main())
