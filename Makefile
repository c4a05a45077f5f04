# FerrOVN — `make test` and `make lab` do all set-up on a fresh Debian 12 machine (as root).
SHELL := /bin/bash
CARGO ?= cargo

# OVS 3.5 / OVN 25.03 come from a Debian 13 root filesystem built once and cached outside the
# repo (deploy/images/ovs-ovn/build.sh): its launchers go first on PATH, and the tests, the lab
# and the perf harness find schemas and ovs-vswitchd through FERROVN_OVS_DIR.
export FERROVN_CACHE ?= /var/cache/ferrovn
export FERROVN_OVS_DIR ?= $(FERROVN_CACHE)/ovs-ovn/current
export PATH := $(FERROVN_OVS_DIR)/bin:$(HOME)/.cargo/bin:$(PATH)
# the node agents the tests and the lab start decide the DPDK profile on this binary's presence
export FERROVN_DPDK_VSWITCHD ?= $(FERROVN_OVS_DIR)/bin/ovs-vswitchd-dpdk

# What stays on the Debian 12 host: DPDK 22.11 (the vhost helper links it; testpmd lives in
# dpdk-dev), headers for our bindings, debootstrap for the OVS/OVN rootfs, and network tools.
APT_PACKAGES := dpdk dpdk-dev libdpdk-dev libclang-dev clang pkg-config debootstrap \
	iproute2 iputils-ping iperf3 tcpdump ethtool curl wget netcat-openbsd python3 \
	containernetworking-plugins openssl libseccomp-dev busybox-static

.PHONY: deps ovs-ovn build test lint fmt clean lab lab-down kube-bins kube-e2e-bins kube-agnhost kube-node-bins kube-coredns ferrovn-image testpmd-image e2e-network kube-anp-conformance anp-conformance

## deps: install missing Debian packages (skips what is already installed)
deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "make deps: need root to apt-get install:$$missing" >&2; exit 1; fi; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	else echo "deps: all Debian packages present"; fi

## ovs-ovn: the Debian 13 rootfs with OVS 3.5 / OVN 25.03 (about 2 min the first time, then a no-op)
ovs-ovn: deps
	@bash deploy/images/ovs-ovn/build.sh >/dev/null

build: deps
	$(CARGO) build --workspace --all-targets

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## kube-bins: the real Kubernetes control plane the tests run (etcd, kube-apiserver, kube-controller-manager,
## kube-scheduler, kubectl, kubelet, kube-proxy), built from Go modules into a cache outside the repo
## (docs/kubernetes.md); a no-op once built. Cold: see docs/kubernetes.md for the time it takes.
kube-bins:
	bash deploy/kube/build.sh core

## kube-e2e-bins: the upstream network e2e test binary, agnhost and its image (same cache)
kube-e2e-bins: kube-bins deps
	bash deploy/kube/build.sh e2e

## kube-agnhost: agnhost alone and its image, what the kubelet tests run (make test needs this, not the
## 15-minute e2e binary; a no-op once built)
kube-agnhost: kube-bins deps
	bash deploy/kube/build.sh agnhost

## kube-node-bins: what runs under the kubelet: containerd, its runc shim, ctr, runc, crictl, and the
## pause and busybox images (OCI tars, no registry) the tests import (same cache, a no-op once built)
kube-node-bins: deps
	bash deploy/kube/build.sh node

## kube-coredns: CoreDNS (only the plugins the lab's Corefile uses) and its image, the lab's cluster DNS
## kube-system/kube-dns on 10.96.0.10 (deploy/kube/coredns.yaml; same cache, a no-op once built)
kube-coredns: deps
	bash deploy/kube/build.sh coredns

## ferrovn-image: FerrOVN's own image (controller, node agent, CNI plugin, vhost helper on the OVS/OVN
## rootfs) as an OCI tar in $(FERROVN_CACHE)/images/ferrovn.tar, named ferrovn.invalid/ferrovn:dev
## (docs/kubernetes.md); release binaries without debug info; a no-op while the binaries are unchanged
FERROVN_IMAGE_BINS := --bin ferrovn-controller --bin ferrovn-node --bin ferrovn-cni --bin ferrovn-vhost
ferrovn-image: deps ovs-ovn
	CARGO_PROFILE_RELEASE_DEBUG=false $(CARGO) build --release $(FERROVN_IMAGE_BINS)
	bash deploy/images/ferrovn/build.sh

## test: install what is needed, check formatting and lints, run every test (kube-agnhost: the agnhost
## image of deploy/tests/kube_pods.rs; kube-coredns: the lab test's cluster DNS)
test: lint ovs-ovn kube-bins kube-node-bins kube-agnhost kube-coredns
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean

# The lab (docs/lab.md): only the binaries it runs, release profile.
LAB_BINS := --bin ferrovn-lab --bin ferrovn-controller --bin ferrovn-node --bin ferrovn-cni --bin ferrovn-vhost
LAB_STATE ?= /run/ferrovn-lab

## lab: the whole fabric on this machine (root), on a real Kubernetes control plane (docs/lab.md):
## deps, build, up, status; last line `lab: R/T pod pairs reachable`
# No debug info for the lab's build: ~580 CPU-seconds from scratch instead of ~700-800 (2 cores).
## testpmd-image: the DPDK pods' image (Debian's dpdk-testpmd and its libraries, an OCI tar in
## $(FERROVN_CACHE)/testpmd; a no-op once built)
testpmd-image: deps
	@bash deploy/images/testpmd/build.sh

# The lab's nodes run containerd and a kubelet (kube-node-bins) with busybox, agnhost
# (kube-agnhost), testpmd, CoreDNS as cluster DNS (kube-coredns) and FerrOVN's own image (what
# `make ferrovn-image` does, from the release binaries just built: the controller and agents
# run as pods from it); `up` prints the
# wall time since make started.
lab: export FERROVN_LAB_T0 := $(shell date +%s)
lab: deps ovs-ovn kube-bins kube-node-bins kube-agnhost kube-coredns testpmd-image
	CARGO_PROFILE_RELEASE_DEBUG=false $(CARGO) build --release $(LAB_BINS)
	bash deploy/images/ferrovn/build.sh
	./target/release/ferrovn-lab --state-dir $(LAB_STATE) up

## e2e-network: the upstream network e2e suite (e2e-network.test) against the lab's cluster,
## bringing the lab up first if it is not; FOCUS and SKIP are ginkgo regexes (docs/conformance.md).
## Last line: `e2e-network passed=N failed=N skipped=N`
FOCUS ?= \[sig-network\] Networking Granular Checks: Pods
SKIP ?= \[Feature:SCTPConnectivity\]
e2e-network: kube-e2e-bins
	@if [ ! -f $(LAB_STATE)/lab.json ]; then $(MAKE) lab; fi
	bash deploy/kube/e2e-network.sh $(LAB_STATE) '$(FOCUS)' '$(SKIP)'

## kube-anp-conformance: the network-policy-api conformance suite (AdminNetworkPolicy and
## BaselineAdminNetworkPolicy, NETPOL_API_VERSION in deploy/kube/versions.env) as one test binary,
## its manifests rewritten for the lab (same cache, a no-op once built)
kube-anp-conformance:
	bash deploy/kube/build.sh anp-conformance

## anp-conformance: that suite against the lab's cluster, every feature (core and extended), bringing
## the lab up first if it is not; ANP_FOCUS is a Go regexp over the suite's test names
## (docs/conformance.md). Last line: `anp-conformance passed=N failed=N skipped=N sctp_probes_skipped=N
## first_probe_retried=N max_converge_ms=N` (probes retried for up to 10 s, as upstream's later suite)
ANP_FOCUS ?=
anp-conformance: kube-anp-conformance
	@if [ ! -f $(LAB_STATE)/lab.json ]; then $(MAKE) lab; fi
	bash deploy/kube/anp-conformance.sh $(LAB_STATE) '$(ANP_FOCUS)'

## lab-down: remove every process (the control plane's too), namespace, mount and hugepage setting the lab made
lab-down:
	@if [ -x ./target/release/ferrovn-lab ]; then ./target/release/ferrovn-lab --state-dir $(LAB_STATE) down; \
	else echo "lab-down: ./target/release/ferrovn-lab not built (nothing was started by make lab)"; fi
