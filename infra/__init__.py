"""The Pulumi program: EKS with spot GPU node groups and the autoscaled GPU embedding service.

`infra/__main__.py` is the composition root (what `pulumi up` runs); each concern is one module with
one ComponentResource. The offline render that runs it without a cloud lives in `rehearsal/`.
"""
