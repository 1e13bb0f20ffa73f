"""`make demo` (`python -m demo`): train three digits recipes, ensemble them, serve the ensemble over gRPC and print
the accuracies. Not shipped in the wheel: it uses jobs/ and serving/ as a user would, from outside."""
