"""The training job's parts: `loop` (one run, start to export), `optim` (optimizer, schedules, batch), `callbacks`
(the "monitor improved" callbacks), `resume` (journal, seed states, backups), `reports` (plots, summary).
`python -m jobs.train` (jobs/train.py) is the container's entry point."""
