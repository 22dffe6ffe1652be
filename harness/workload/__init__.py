"""The workload side: runs one repeat of one cell and writes its run record.

Started as ``python -m harness.workload --spec spec.json --out DIR``. Nothing is imported here, so
that the entry point can set the environment (PYTHONHASHSEED, CUBLAS_WORKSPACE_CONFIG, thread
counts) before torch is loaded.
"""
