"""The results folder: its layout and manifest, the store of runs, the one reader of run folders,
the check of an output folder, safe paths, merging."""
