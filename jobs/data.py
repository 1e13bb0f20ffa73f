"""`python -m jobs.data --spec FILE`: the name docs and init containers use for the data check (the training image
ships jobs/ alone, so this is its command). The loaders live in the `jobs.datasets` package."""

from jobs.datasets.describe import main

if __name__ == "__main__":
    raise SystemExit(main())
