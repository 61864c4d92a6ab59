# Keel: `make demo` builds the image and boots a three-machine cluster; `make test` runs every test.
# Build caches live outside the checkout, so a fresh clone reuses them.
KEEL_CACHE_DIR ?= /var/cache/keel
export CARGO_TARGET_DIR ?= $(KEEL_CACHE_DIR)/target
export KEEL_CACHE_DIR

TARGET      := x86_64-unknown-linux-gnu
KEEL        := $(CARGO_TARGET_DIR)/release/keel
export KEEL_INIT := $(CARGO_TARGET_DIR)/$(TARGET)/release/keel-init
export KEEL_PROVISION := $(CARGO_TARGET_DIR)/$(TARGET)/release/keel-provision
FLEETD      := $(CARGO_TARGET_DIR)/$(TARGET)/release/fleetd
FLEETCTL    := $(CARGO_TARGET_DIR)/$(TARGET)/release/fleetctl
FLANNELD    := $(CARGO_TARGET_DIR)/$(TARGET)/release/flanneld
MK_DOCKER_OPTS := $(CARGO_TARGET_DIR)/$(TARGET)/release/mk-docker-opts
ETCDCTL     := $(CARGO_TARGET_DIR)/$(TARGET)/release/etcdctl
KEEL_INSTALL := $(CARGO_TARGET_DIR)/$(TARGET)/release/keel-install
AGENT_BINS  := --bin $(FLEETD) --bin $(FLEETCTL) --bin $(FLANNELD) --bin $(MK_DOCKER_OPTS) --bin $(ETCDCTL) --bin $(KEEL_INSTALL)
TEST_KEY    := $(KEEL_CACHE_DIR)/test-key/id_ed25519
export KEEL_TEST_KEY := $(TEST_KEY)
OUT         := out
export KEEL_OUT := $(CURDIR)/$(OUT)
# The same image with cloud-init instead of Keel's provisioner, for the comparison bench.
OUT_CLOUD_INIT := out-cloud-init
export KEEL_CLOUD_INIT_OUT := $(CURDIR)/$(OUT_CLOUD_INIT)

.PHONY: demo test test-steps bench image containers image-cloud-init deps tools lint clean clean-cache fuzz

# Three machines from the image form a cluster (etcd, fleet, flannel) and run the demo's
# multi-tier application (demo/units) until it answers on 127.0.0.1:$(DEMO_PORT); then the
# cluster stops again. `make demo DEMO_FAILOVER=1` also kills a machine under it;
# `make demo DEMO_KEEP=1` leaves it running (stop it with `keel cluster down`).
CLUSTER_DIR ?= /var/tmp/keel-cluster
DEMO_PORT ?= 8080
demo: image
	$(KEEL) cluster up 3 --image $(OUT)/keel.qcow2 --ssh-key $(TEST_KEY) \
		--config configs/cloud-config/cluster-node.yaml --dir $(CLUSTER_DIR) \
		--containers $(OUT)/containers --demo --demo-port $(DEMO_PORT) $(if $(DEMO_FAILOVER),--demo-failover)
	$(if $(DEMO_KEEP),@echo "left running: $(KEEL) cluster down --dir $(CLUSTER_DIR)",$(KEEL) cluster down --dir $(CLUSTER_DIR))

# Every step is timed, and the end prints each step's time and the total (scripts/timed): the
# budget is 60 minutes cold on 2 cores.
TIMED := scripts/timed
test:
	@$(TIMED) "make test (total)" $(MAKE) --no-print-directory test-steps

test-steps:
	@$(TIMED) "host packages" $(MAKE) --no-print-directory deps
	@$(TIMED) "build tools" $(MAKE) --no-print-directory tools
	@$(TIMED) "fmt and clippy" $(MAKE) --no-print-directory lint
	@$(TIMED) "cargo test --workspace" cargo test --workspace
	@$(TIMED) "image" $(MAKE) --no-print-directory image
	@$(TIMED) "VM tests" cargo test -p qemu-tests -- --ignored --test-threads=1
	@$(TIMED) "cluster CLI, reproducible" cargo test -p keel-image --test cluster_cli --test reproducible -- --ignored --test-threads=1

bench: image image-cloud-init
	cargo bench -p keel-image --bench build
	cargo bench -p qemu-tests --bench boot
	cargo bench -p qemu-tests --bench cloud_init
	cargo bench -p provisioner --bench parse_apply
	cargo bench -p flannel --bench flannel
	cargo bench -p qemu-tests --bench cluster
	cargo bench -p qemu-tests --bench live
	$(KEEL) container build configs/containers/iperf3.yaml --out $(OUT)/containers
	cargo bench -p qemu-tests --bench containers
	cargo bench -p qemu-tests --bench demo

deps:
	@scripts/host-deps.sh

# The builder, and keel-init as a static binary for the initramfs (--target keeps build
# scripts dynamic while the binary is static).
tools: deps
	cargo build --release -p keel-image --bin keel
	RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p provisioner --bin keel-init --bin keel-provision -p fleet --bin fleetd --bin fleetctl -p flannel --bin flanneld --bin mk-docker-opts -p keel-etcdctl --bin etcdctl -p keel-installer --bin keel-install --target $(TARGET)

$(TEST_KEY):
	mkdir -p $(dir $@)
	ssh-keygen -q -t ed25519 -N '' -C keel-test -f $@

# Container images from configs/containers (out/containers: OCI layouts and docker-load
# archives), which `keel vm` and `keel cluster up` serve from their registry. The tests and the
# demo need shell, http and the demo-* images (the demo's application); iperf3 is the container bench's (`make bench` builds it).
CONTAINER_SPECS ?= configs/containers/shell.yaml configs/containers/http.yaml \
	configs/containers/demo-db.yaml configs/containers/demo-app.yaml configs/containers/demo-lb.yaml
containers: tools
	$(KEEL) container build $(CONTAINER_SPECS) --out $(OUT)/containers

# The test key is injected at build time for now; the provisioner replaces this later.
image: tools $(TEST_KEY) containers
	$(KEEL) build configs/image.yaml --out $(OUT) --init $(KEEL_INIT) --provision $(KEEL_PROVISION) $(AGENT_BINS) --authorized-key $(TEST_KEY).pub

# The cloud-init comparison image (configs/cloud-init-image.yaml), with its own cached base tree.
image-cloud-init: tools $(TEST_KEY)
	$(KEEL) build configs/cloud-init-image.yaml --no-live --out $(OUT_CLOUD_INIT) --init $(KEEL_INIT) --provision $(KEEL_PROVISION) --authorized-key $(TEST_KEY).pub

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

clean:
	rm -rf $(OUT) $(OUT_CLOUD_INIT)

clean-cache:
	rm -rf $(KEEL_CACHE_DIR)/base $(KEEL_CACHE_DIR)/work

# --- fuzzing (issue 3) -----------------------------------------------------------------------
# `make fuzz FUZZ_SECONDS=60`: runs the user-data parser's cargo-fuzz target for a bounded time
# on the stable toolchain (no sanitizer, so no nightly needed). The crate is
# provisioner/fuzz (its own workspace); seeds are in provisioner/fuzz/corpus-seed. The build
# and the growing corpus stay under $(KEEL_CACHE_DIR); crashes land in
# provisioner/fuzz/artifacts/ (reproduce with `cargo fuzz run ... user_data <file>`).
FUZZ_SECONDS    ?= 60
FUZZ_TARGET_DIR ?= $(KEEL_CACHE_DIR)/fuzz-target
FUZZ_CORPUS     ?= $(KEEL_CACHE_DIR)/fuzz/corpus/user_data
FUZZ_TOOLCHAIN  ?= stable

fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	mkdir -p $(FUZZ_CORPUS)
	cd provisioner && RUSTUP_TOOLCHAIN=$(FUZZ_TOOLCHAIN) cargo fuzz run user_data \
		--sanitizer none --target-dir $(FUZZ_TARGET_DIR) \
		$(FUZZ_CORPUS) fuzz/corpus-seed/user_data -- -max_total_time=$(FUZZ_SECONDS)
# --- end fuzzing ------------------------------------------------------------------------------
