"""Process exit codes shared by the training container, the CLI and the Kubernetes pod failure policy.

The Kubernetes manifests key their `podFailurePolicy` on these numbers, so they are part of the public contract:
changing one is a breaking change.
"""

OK = 0
# Training ran and failed (an exception in user code, NaN loss, ...). Retrying may help once; backoffLimit bounds it.
FAILURE = 1
# The spec or the command line is wrong. Retrying cannot help: the pod failure policy fails the Job at once.
BAD_SPEC = 2
# A dataset file is missing and cannot be downloaded. Retrying cannot help either.
DATA_UNAVAILABLE = 3
# SIGTERM (preemption, eviction, `kubectl delete pod`): state was saved, the job should be retried.
PREEMPTED = 75  # EX_TEMPFAIL from sysexits.h
# A peer worker never came up or went away: retry the whole group.
PEER_UNAVAILABLE = 76

NON_RETRIABLE = (BAD_SPEC, DATA_UNAVAILABLE)
RETRIABLE = (PREEMPTED, PEER_UNAVAILABLE)

DESCRIPTIONS = {
    OK: "success",
    FAILURE: "training failed",
    BAD_SPEC: "invalid spec or arguments (not retried)",
    DATA_UNAVAILABLE: "dataset files missing (not retried)",
    PREEMPTED: "terminated by SIGTERM after saving state (retried)",
    PEER_UNAVAILABLE: "a peer worker was unreachable (retried)",
}
