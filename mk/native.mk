# The native scorer (cpp_ext/): build, sanitizer and valgrind checks. $(PY)/$(PIP) come from the main Makefile.
NATIVE_JOBS ?= 1
NATIVE_ASAN_DIR := cpp_ext/build/asan
NATIVE_VG_DIR := cpp_ext/build/valgrind
# The interpreter is not instrumented, so the ASan runtime is preloaded; libstdc++ too, or ASan cannot intercept
# __cxa_throw (python does not link libstdc++, and the interceptor is resolved at startup).
LIBASAN = $(shell $(CXX) -print-file-name=libasan.so) $(shell $(CXX) -print-file-name=libstdc++.so.6)
NATIVE_ASAN_ENV = \
	ASAN_OPTIONS=detect_leaks=0:protect_shadow_gap=0:halt_on_error=1:detect_odr_violation=0:suppressions=$(CURDIR)/cpp_ext/sanitizers/asan.supp:log_path=$(CURDIR)/$(NATIVE_ASAN_DIR)/logs/asan \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:suppressions=$(CURDIR)/cpp_ext/sanitizers/ubsan.supp:log_path=$(CURDIR)/$(NATIVE_ASAN_DIR)/logs/ubsan \
	PYTHONPATH=$(CURDIR)/$(NATIVE_ASAN_DIR)/pkg:$(CURDIR) LD_PRELOAD="$(LIBASAN)"

.PHONY: native native-asan native-valgrind

native: ## Build the C++ scorer (pybind11 + LibTorch) and pip-install it into the venv (NATIVE_JOBS=1 parallel jobs)
	CMAKE_BUILD_PARALLEL_LEVEL=$(NATIVE_JOBS) $(PIP) install --no-build-isolation ./cpp_ext
	@# LD_BIND_NOW: every LibTorch symbol the extension uses must resolve now, not at its first call.
	LD_BIND_NOW=1 $(PY) -c "import streamscore_native as s; print('streamscore_native', s.__version__, 'torch', s.built_with_torch, 'cuda', s.cuda_available())"

native-asan: ## Build the scorer with -fsanitize=address,undefined in cpp_ext/build/asan and run its tests: zero reports
	cmake -S cpp_ext -B $(NATIVE_ASAN_DIR) -DCMAKE_BUILD_TYPE=Debug -DSTREAMSCORE_SANITIZE=ON -DPython_EXECUTABLE=$(abspath $(PY))
	cmake --build $(NATIVE_ASAN_DIR) -j $(NATIVE_JOBS)
	rm -rf $(NATIVE_ASAN_DIR)/logs && mkdir -p $(NATIVE_ASAN_DIR)/logs
	$(NATIVE_ASAN_ENV) $(PY) -c "import streamscore_native as s; assert '/build/asan/' in s._core.__file__, s._core.__file__; print('testing', s._core.__file__)"
	$(NATIVE_ASAN_ENV) $(PY) -m pytest -q -p no:cacheprovider tests/unit/test_native_scorer.py
	@if ls $(NATIVE_ASAN_DIR)/logs/* >/dev/null 2>&1; then cat $(NATIVE_ASAN_DIR)/logs/*; echo "native-asan: sanitizer reports above"; exit 1; fi
	@echo "native-asan: 0 sanitizer reports"

native-valgrind: native ## Valgrind memcheck of a small scoring loop; fails on errors or "definitely lost" in our code
	mkdir -p $(NATIVE_VG_DIR)
	PYTHONMALLOC=malloc PYTHONPATH=$(CURDIR) valgrind --tool=memcheck --leak-check=full --show-leak-kinds=definite \
	  --num-callers=40 --suppressions=cpp_ext/sanitizers/valgrind.supp --xml=yes --xml-file=$(NATIVE_VG_DIR)/memcheck.xml \
	  --log-file=$(NATIVE_VG_DIR)/memcheck.log $(PY) tests/valgrind_loop.py $(NATIVE_VG_DIR)/model
	$(PY) cpp_ext/tools/valgrind_report.py $(NATIVE_VG_DIR)/memcheck.xml
