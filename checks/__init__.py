"""The pre-deploy verification gate (`make check`).

Each module checks one kind of artefact and returns a `CheckResult`; `python -m checks` runs them
all on the offline synth of every stack, the Dockerfile, the alert rules, the dashboard and the
workflows, and fails with one line per problem that names the file or object, what is wrong and how
to fix it."""
