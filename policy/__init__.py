"""The gpu-inference Pulumi policy pack (`pulumi preview --policy-pack policy`)."""
