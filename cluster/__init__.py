"""A local single-node Kubernetes for this machine: a test fixture, and a way to try the cluster path
(k8s/, ansible/) on a laptop. `python -m cluster up|down|status|import-image`; see cluster/README.md."""
