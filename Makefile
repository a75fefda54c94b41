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

# The whole suite: the warnings-as-errors build with every test, then the unit and API tests again
# under AddressSanitizer + UndefinedBehaviorSanitizer.
test: build
	cd $(BUILD) && ctest --output-on-failure -j 2 $(CTEST_FLAGS)
	$(MAKE) test-asan

test-asan: deps
	cmake -S . -B build-asan -G Ninja -DFOXDEN_WERROR=ON -DFOXDEN_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j 2 -L 'unit|asan'

unit: build
	cd $(BUILD) && ctest --output-on-failure -L unit

integration: build
	cd $(BUILD) && ctest --output-on-failure -L integration

tidy: build
	git ls-files '*.cc' | xargs clang-tidy -p $(BUILD) --quiet

clean:
	rm -rf $(BUILD) build-asan
