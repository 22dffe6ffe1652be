"""Running a matrix: the plan, the schedule, shards, progress."""
