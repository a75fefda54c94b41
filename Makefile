# Foxden's two commands: `make dev` and `make test`. Everything else is a building block.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
CTEST_FLAGS ?=

.PHONY: deps build dev test test-asan unit integration clean tidy

deps:
	./scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) -G Ninja -DFOXDEN_WERROR=ON $(CMAKE_FLAGS) >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

# Single-machine Foxden: the control plane on https://127.0.0.1:6443, data in .foxden/.
dev: build
	./scripts/dev.sh

# The whole suite: the warnings-as-errors build with every test, then every test again with the
# binaries built under AddressSanitizer + UndefinedBehaviorSanitizer.
test: build
	cd $(BUILD) && ctest --output-on-failure -j 2 $(CTEST_FLAGS)
	$(MAKE) test-asan

test-asan: deps
	cmake -S . -B build-asan -G Ninja -DFOXDEN_WERROR=ON -DFOXDEN_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ctest --output-on-failure -j 2 $(CTEST_FLAGS)

unit: build
	cd $(BUILD) && ctest --output-on-failure -L unit

integration: build
	cd $(BUILD) && ctest --output-on-failure -L integration

tidy: build
	git ls-files '*.cc' | xargs clang-tidy -p $(BUILD) --quiet

clean:
	rm -rf $(BUILD) build-asan
