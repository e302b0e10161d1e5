"""The `hostile` bench level (`python -m bench --hostile`): the server under soak and abuse."""
