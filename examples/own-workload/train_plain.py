"""seqnet trained by a plain Lightning script, no matrix: the harness's recorder as one more
callback. Run it twice, then compare the two runs:

    python examples/own-workload/train_plain.py records/a
    python examples/own-workload/train_plain.py records/b
    harness report records
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

from harness.lightning import ReproRecorder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seqnet import SeqData, SeqNet  # noqa: E402 - beside this script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the folder for this run's record")
    parser.add_argument("--seed", type=int, default=None, help="seed everything first")
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.seed is not None:
        pl.seed_everything(args.seed)
    model, data = SeqNet(hidden=16, learning_rate=0.003), SeqData(4096, 12, 32, 1234)
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[ReproRecorder(args.out, name="seqnet", seed=args.seed)],
    )
    trainer.fit(model, datamodule=data)


if __name__ == "__main__":
    main()
