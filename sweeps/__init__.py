"""The sweep controller: hyperparameter search over a job spec, run as local subprocesses or Kubernetes Jobs.

Sits above `k8s` and below `serving` (docs/ARCHITECTURE.md). The training image does not ship it: `jobs/` imports
nothing of it.

    spec.py         the sweep spec (load_sweep validates it)
    space.py        the search space: parameters as ranges and choices
    search.py       what runs next, from the runs recorded so far
    state.py        sweep.json and a finished run's outcome
    leaderboard.py  leaderboard.json: written, read (also by serving.ensemble), ranked
    plot.py         `jobctl results`' PNG
    scheduler.py    run_sweep: starts, watches and records runs on a backend
    backends/       local subprocesses, Kubernetes Jobs
"""
