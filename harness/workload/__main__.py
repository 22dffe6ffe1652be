"""``python -m harness.workload --spec SPEC.json --out DIR [--data-dir DIR] [--code-dir DIR]``.

Everything that must happen before torch is imported happens here, with the standard library
alone: the SIGTERM and SIGINT handlers (a signal at any time still leaves a failed record),
PYTHONHASHSEED (re-executing this interpreter when it differs, since Python reads it only at
start-up), CUBLAS_WORKSPACE_CONFIG and the OpenMP/MKL thread counts. ``--code-dir`` (the
user's code, for a spec with an ``entry``) goes first on ``sys.path`` before anything imports
the entry; DDP ranks are started with the same arguments, so they find it too.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from pathlib import Path

from harness.contract import RECORD_FILE, RunSpec, environment_for
from harness.contract.record import RunError, failed_record, write_record
from harness.workload import signals

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
    parser.add_argument(
        "--code-dir",
        default=None,
        help="the folder of the user's code (workload.path): put first on sys.path",
    )
    return parser.parse_args(argv)


def add_code_dir(code_dir: str | None) -> Path | None:
    """Put the user's code folder first on ``sys.path`` (absolute: the workload may change
    directory); returns it, or None when not given."""
    if not code_dir:
        return None
    path = Path(code_dir).resolve()
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    return path


def numerics_env(spec: RunSpec, environ: dict[str, str]) -> dict[str, str]:
    """The environment this run must start torch with: ``environ`` with the spec's variables
    set, and those it leaves unset (``CUBLAS_WORKSPACE_CONFIG``) removed, whatever the image or
    the shell that started the run exported."""
    return environment_for(spec, environ)


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


def _last_resort_record(out: Path, spec: RunSpec | None, exc: BaseException) -> None:
    """What ended the run outside ``run``'s own handling (a signal before training starts, or
    a second one while the run's record is being built): a failed record all the same, from
    the main process (rank 0) only; never raises."""
    if os.environ.get("LOCAL_RANK", "0") != "0" or (out / RECORD_FILE).exists():
        return  # another rank's, or run() wrote its record before this came
    try:
        data = spec.to_dict() if spec is not None else {}
        ranks = spec.devices if spec is not None else 1
        record = failed_record(data, signals.classify(exc), ranks=ranks, written_by="workload")
        write_record(out, record)
    except BaseException:  # noqa: BLE001 - nothing may escape the last resort
        traceback.print_exc()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    signals.install()
    try:
        return _main(args, out)
    except BaseException as exc:  # noqa: BLE001 - a failed record, whatever ended the run
        if not isinstance(exc, signals.Terminated | KeyboardInterrupt | SystemExit):
            traceback.print_exc()  # the log says what happened (a full disk: the host reads it)
        try:
            spec = RunSpec.load(args.spec)
        except BaseException:  # noqa: BLE001
            spec = None
        _last_resort_record(out, spec, exc)
        return EXIT_FAILED


def _main(args: argparse.Namespace, out: Path) -> int:
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
    for name in set(os.environ) - set(env):
        del os.environ[name]  # unsetenv too: cuBLAS reads the C environment, not os.environ
    os.environ.update(env)

    _configure_logging()
    code_dir = add_code_dir(args.code_dir)
    if spec.entry is None:
        # the built-in logs no metric: Lightning without torchmetrics' seconds of imports
        from harness.workload.torchmetrics_standin import import_lightning_without_torchmetrics

        import_lightning_without_torchmetrics()
    from harness.workload.training import run

    return run(spec, out, args.data_dir, code_dir)


if __name__ == "__main__":
    sys.exit(main())
