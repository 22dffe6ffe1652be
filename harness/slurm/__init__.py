"""``harness submit slurm``: a matrix as a Slurm job array of shards and a merge job after it.

Slurm does the scheduling; the harness writes the batch scripts, submits them with ``sbatch``
(an argument list, never a shell line) and reads ``squeue``/``sacct`` back for
``harness status``. ``plan`` is pure (what to ask for), ``client`` talks to Slurm,
``submission`` is the folder's record, ``task`` is what a job runs on its node.
"""
