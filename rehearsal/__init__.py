"""The deploy rehearsal: runs the Pulumi program offline and renders what `pulumi up` would create.

A tool that runs the program, not part of it (`infra/` holds only what deploys):
`rehearsal/mockengine.py` runs the program under Pulumi's mock engine and records every registered
resource, chart objects included; `rehearsal/charts.py` renders the pinned Helm charts with the real
Helm SDK as the Kubernetes provider would; `rehearsal/synth.py` writes the render that `make check`
gates (`python -m rehearsal.synth STACK`).
"""
