"""Process exit codes shared by the training container, the CLI and the Kubernetes pod failure policy.

The Kubernetes manifests key their `podFailurePolicy` on these numbers, so they are part of the public contract:
changing one is a breaking change.

Which error gets which code is decided in one place, `jobs.errors.exit_code_for`: a deliberate error
(`jobs.errors.JobctlError` and its subclasses, `Preempted`) carries its own code; anything else is unexpected and
exits FAILURE (1), which Kubernetes retries up to the Job's backoffLimit.

Changed by issue 13 (the one behaviour change of the restructure): the training entry point used to map every
`ValueError` to BAD_SPEC (2), so a stray ValueError from TensorFlow or Keras (a shape mismatch deep in a layer, a
transient I/O problem surfacing as one) failed a Kubernetes Job for good, without a retry. Now only errors jobctl
raises on purpose for bad input (`jobs.errors.BadInputError`: spec, arguments, data that cannot be used) exit 2;
a stray ValueError exits 1 and is retried.
"""

OK = 0
# Training ran and failed (an unexpected exception, a TensorFlow ValueError included; NaN loss, ...). Retrying may
# help; backoffLimit bounds it.
FAILURE = 1
# The spec, the command line or the data is wrong (jobs.errors.BadInputError). Retrying cannot help: the pod failure
# policy fails the Job at once.
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
