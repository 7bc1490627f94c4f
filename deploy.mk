# Deployment tooling: images (docker/), Kubernetes manifests (k8s/), Ansible (ansible/).
# Included by the Makefile; `make deploy-setup` installs the check tools, `make deploy-check` runs the offline checks.
VENV ?= .venv
BIN ?= $(VENV)/bin
DEPLOY_TOOLS := .tools
KUSTOMIZE_VERSION := v5.8.1
# KEDA release whose CRDs give the vendored ScaledObject / TriggerAuthentication schemas in tests/deploy/schemas/.
KEDA_VERSION := v2.20.2
# prometheus-operator release whose CRDs give the vendored ServiceMonitor / PodMonitor schemas (components/monitoring).
PROMETHEUS_OPERATOR_VERSION := v0.85.0

.PHONY: deploy-setup deploy-check deploy-schemas

deploy-setup: $(VENV)/.deploy-installed $(DEPLOY_TOOLS)/.kustomize-$(KUSTOMIZE_VERSION) ## install ansible, ansible-lint, kubernetes-validate, hadolint (.venv) and kustomize (.tools/bin)

# The venv is the Makefile's (list deploy-setup after it in `setup`); standalone it must exist already.
$(VENV)/.deploy-installed: requirements-deploy.txt
	@test -x $(BIN)/pip || { echo "$(BIN)/pip is missing: create the venv first (make setup)" >&2; exit 1; }
	$(BIN)/pip install --quiet -r requirements-deploy.txt
	touch $@

$(DEPLOY_TOOLS)/.kustomize-$(KUSTOMIZE_VERSION):
	mkdir -p $(DEPLOY_TOOLS)/bin
	GOBIN=$(CURDIR)/$(DEPLOY_TOOLS)/bin go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)
	touch $@

deploy-check: deploy-setup ## render and validate k8s/, lint ansible/ and docker/ (offline, no cluster)
	$(BIN)/pytest -ra -m "not integration" tests/deploy

# Regenerate the vendored KEDA and prometheus-operator schemas from the CRDs in their Go modules; the tests
# read the committed files.
GO_MODULE_DIR = go mod download -json $(1) | $(BIN)/python -c 'import json, sys; print(json.load(sys.stdin)["Dir"])'

deploy-schemas: deploy-setup ## regenerate tests/deploy/schemas/ from KEDA's and prometheus-operator's CRDs
	keda=$$($(call GO_MODULE_DIR,github.com/kedacore/keda/v2@$(KEDA_VERSION))) && \
	operator=$$($(call GO_MODULE_DIR,github.com/prometheus-operator/prometheus-operator@$(PROMETHEUS_OPERATOR_VERSION))) && \
	$(BIN)/python tests/deploy/crd_to_schema.py --out tests/deploy/schemas \
	  $$keda/config/crd/bases/keda.sh_scaledobjects.yaml $$keda/config/crd/bases/keda.sh_triggerauthentications.yaml \
	  $$operator/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml \
	  $$operator/example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml
