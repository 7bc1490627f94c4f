# The local single-node Kubernetes (cluster/, see cluster/README.md): a test fixture, and a way to try
# k8s/ and ansible/ on one machine. Included by the Makefile. Needs root (namespaces, cgroups, a veth),
# Go, and the Debian packages it installs when missing. Builds are cached under .cache/cluster/.
VENV ?= .venv
BIN ?= $(VENV)/bin
CLUSTER := $(BIN)/python -m cluster

.PHONY: cluster cluster-down cluster-status cluster-verify cluster-test

cluster: $(VENV)/.installed ## build what is missing, start the local Kubernetes, print its kubeconfig
	$(CLUSTER) up

cluster-down: ## stop the local Kubernetes; fails if a process, mount, veth, cgroup or changed sysctl is left
	$(CLUSTER) down

cluster-status: ## each component of the local Kubernetes: process, health, detail
	$(CLUSTER) status

cluster-verify: cluster ## check a Deployment with a readiness probe, a Service by DNS name, a bound PVC
	$(CLUSTER) verify

# .ci/run runs it after `make test`. Needs root and about 10 GB of images.
cluster-test: $(VENV)/.installed deploy-setup images-tools ## end to end: images, cluster up, deploy twice, 5 cameras while pods are deleted, down
	$(BIN)/python -m cluster.e2e $(CLUSTER_TEST_ARGS)
